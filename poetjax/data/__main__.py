"""Data commands.

  python -m poetjax.data stats [--corpus_dir DIR] [--script simplified]
  python -m poetjax.data build DATA_DIR [--corpus_dir DIR] [--script simplified]
"""

import argparse
import os
import sys

from poetjax.data import corpus as corpus_lib
from poetjax.data import stats
from poetjax.data import tokenizer as tokenizer_lib


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ['build']:
    from poetjax.data import tfds_builder  # imports TFDS only when building
    return tfds_builder.main(argv[1:])
  parser = argparse.ArgumentParser(prog='python -m poetjax.data', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('command', choices=['stats', 'build'])
  parser.add_argument('--corpus_dir', default=os.environ.get(corpus_lib.ENV_VAR))
  parser.add_argument('--script', default='simplified', choices=corpus_lib.SCRIPTS)
  args = parser.parse_args(argv)
  try:
    corpus = corpus_lib.read_corpus(args.corpus_dir, script=args.script)
  except corpus_lib.CorpusError as e:
    sys.exit(str(e))
  toks = []
  for kind in tokenizer_lib.KINDS:
    try:
      toks.append((kind, tokenizer_lib.load(kind)))
    except FileNotFoundError as e:
      print(e)
  print(stats.render(corpus, toks))


if __name__ == '__main__':
  main()
