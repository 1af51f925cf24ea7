"""The trained SentencePiece tokenizers, as the pipeline, sampler and evaluation use them.

    tok = tokenizer.load()            # tokenizer/char.model: one piece per Han character
    ids = [tok.bos_id, tok.control_id('form', '七言绝句'), *tok.encode('床前明月光，')]
    tok.decode(ids)                   # '<form:七言绝句>床前明月光，' (bos/eos/pad decode to '')

Unseen characters are spelled as UTF-8 byte pieces, so any text without spaces round-trips
(a space comes back as '▁', SentencePiece's whitespace mark; the corpus has none).
"""

import functools
import pathlib

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from poetjax.data import clean
from poetjax.data import control

KINDS = ('char', 'subword')
MODEL_DIR = pathlib.Path(__file__).resolve().parents[2] / 'tokenizer'


class Tokenizer:
  """A thin layer over sentencepiece.SentencePieceProcessor (kept as `.sp`)."""

  def __init__(self, path):
    self.path = pathlib.Path(path)
    self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
    self.pad_id = self.sp.pad_id()
    self.unk_id = self.sp.unk_id()
    self.bos_id = self.sp.bos_id()
    self.eos_id = self.sp.eos_id()
    self.vocab_size = self.sp.get_piece_size()

  def encode(self, text):
    return self.sp.encode(text)

  def decode(self, ids):
    return self.sp.decode([int(i) for i in ids])  # also takes numpy/jax arrays

  @functools.cached_property
  def label_ids(self):
    """Ids of the control labels and sentinels: user-defined pieces, which decode to their
    text (SentencePiece's own control pieces decode to nothing), so no poem may contain one."""
    proto = sentencepiece_model_pb2.ModelProto.FromString(self.sp.serialized_model_proto())
    user = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
    return frozenset(i for i, p in enumerate(proto.pieces) if p.type == user)

  @functools.cached_property
  def start_ids(self):
    """Ids a poem's text starts after: bos and the labels, not the sentinels (fill-in-the-middle
    marks may sit mid-line)."""
    sentinels = {self.sp.piece_to_id(p) for p in control.SENTINELS}
    return frozenset({self.bos_id, *self.label_ids} - sentinels)

  @functools.cached_property
  def punct_start_ids(self):
    """Ids of the pieces that begin with a punctuation mark: no poem's text starts with one."""
    return frozenset(i for i in range(self.vocab_size)
                     if self.decode([i])[:1] in clean.PUNCT)

  def control_id(self, field, value):
    """The id of the `<field:value>` piece, or None when that label has no piece."""
    i = self.sp.piece_to_id(control.piece(field, value))
    return None if i == self.unk_id else i

  # Han characters, the unit of bits-per-character, so tokenizers can be compared.
  count_han = staticmethod(clean.count_han)


def load(kind_or_path='char'):
  """The tokenizer `kind` ('char' or 'subword') from tokenizer/ in the repository, or a path."""
  if kind_or_path in KINDS:
    path = MODEL_DIR / f'{kind_or_path}.model'
    how = (f'Train it with `python tokenizer/train_tokenizer.py --corpus_dir DIR '
           f'--kind {kind_or_path}`.')
  else:
    path = pathlib.Path(kind_or_path)
    how = f'Give one of the kinds {", ".join(KINDS)} or the path of a SentencePiece .model file.'
  if not path.is_file():
    raise FileNotFoundError(f'Tokenizer model not found at {path}. {how}')
  return Tokenizer(path)
