"""Runs an experiment: python launch.py --config experiments/<name>.py[:arg] --workdir DIR.

Writes the resolved config into the workdir, prepares the data (TFDS ArrayRecord, reused when
already built), and runs the input pipeline. The model and training loop plug in here next.
"""

import json
import os
import pathlib
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from poetjax.data import corpus as corpus_lib
from poetjax.data import pipeline
from poetjax.data import tfds_builder
from poetjax.data import tokenizer as tokenizer_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the run writes its config and outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def prepare_data(cfg):
  """Builds (or reuses) the dataset and returns (train source, tokenizer)."""
  data_dir = pathlib.Path(cfg.data_dir).expanduser()
  corpus_dir = cfg.corpus_dir or os.environ.get(corpus_lib.ENV_VAR)
  builder = tfds_builder.build(corpus_dir, data_dir, cfg.script)
  for name, info in builder.info.splits.items():
    print(f'  {name:<10} {info.num_examples:>8,} poems')
  return tfds_builder.data_source(data_dir, 'train', cfg.script), tokenizer_lib.load(cfg.tokenizer)


def main(argv):
  del argv
  cfg = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'config.json').write_text(cfg.to_json_best_effort(indent=2, ensure_ascii=False))
  print(f'chinese_poetry/{cfg.data.script} in {cfg.data.data_dir}:')
  try:
    source, tok = prepare_data(cfg.data)
  except (corpus_lib.CorpusError, FileNotFoundError) as e:
    sys.exit(str(e))
  it = pipeline.make_iterator(source, tok, cfg.data.pipeline)
  next(it)  # warm-up
  start, tokens = time.perf_counter(), 0
  for _ in range(cfg.data.check_batches):
    tokens += int(next(it)['weights'].sum())
  rate = tokens / (time.perf_counter() - start)
  first = tok.decode(next(it)['inputs'][0])
  print(f'pipeline: {rate:,.0f} tokens/s; a packed row: {first[:60]}…')
  print(json.dumps({'pipeline_tokens_per_s': round(rate), 'workdir': str(workdir)}))


if __name__ == '__main__':
  app.run(main)
