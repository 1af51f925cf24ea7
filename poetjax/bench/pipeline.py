"""Benchmark: tokens/s the Grain input pipeline delivers on one core, against 200,000 tokens/s.

    CHINESE_POETRY_DIR=/path/to/chinese-poetry python -m poetjax.bench.pipeline [--repeats 5]

Reads the train split of the prepared TFDS dataset in --data_dir (prepared there from the
corpus first if missing) with the char tokenizer, in this process (worker_count=0), shuffled,
with control dropout, as training reads it. Tokens are real target tokens (weights summed), so
packing padding does not count. The peers, measured in the same run, are the stages alone:
reading records at random, and reading plus tokenising, which bound what the pipeline can do.
Prints a table, then one JSON line.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import numpy as np

from poetjax.data import corpus as corpus_lib
from poetjax.data import pipeline
from poetjax.data import tfds_builder
from poetjax.data import tokenizer as tokenizer_lib

TARGET = 200_000  # tokens/s
DEFAULT_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / 'tfds_data'


def _median_rate(fn, repeats):
  """Median over repeats of units/s, where fn() returns the units it processed."""
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    units = fn()
    rates.append(units / (time.perf_counter() - start))
  return statistics.median(rates)


def measure(source, tok, config, batches, repeats, warmup):
  it = pipeline.make_iterator(source, tok, config, shard_index=0, shard_count=1)
  fill = []

  def run():
    tokens = 0
    for _ in range(batches):
      w = next(it)['weights']
      tokens += int(w.sum())
      fill.append(w.mean())
    return tokens

  for _ in range(warmup):
    next(it)
  tokens_per_s = _median_rate(run, repeats)

  # Records at random, as shuffling reads them, in blocks as the pipeline reads them.
  index = np.random.default_rng(0).integers(len(source), size=batches * config.batch_size)
  blocks = [index[i:i + config.read_block].tolist()
            for i in range(0, len(index), config.read_block)]
  read_per_s = _median_rate(lambda: sum(len(pipeline.read(source, b)) for b in blocks), repeats)
  encoded_per_s = _median_rate(lambda: sum(
      len(tok.encode(e['text'])) + 2 for b in blocks for e in pipeline.read(source, b)), repeats)
  return {
      'pipeline_tokens_per_s': round(tokens_per_s),
      'target_ratio': round(tokens_per_s / TARGET, 3),
      'fill': round(float(np.mean(fill)), 4),
      'read_records_per_s': round(read_per_s),
      'read_tokenise_tokens_per_s': round(encoded_per_s),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--corpus_dir', default=os.environ.get(corpus_lib.ENV_VAR))
  parser.add_argument('--data_dir', default=str(DEFAULT_DATA_DIR),
                      help='TFDS data dir; the dataset is prepared there if missing')
  parser.add_argument('--script', default='simplified', choices=corpus_lib.SCRIPTS)
  parser.add_argument('--tokenizer', default='char')
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--batches', type=int, default=100, help='batches per repeat')
  parser.add_argument('--warmup', type=int, default=10, help='batches before timing')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args(argv)
  try:
    tfds_builder.build(args.corpus_dir, args.data_dir, args.script)
  except corpus_lib.CorpusError as e:
    sys.exit(str(e))
  source = tfds_builder.data_source(args.data_dir, 'train', args.script)
  tok = tokenizer_lib.load(args.tokenizer)
  config = pipeline.default_config()
  config.seq_len, config.batch_size = args.seq_len, args.batch_size
  r = measure(source, tok, config, args.batches, args.repeats, args.warmup)
  rows = [('pipeline (median)', f'{r["pipeline_tokens_per_s"]:,} tokens/s'),
          (f'/ target {TARGET:,} tokens/s', f'{r["target_ratio"]}'),
          ('row fill (real tokens)', f'{r["fill"]:.2%}'),
          ('peer: read records', f'{r["read_records_per_s"]:,} records/s'),
          ('peer: read + tokenise', f'{r["read_tokenise_tokens_per_s"]:,} tokens/s')]
  for name, value in rows:
    print(f'{name:<28}{value:>22}')
  print(json.dumps({'bench': 'pipeline', 'cpus': os.cpu_count(), 'worker_count': 0,
                    'batched_reads': hasattr(source, '__getitems__'),
                    'poems': len(source), 'seq_len': args.seq_len,
                    'batch_size': args.batch_size, 'batches': args.batches,
                    'repeats': args.repeats, 'target_tokens_per_s': TARGET, **r},
                   ensure_ascii=False))


if __name__ == '__main__':
  main()
