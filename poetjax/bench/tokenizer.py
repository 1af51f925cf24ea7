"""Benchmark: training and using the char and subword tokenizers, against the 3-minute budget.

    CHINESE_POETRY_DIR=/path/to/chinese-poetry python -m poetjax.bench.tokenizer [--repeats 3]

Each model is trained from the train split into a scratch folder (median of the repeats), then
measured on the validation split: encode throughput in Han characters per second (one call per
poem, as the input pipeline does), tokens per Han character, and coverage (the share of Han
characters that are a piece of their own rather than bytes). The two models are each other's
peer. Prints a table, then one JSON line.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time

from poetjax.data import corpus as corpus_lib
from poetjax.data import tokenizer as tokenizer_lib

BUDGET_S = 180.0


def _trainer():
  # tokenizer/train_tokenizer.py is a script beside the models, not part of the package.
  path = tokenizer_lib.MODEL_DIR / 'train_tokenizer.py'
  spec = importlib.util.spec_from_file_location('train_tokenizer', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), result


def measure(kind, train_poems, texts, repeats, out_dir, trainer):
  train_s, path = _median_time(lambda: trainer.train(kind, train_poems, out_dir), repeats)
  tok = tokenizer_lib.load(str(path))
  tok.encode(texts[0])
  encode_s, ids = _median_time(lambda: [tok.encode(t) for t in texts], repeats)
  han = [ch for t in texts for ch in t if tok.count_han(ch)]
  own = sum(tok.sp.piece_to_id(ch) != tok.unk_id for ch in han)
  return {
      'train_s': round(train_s, 1), 'budget_ratio': round(train_s / BUDGET_S, 3),
      'vocab_size': tok.vocab_size, 'model_kib': round(path.stat().st_size / 1024),
      'encode_han_per_s': round(len(han) / encode_s),
      'tokens_per_han': round(sum(map(len, ids)) / len(han), 4),
      'coverage': round(own / len(han), 6),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--corpus_dir', default=os.environ.get(corpus_lib.ENV_VAR))
  parser.add_argument('--script', default='simplified', choices=corpus_lib.SCRIPTS)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args(argv)
  try:
    start = time.perf_counter()
    corpus = corpus_lib.read_corpus(args.corpus_dir, script=args.script)
    read_s = time.perf_counter() - start
  except corpus_lib.CorpusError as e:
    sys.exit(str(e))
  train_poems = corpus.split('train')
  texts = [p.text for p in corpus.split('validation')]
  trainer = _trainer()
  with tempfile.TemporaryDirectory() as out_dir:
    results = {kind: measure(kind, train_poems, texts, args.repeats, out_dir, trainer)
               for kind in tokenizer_lib.KINDS}
  rows = [('train (median)', 'train_s', '{} s'), ('train / 180 s budget', 'budget_ratio', '{}'),
          ('vocab size', 'vocab_size', '{}'), ('model file', 'model_kib', '{} KiB'),
          ('encode', 'encode_han_per_s', '{:,} Han/s'),
          ('tokens per Han char', 'tokens_per_han', '{}'),
          ('coverage (own piece)', 'coverage', '{:.4%}')]
  print(f'{"":<22}' + ''.join(f'{kind:>18}' for kind in results))
  for name, key, fmt in rows:
    print(f'{name:<22}' + ''.join(f'{fmt.format(r[key]):>18}' for r in results.values()))
  print(json.dumps({'bench': 'tokenizer', 'script': args.script, 'cpus': os.cpu_count(),
                    'repeats': args.repeats, 'read_s': round(read_s, 1),
                    'train_poems': len(train_poems), 'validation_poems': len(texts),
                    'budget_s': BUDGET_S, **results}, ensure_ascii=False))


if __name__ == '__main__':
  main()
