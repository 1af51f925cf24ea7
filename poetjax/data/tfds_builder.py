"""The TFDS dataset `chinese_poetry`: the cleaned corpus as ArrayRecord train/validation/test.

    python -m poetjax.data build DATA_DIR --corpus_dir /path/to/chinese-poetry

writes DATA_DIR/chinese_poetry/{simplified,traditional}/VERSION/. The corpus is the manual dir
(a directory or zip archive of the upstream layout); without one, the upstream zip archive is
downloaded. Writing, reading and the ArrayRecord format need no TensorFlow: TFDS serializes
examples with its own copy of the tf.Example protos and reads them back with NumPy.
"""

import argparse
import os
import sys

import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from poetjax.data import corpus as corpus_lib
from poetjax.data import poem


class _LocalInfo(tfds.core.DatasetInfo):
  """DatasetInfo that never looks for this dataset in TFDS's public bucket (it is not there):
  TFDS's lookup, run whenever a builder is made before its data is prepared, asks the network
  and leaves an empty tmp*tfds directory behind in the system's temp dir each time."""

  def initialize_from_bucket(self):
    pass


class ChinesePoetry(tfds.core.GeneratorBasedBuilder):
  """Classical Chinese poems from the chinese-poetry corpus, one record per poem."""

  # Anything that changes the records (cleaning, de-duplication, splitting, features) must bump
  # the version: prepared data is reused as long as the version matches.
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='simplified', description='Simplified characters (OpenCC).'),
      tfds.core.BuilderConfig(name='traditional', description='Traditional characters (OpenCC).'),
  ]

  def __init__(self, *, file_format=tfds.core.FileFormat.ARRAY_RECORD, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    self._corpus_dir = None
    self.corpus = None  # the corpus.Corpus read by the last preparation, for its statistics

  def _info(self):
    return _LocalInfo(
        builder=self,
        description='Classical Chinese poems from the chinese-poetry corpus, cleaned and '
                    'de-duplicated; one record per poem.',
        features=tfds.features.FeaturesDict({k: tfds.features.Text() for k in poem.FEATURES}),
        homepage=corpus_lib.UPSTREAM_URL,
        license='MIT',
    )

  def download_and_prepare(self, *, download_config=None, **kwargs):
    # The download manager always has a manual dir (a default under the download dir) and only
    # lets a non-empty directory through; keep the user's own path, which may be a zip archive.
    self._corpus_dir = download_config and download_config.manual_dir
    super().download_and_prepare(download_config=download_config, **kwargs)

  def _split_generators(self, dl_manager):
    # The reader takes the archive as it is (GitHub's has a top folder), no extraction needed.
    root = self._corpus_dir or dl_manager.download(corpus_lib.ARCHIVE_URL)
    self.corpus = corpus_lib.read_corpus(root, script=self.builder_config.name)
    by_split = {s: [] for s in poem.SPLITS}
    for p in self.corpus.poems:
      by_split[p.split].append(p)
    return {s: self._generate_examples(poems) for s, poems in by_split.items()}

  def _generate_examples(self, poems):
    for p in poems:
      yield p.id, p.as_example()


def build(corpus_dir, data_dir, script='simplified'):
  """Prepares `chinese_poetry/<script>` in data_dir from the corpus; reuses it if prepared.

  corpus_dir: the upstream layout (a directory or its zip archive); None downloads it.
  """
  builder = ChinesePoetry(data_dir=os.fspath(data_dir), config=script)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=corpus_dir and os.fspath(corpus_dir)))
  return builder


class _TextSource:
  """A split of the prepared dataset: len() and [i] -> {feature: str}, as grain wants."""

  def __init__(self, source):
    self._source = source

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    # TFDS returns Text features as the stored UTF-8 bytes.
    return {k: v.decode() for k, v in self._source[index].items()}

  def __getitems__(self, indices):
    # One ArrayRecord read for the whole block, and the tf.Example protos parsed directly:
    # TFDS's own decoding through NumPy features is about 3x slower for plain text.
    records = self._source.data_source.__getitems__(list(indices))
    return [{k: f.bytes_list.value[0].decode()
             for k, f in tf_example_pb2.Example.FromString(r).features.feature.items()}
            for r in records]

  def __iter__(self):
    # Without it, iteration would probe past the end, where ArrayRecord raises ValueError.
    return (self[i] for i in range(len(self)))


def data_source(data_dir, split, script='simplified'):
  """A random-access source of one prepared split, e.g. for grain.MapDataset.source(...)."""
  builder = ChinesePoetry(data_dir=os.fspath(data_dir), config=script)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'No prepared dataset chinese_poetry/{script} in {data_dir}. Build it with '
        f'`python -m poetjax.data build {data_dir} --corpus_dir PATH --script {script}`.')
  if split not in builder.info.splits:
    raise FileNotFoundError(
        f'The prepared chinese_poetry/{script} in {data_dir} has no {split!r} split (it has '
        f'{", ".join(builder.info.splits)}); remove it and build it again with `python -m '
        f'poetjax.data build {data_dir} --corpus_dir PATH --script {script}`.')
  return _TextSource(builder.as_data_source(split=split))


def main(argv=None):
  parser = argparse.ArgumentParser(description='Build the chinese_poetry TFDS dataset.')
  parser.add_argument('data_dir')
  parser.add_argument('--corpus_dir', default=os.environ.get(corpus_lib.ENV_VAR),
                      help=f'upstream layout, a directory or zip (default ${corpus_lib.ENV_VAR}; '
                           'unset: download it)')
  parser.add_argument('--script', default='simplified', choices=corpus_lib.SCRIPTS)
  args = parser.parse_args(argv)
  try:
    builder = build(args.corpus_dir, args.data_dir, args.script)
  except corpus_lib.CorpusError as e:
    sys.exit(str(e))
  for name, info in builder.info.splits.items():
    print(f'{name}: {info.num_examples} poems')


if __name__ == '__main__':
  main()
