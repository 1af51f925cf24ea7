"""The log-likelihood a model gives each held-out poem: what test loss, perplexity and bits per
Han character are computed from, overall or for any group of poems.

    scores = likelihood.score(model, tok, examples, seq_len=128)            # text alone
    scores = likelihood.score(model, tok, examples, seq_len=128, labels=True)  # given its labels
    likelihood.summary(scores)             # {'loss', 'perplexity', 'bits_per_char'}
    likelihood.summary(scores, where)      # the same over a boolean mask of the poems

A poem is read as [bos] (+ its control labels) + text + [eos], and only the text and eos targets
are scored, so the numbers compare with the n-gram baselines (poetjax/ngram.py), which predict
the same n + 1 symbols of each poem. Bits per character divide by the Han characters of the text
(punctuation is predicted but not counted), the same denominator for every model and tokenizer.

A poem longer than seq_len is read in windows of seq_len tokens, each half a window after the
last; a later window scores only the targets the previous ones did not, so every target is
scored once, with at least half a window of context. Windows of different poems are packed into
rows (segment ids keep them apart, as in training), so short poems cost no padding.
"""

import dataclasses
import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from poetjax import sampler
from poetjax.data import clean
from poetjax.data import control


@dataclasses.dataclass
class Scores:
  nats: np.ndarray    # float64 [poems]: -log P of the scored targets
  tokens: np.ndarray  # int [poems]: scored targets (text tokens and eos)
  han: np.ndarray     # int [poems]: Han characters of the text


def poem_ids(tokenizer, example, labels=False):
  """(ids, first scored target): [bos] + labels + text + [eos], and the index in ids of the
  first target that is text rather than a label."""
  controls = []
  if labels:
    controls = [tokenizer.control_id(f, example[f]) for f in control.FIELDS if example[f]]
    controls = [i for i in controls if i is not None]  # a rare author has no token
  ids = [tokenizer.bos_id, *controls, *tokenizer.encode(example['text']), tokenizer.eos_id]
  return ids, 1 + len(controls)


def windows(ids, first, seq_len):
  """(inputs, targets, weights) per window of one poem; weights mark the targets scored there."""
  out, done = [], first - 1  # targets[j] is ids[j + 1]; those below `first` are labels
  stride = max(1, seq_len // 2)
  start = 0
  while True:
    end = min(start + seq_len, len(ids) - 1)
    inputs, targets = ids[start:end], ids[start + 1:end + 1]
    weights = (np.arange(start, end) >= done).astype(np.float32)
    out.append((inputs, targets, weights))
    done = end
    if end == len(ids) - 1:
      return out
    start += stride


def pack(pieces, seq_len, pad_id):
  """(poem index, window) pairs -> rows of seq_len: dict of int32/float32 [rows, seq_len] and
  the poem of each token (-1 on padding). Next-fit: a window goes in the current row if it fits."""
  rows, row, used = [], [], 0
  for piece in pieces:
    size = len(piece[1][0])
    if row and used + size > seq_len:
      rows.append(row)
      row, used = [], 0
    row.append(piece)
    used += size
  if row:
    rows.append(row)
  n = len(rows)
  batch = {k: np.full((n, seq_len), pad_id, np.int32) for k in ('inputs', 'targets')}
  batch['positions'] = np.zeros((n, seq_len), np.int32)
  batch['segment_ids'] = np.zeros((n, seq_len), np.int32)
  batch['weights'] = np.zeros((n, seq_len), np.float32)
  poem = np.full((n, seq_len), -1, np.int64)
  for r, row in enumerate(rows):
    at = 0
    for segment, (index, (inputs, targets, weights)) in enumerate(row, 1):
      span = slice(at, at + len(inputs))
      batch['inputs'][r, span] = inputs
      batch['targets'][r, span] = targets
      batch['positions'][r, span] = np.arange(len(inputs))
      batch['segment_ids'][r, span] = segment
      batch['weights'][r, span] = weights
      poem[r, span] = index
      at += len(inputs)
  return batch, poem


@functools.partial(jax.jit, static_argnums=0)
def _nats(graphdef, state, batch):
  model = nnx.merge(graphdef, state)
  logits = model(batch['inputs'], batch['positions'], batch['segment_ids'])
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(logp, batch['targets'][..., None], -1)[..., 0] * batch['weights']


def score(model, tokenizer, examples, *, seq_len, labels=False, batch_rows=16, progress=None):
  """Scores of each example (dicts with 'text' and, for labels, the control fields).

  model: a Transformer or sampler.prepare's result. progress: called with the number of rows
  done after each batch (e.g. a progress bar's update).
  """
  graphdef, state = sampler.unpack(model)[:2]
  examples = list(examples)
  pieces, tokens = [], np.zeros(len(examples), np.int64)
  for index, example in enumerate(examples):
    ids, first = poem_ids(tokenizer, example, labels)
    tokens[index] = len(ids) - first
    pieces += [(index, w) for w in windows(ids, first, seq_len)]
  batch, poem = pack(pieces, seq_len, tokenizer.pad_id)
  nats = np.zeros(len(examples), np.float64)
  rows = len(poem)
  for start in range(0, rows, batch_rows):
    part = {k: _pad_rows(v[start:start + batch_rows], batch_rows) for k, v in batch.items()}
    out = np.asarray(_nats(graphdef, state, part), np.float64)[:min(batch_rows, rows - start)]
    owner = poem[start:start + batch_rows]
    nats += np.bincount(owner[owner >= 0], weights=out[owner >= 0], minlength=len(examples))
    if progress:
      progress(len(owner))
  han = np.asarray([clean.count_han(e['text']) for e in examples], np.int64)
  return Scores(nats, tokens, han)


def _pad_rows(x, rows):
  """Empty rows up to a full batch, so every batch has one shape (one compile)."""
  return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], x.dtype)]) if len(x) < rows else x


def summary(scores, where=None):
  """Loss (nats per scored token), perplexity and bits per Han character, over `where`."""
  where = np.ones(len(scores.nats), bool) if where is None else np.asarray(where)
  nats, tokens, han = (float(a[where].sum()) for a in (scores.nats, scores.tokens, scores.han))
  if not tokens or not han:
    return {'loss': None, 'perplexity': None, 'bits_per_char': None}
  return {'loss': nats / tokens, 'perplexity': float(np.exp(nats / tokens)),
          'bits_per_char': nats / np.log(2) / han}
