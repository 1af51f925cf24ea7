"""Benchmark: the whole corpus to ArrayRecord, against the 5-minute budget.

    CHINESE_POETRY_DIR=/path/to/chinese-poetry python -m poetjax.bench.build

The peer is reading and cleaning alone (corpus.read_corpus); the build is the full TFDS
preparation into a fresh data dir (reading again, then writing). Writing is their difference.
Prints a table, then one JSON line.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import tensorflow_datasets as tfds

from poetjax.data import corpus as corpus_lib
from poetjax.data import tfds_builder

BUDGET_S = 300.0


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--corpus_dir', default=os.environ.get(corpus_lib.ENV_VAR))
  parser.add_argument('--script', default='simplified', choices=corpus_lib.SCRIPTS)
  args = parser.parse_args(argv)
  try:
    root = args.corpus_dir or corpus_lib.default_corpus_dir()
    start = time.perf_counter()
    corpus = corpus_lib.read_corpus(root, script=args.script)
    read_s = time.perf_counter() - start
  except corpus_lib.CorpusError as e:
    sys.exit(str(e))
  del corpus  # freed before the build reads its own copy
  tfds.disable_progress_bar()
  with tempfile.TemporaryDirectory() as data_dir:
    start = time.perf_counter()
    builder = tfds_builder.build(root, data_dir, args.script)
    build_s = time.perf_counter() - start
    records = {name: info.num_examples for name, info in builder.info.splits.items()}
    size_mb = sum(f.stat().st_size for f in pathlib.Path(data_dir).rglob('*.array_record*')) / 1e6
  result = {
      'bench': 'build', 'script': args.script, 'cpus': os.cpu_count(),
      'read_clean_s': round(read_s, 1), 'build_s': round(build_s, 1),
      'write_s': round(build_s - read_s, 1), 'budget_s': BUDGET_S,
      'budget_ratio': round(build_s / BUDGET_S, 3), 'records': records,
      'array_record_mb': round(size_mb, 1),
  }
  rows = [('read + clean (peer)', f'{read_s:.1f} s'), ('build: read + write', f'{build_s:.1f} s'),
          ('write (difference)', f'{build_s - read_s:.1f} s'),
          ('build / budget', f'{build_s / BUDGET_S:.2f} of {BUDGET_S:.0f} s'),
          ('ArrayRecord size', f'{size_mb:.1f} MB')]
  rows += [(f'records: {name}', str(n)) for name, n in records.items()]
  for name, value in rows:
    print(f'{name:<22}{value:>20}')
  print(json.dumps(result, ensure_ascii=False))


if __name__ == '__main__':
  main()
