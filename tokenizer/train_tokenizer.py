"""Trains the SentencePiece tokenizers on the train split of the corpus.

    python tokenizer/train_tokenizer.py --corpus_dir /path/to/chinese-poetry --kind all

writes tokenizer/char.{model,vocab} (every Han character of the train split is one piece, the
default) and tokenizer/subword.{model,vocab} (unigram, 16k pieces). Both keep the text verbatim
(identity normalisation, no dummy-prefix space), fall back to UTF-8 bytes for unseen characters,
use ids pad=0 unk=1 bos=2 eos=3 and reserve one piece per control label and sentinel.
The same corpus gives byte-identical files: the input order is the corpus order and no sampling
is random. On 2 cores: ~20 s to read the corpus, ~6 s for char, 40-80 s for subword.
"""

import io
import math
import pathlib
import sys

from absl import app
from absl import flags
import sentencepiece as spm

# Run as a script from anywhere: the repository root holds the poetjax package.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from poetjax.data import clean  # pylint: disable=g-import-not-at-top
from poetjax.data import control  # pylint: disable=g-import-not-at-top
from poetjax.data import corpus  # pylint: disable=g-import-not-at-top

KINDS = ('char', 'subword')
OUT_DIR = pathlib.Path(__file__).resolve().parent
SUBWORD_VOCAB_SIZE = 16000
# The unigram trainer's time grows with its input: every 3rd of the ~3.0M lines and a 200k seed
# vocabulary give tokens per character within 0.1% of all lines with the default 1M seed, in a
# sixth of the time (40 s against 240 s).
SUBWORD_MAX_LINES = 1_000_000

_COMMON = dict(
    normalization_rule_name='identity',  # full-width punctuation stays full-width (no NFKC)
    add_dummy_prefix=False,
    remove_extra_whitespaces=False,
    byte_fallback=True,
    pad_id=0, unk_id=1, bos_id=2, eos_id=3,
    max_sentence_length=1 << 16,  # bytes; longer lines would be skipped silently
    input_sentence_size=0, shuffle_input_sentence=False,  # all lines given, in corpus order
    num_threads=2,
    minloglevel=2,  # its warning about >1M lines is moot: all lines are meant to be read
)
_NUM_BYTES = 256
_NUM_SPECIALS = 4


def lines(poems):
  """Training sentences: the poems' lines in corpus order (pieces never cross a line end)."""
  return [line for p in poems for line in p.lines]


def controls(poems):
  return control.vocabulary(poems) + list(control.SENTINELS)


def options(kind, sentences, user_symbols):
  """SentencePieceTrainer keyword arguments for one kind of model."""
  if kind == 'char':
    # Every character seen is kept: the vocabulary is exactly the characters plus the
    # reserved pieces, so its size is known in advance and checked after training.
    num_chars = len(set(''.join(sentences)))
    return dict(_COMMON, model_type='char', character_coverage=1.0,
                vocab_size=num_chars + _NUM_SPECIALS + _NUM_BYTES + len(user_symbols),
                user_defined_symbols=user_symbols)
  if kind == 'subword':
    # 0.9995 is SentencePiece's advice for CJK: the rarest ~4.6k characters (0.05% of the text)
    # go to bytes, so the 16k pieces hold ~7k multi-character words.
    return dict(_COMMON, model_type='unigram', character_coverage=0.9995,
                vocab_size=SUBWORD_VOCAB_SIZE, seed_sentencepiece_size=200_000,
                user_defined_symbols=user_symbols)
  raise ValueError(f'Unknown tokenizer kind {kind!r}: use one of {", ".join(KINDS)}.')


def train(kind, poems, out_dir=OUT_DIR):
  """Trains `kind` on `poems` (the train split) and writes out_dir/<kind>.{model,vocab}."""
  sentences = lines(poems)
  if kind == 'subword':
    sentences = sentences[::max(1, math.ceil(len(sentences) / SUBWORD_MAX_LINES))]
  user_symbols = controls(poems)
  opts = options(kind, sentences, user_symbols)
  # Kept in memory until checked (a failure leaves the old files), and no scratch path ends
  # up in the model, so the same corpus gives the same bytes.
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, **opts)
  sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
  _check(kind, sp, poems, user_symbols)
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f'{kind}.model'
  path.write_bytes(model.getvalue())
  # The .vocab file SentencePiece would write: piece and score, for people to read.
  vocab = ''.join(f'{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n'
                  for i in range(sp.get_piece_size()))
  path.with_suffix('.vocab').write_text(vocab, encoding='utf-8')
  return path


def _check(kind, sp, poems, user_symbols):
  for s in user_symbols:
    if len(sp.encode(s)) != 1:
      raise RuntimeError(f'Control piece {s!r} does not encode to one id in the {kind} model.')
  if kind == 'char':
    han = {ch for p in poems for ch in p.text if clean.is_han(ch)}
    pieces = (sp.id_to_piece(i) for i in range(sp.get_piece_size()))
    han_pieces = {s for s in pieces if len(s) == 1 and clean.is_han(s)}
    if han_pieces != han:
      raise RuntimeError(f'The char model has {len(han_pieces)} Han pieces for {len(han)} '
                         'distinct Han characters in the train split.')


def main(argv):
  del argv
  args = flags.FLAGS
  try:
    poems = corpus.read_corpus(args.corpus_dir, script=args.script).split('train')
  except corpus.CorpusError as e:
    sys.exit(str(e))
  for kind in KINDS if args.kind == 'all' else (args.kind,):
    path = train(kind, poems, args.out_dir)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    print(f'{path}: {sp.get_piece_size()} pieces, {path.stat().st_size / 1024:.0f} KiB')


if __name__ == '__main__':
  # Defined here, not on import, so the benchmark and tests can import train().
  flags.DEFINE_string('corpus_dir', None,
                      f'chinese-poetry checkout or zip (default ${corpus.ENV_VAR}).')
  flags.DEFINE_enum('kind', 'all', KINDS + ('all',), 'Which tokenizer to train.')
  flags.DEFINE_enum('script', 'simplified', corpus.SCRIPTS, 'Script of the text.')
  flags.DEFINE_string('out_dir', str(OUT_DIR), 'Where the .model/.vocab files go.')
  app.run(main)
