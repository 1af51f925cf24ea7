"""The chinese_poetry TFDS builder on a slice of the real corpus: written, read back, reused."""

import shutil
import tempfile

import grain
import pytest

from poetjax.data import corpus as corpus_lib
from poetjax.data import poem
from poetjax.data import tfds_builder


@pytest.fixture(scope='module')
def data_dir(corpus_dir, tmp_path_factory):
  path = tmp_path_factory.mktemp('tfds')
  tfds_builder.build(corpus_dir, path)
  return path


def _read_back(data_dir, script):
  return {s: list(tfds_builder.data_source(data_dir, s, script)) for s in poem.SPLITS}


def _expected(corpus_dir, script):
  poems = corpus_lib.read_corpus(corpus_dir, script=script, workers=1).poems
  return {s: sorted((p.as_example() for p in poems if p.split == s), key=lambda d: d['id'])
          for s in poem.SPLITS}


def test_records_are_the_corpus_poems(corpus_dir, data_dir):
  records = _read_back(data_dir, 'simplified')
  assert all(records.values())
  assert {s: sorted(r, key=lambda d: d['id']) for s, r in records.items()} == _expected(
      corpus_dir, 'simplified')
  texts = [{r['text'] for r in rs} for rs in records.values()]
  assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_grain_reads_str(data_dir):
  ds = grain.MapDataset.source(tfds_builder.data_source(data_dir, 'validation')).shuffle(seed=0)
  example = ds[0]
  assert set(example) == set(poem.FEATURES)
  assert all(isinstance(v, str) for v in example.values())


def test_second_build_reuses_data(corpus_dir, data_dir, capsys):
  info = next(data_dir.rglob('dataset_info.json'))
  mtime = info.stat().st_mtime_ns
  tfds_builder.main([str(data_dir), f'--corpus_dir={corpus_dir}'])
  assert info.stat().st_mtime_ns == mtime
  assert 'train:' in capsys.readouterr().out
  assert tfds_builder.build(corpus_dir, data_dir).corpus is None  # nothing read


def test_traditional_from_zip(corpus_dir, tmp_path):
  # GitHub's archive layout: one top folder holding the corpus.
  archive = shutil.make_archive(tmp_path / 'master', 'zip', corpus_dir.parent, corpus_dir.name)
  tfds_builder.build(archive, tmp_path / 'data', script='traditional')
  records = _read_back(tmp_path / 'data', 'traditional')
  assert {s: sorted(r, key=lambda d: d['id']) for s, r in records.items()} == _expected(
      corpus_dir, 'traditional')
  assert any('詩' in r['text'] or '風' in r['text'] for r in records['train'])


def test_missing_corpus(tmp_path):
  missing = tmp_path / 'no-such-corpus'
  with pytest.raises(corpus_lib.CorpusError, match=f'{missing}.*git clone'):
    tfds_builder.build(missing, tmp_path / 'data')
  with pytest.raises(FileNotFoundError, match='python -m poetjax.data build'):
    tfds_builder.data_source(tmp_path / 'data', 'train')
  with pytest.raises(SystemExit, match=str(missing)):
    tfds_builder.main([str(tmp_path / 'data'), f'--corpus_dir={missing}'])


def test_batched_read_equals_single_reads(data_dir):
  source = tfds_builder.data_source(data_dir, 'train')
  indices = list(range(len(source)))[::-1]
  batched = source.__getitems__(indices)
  assert batched == [source[i] for i in indices]
  assert any(r['tune'] == '' for r in batched) and any(r['tune'] for r in batched)


def test_an_unprepared_builder_leaves_the_temp_dir_clean(tmp_path, monkeypatch):
  # TFDS's own lookup of a public copy left an empty tmp*tfds directory per builder.
  temp = tmp_path / 'temp'
  temp.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(temp))
  tfds_builder.ChinesePoetry(data_dir=str(tmp_path / 'data'), config='simplified')
  assert not list(temp.iterdir())
