"""Character n-gram language models: interpolated Kneser-Ney and the unigram baseline.

    model = ngram.KneserNey(order=5).fit(train_texts)
    bits, han = model.bits(test_texts)            # bits per Han character: bits / han
    model.prob('白日依山', '尽')                    # P(尽 | <s> 白日依山)
    p = model.distribution('白日依山尽')            # [len(model.symbols)], sums to 1
    model.prob('白日依山尽，黄河入海流。', ngram.EOS)
    bits, han = ngram.unigram_bits(train_texts, test_texts)

What is counted, so the numbers compare with the neural model's bits per Han character (the
nats of every target token of the poem text, end-of-sequence included, over its Han
characters; poetjax.metrics): each poem is one sequence `<s> c1 ... cn </s>`. Every character of
the text is predicted, punctuation included, then </s>; <s> is only a context, so a poem starts
from nothing but the fact that it starts. The sum of -log2 P over those n + 1 predictions is
divided by the Han characters of the text only. The neural model is conditioned on its control
labels (and its training loss also weights their prediction); these models see none, so compare
with the neural bits of the text and </s> targets only.

The smoothing is interpolated Kneser-Ney (Chen & Goodman 1998) with one discount per order,
D = n1 / (n1 + 2 n2) from the counts-of-counts of that order (0.5 if either is 0). The highest
order uses raw counts, lower orders the number of distinct characters seen before the n-gram,
except n-grams starting with <s>, which nothing can precede and which keep their raw counts (as
KenLM does). The unigram level is interpolated with a uniform distribution over the vocabulary,
</s> and one unknown slot, so no character, seen or not, gets probability zero.

Counts live in sorted NumPy arrays, one per order: on the 20M-character train split, order 5
fits in about 30 s (3 GB at the peak) and scores the test split in a second.
"""

import math

import numpy as np

from poetjax.data import clean

EOS = '</s>'
UNK = '<unk>'
_BOS_ID, _EOS_ID, _UNK_ID = 0, 1, 2  # then the characters, in code point order


class KneserNey:
  """An interpolated Kneser-Ney character model of `order` (1 is a smoothed unigram)."""

  def __init__(self, order=5):
    if order < 1:
      raise ValueError(f'order must be at least 1, got {order}')
    self.order = order
    self.symbols = None    # what distribution() ranges over: EOS, UNK, then the characters
    self.discounts = None  # D per order, from 1
    self._chars = None     # the code points of the characters, sorted

  def fit(self, texts):
    """Counts the n-grams of `texts` (an iterable of poem strings); returns self."""
    codes, bounds = _encode(texts)
    chars = np.unique(codes)
    self.symbols = (EOS, UNK) + tuple(map(chr, chars))
    self._chars = chars
    self._size = len(chars) + 3
    seq, last = _sequences(self._code_ids(codes), bounds)
    del codes

    s = self._size
    n = len(seq)
    self._keys = [None]  # per order k > 1: sorted prefix_id * size + symbol; n-gram id = index
    raw = [np.bincount(seq, minlength=s)]  # per order: occurrences by n-gram id
    left = []  # per order below the top: distinct symbols seen before each n-gram
    grams = seq  # at each position, the id of the n-gram of the current order starting there
    for k in range(2, self.order + 1):
      m = max(n - k + 1, 0)
      valid = np.flatnonzero(np.arange(m) + k - 1 <= last[:m])
      keys = grams[valid] * s + seq[valid + k - 1]
      uniq, where, inverse = np.unique(keys, return_index=True, return_inverse=True)
      # Each distinct k-gram is one left extension of the (k-1)-gram it ends in.
      left.append(np.bincount(grams[valid[where] + 1], minlength=len(raw[-1])))
      raw.append(np.bincount(inverse, minlength=len(uniq)))
      self._keys.append(uniq)
      grams = np.full(n, -1, np.int64)
      grams[valid] = inverse
    del seq, last, grams

    self._counts = []
    for k in range(1, self.order + 1):
      if k == self.order:
        a = raw[k - 1].astype(np.float64)
      else:
        a = left[k - 1].astype(np.float64)
        bos = self._bos_block(k)
        a[:bos] = raw[k - 1][:bos]
      if k == 1:
        a[_BOS_ID] = 0  # a context only, never predicted
      self._counts.append(a)

    self.discounts = []
    self._totals, self._types = [], []
    for k in range(1, self.order + 1):
      a = self._counts[k - 1]
      n1, n2 = np.count_nonzero(a == 1), np.count_nonzero(a == 2)
      self.discounts.append(float(n1 / (n1 + 2 * n2)) if n1 and n2 else 0.5)
      if k == 1:
        self._totals.append(np.array([a.sum()], np.float64))
        self._types.append(np.array([np.count_nonzero(a)], np.float64))
      else:
        prefix = self._keys[k - 1] // s
        nprefix = len(self._counts[k - 2])
        self._totals.append(np.bincount(prefix, weights=a, minlength=nprefix))
        self._types.append(np.bincount(prefix, minlength=nprefix).astype(np.float64))
    # An order longer than every training text has no n-grams; a zero entry keeps lookups simple.
    for arrays in (self._counts, self._totals, self._types):
      arrays[:] = [a if len(a) else np.zeros(1) for a in arrays]
    return self

  def _bos_block(self, k):
    """The k-gram ids below this start with <s>: ids are in lexicographic order of the n-gram."""
    bos = _BOS_ID + 1
    for j in range(2, k + 1):
      bos = int(np.searchsorted(self._keys[j - 1], bos * self._size))
    return bos

  def _lookup(self, grams, seq, last, k):
    """Ids of the k-grams starting at each position, from those of the (k-1)-grams; -1 where
    the n-gram was not seen in training or would cross the end of a poem."""
    n = len(seq)
    out = np.full(n, -1, np.int64)
    m = max(n - k + 1, 0)  # texts shorter than k in all have no k-gram
    ok = np.flatnonzero((grams[:m] >= 0) & (np.arange(m) + k - 1 <= last[:m]))
    keys = grams[ok] * self._size + seq[ok + k - 1]
    table = self._keys[k - 1]
    at = np.minimum(np.searchsorted(table, keys), len(table) - 1)
    found = table[at] == keys
    out[ok[found]] = at[found]
    return out

  def _code_ids(self, codes):
    """Symbol ids of code points; unseen characters are <unk>."""
    at = np.minimum(np.searchsorted(self._chars, codes), len(self._chars) - 1)
    return np.where(self._chars[at] == codes, at + 3, _UNK_ID).astype(np.int64)

  def _ids(self, text):
    return self._code_ids(_encode([text])[0]).tolist()

  def bits(self, texts, per_text=False):
    """(total bits, Han characters) of `texts`, each poem scored as <s> text </s>; per_text:
    (bits, Han characters) as arrays with one entry per text."""
    texts = list(texts)
    han = np.asarray([clean.count_han(t) for t in texts], np.int64)
    codes, bounds = _encode(texts)
    seq, last = _sequences(self._code_ids(codes), bounds)
    del codes
    n = len(seq)
    start = np.zeros(n, np.int64)  # the <s> of each position's poem
    heads = np.flatnonzero(seq == _BOS_ID)
    start[heads] = heads
    start = np.maximum.accumulate(start)
    targets = np.flatnonzero(seq != _BOS_ID)
    p = np.full(len(targets), 1.0 / (self._size - 1))
    grams = seq
    for k in range(1, self.order + 1):
      if k > 1:
        prefix_ids = grams
        grams = self._lookup(grams, seq, last, k)
      at = targets - k + 1
      inside = at >= start[targets]
      at = np.where(inside, at, 0)
      d = self.discounts[k - 1]
      if k == 1:
        ctx = np.zeros(len(targets), np.int64)
      else:
        ctx = np.where(inside, prefix_ids[at], -1)
      known = ctx >= 0
      total = np.where(known, self._totals[k - 1][np.maximum(ctx, 0)], 0.0)
      known &= total > 0
      g = np.where(known, grams[at], -1)
      count = np.where(g >= 0, self._counts[k - 1][np.maximum(g, 0)], 0.0)
      safe = np.where(known, total, 1.0)
      types = self._types[k - 1][np.maximum(ctx, 0)]
      mixed = np.maximum(count - d, 0) / safe + d * types / safe * p
      p = np.where(known, mixed, p)
    if per_text:
      poem = np.cumsum(seq == _BOS_ID) - 1
      return np.bincount(poem[targets], -np.log2(p), minlength=len(texts)), han
    return float(-np.log2(p).sum()), int(han.sum())

  def distribution(self, context=''):
    """P(next | <s> context) over self.symbols (</s>, <unk>, then the characters)."""
    hist = [_BOS_ID] + self._ids(context)
    p = np.full(self._size - 1, 1.0 / (self._size - 1))
    for k in range(1, self.order + 1):
      if k - 1 > len(hist):
        break
      if k == 1:
        ctx = 0
      else:
        ctx = self._find(hist[len(hist) - k + 1:])
        if ctx < 0 or self._totals[k - 1][ctx] <= 0:
          break  # longer contexts are unseen too
      d, total = self.discounts[k - 1], self._totals[k - 1][ctx]
      p = d * self._types[k - 1][ctx] / total * p
      if k == 1:
        nexts, counts = np.arange(self._size), self._counts[0]
      else:
        keys = self._keys[k - 1]
        lo, hi = np.searchsorted(keys, [ctx * self._size, (ctx + 1) * self._size])
        nexts, counts = keys[lo:hi] % self._size, self._counts[k - 1][lo:hi]
      keep = nexts != _BOS_ID
      np.add.at(p, nexts[keep] - 1, np.maximum(counts[keep] - d, 0) / total)
    return p

  def _find(self, gram):
    """The id of an n-gram given as symbol ids, or -1 if unseen."""
    g = gram[0]
    for k in range(2, len(gram) + 1):
      table = self._keys[k - 1]
      key = g * self._size + gram[k - 1]
      at = int(np.searchsorted(table, key))
      if at == len(table) or table[at] != key:
        return -1
      g = at
    return g

  def prob(self, context, char):
    """P(char | <s> context); char is one character or EOS."""
    i = _EOS_ID if char == EOS else self._ids(char)[0]
    return float(self.distribution(context)[i - 1])


def unigram_bits(train_texts, texts, per_text=False):
  """(total bits, Han characters) of `texts` under add-one smoothed character counts of
  `train_texts`, each poem scored as text </s> like KneserNey.bits; unseen characters share
  one unknown slot. per_text: arrays with one entry per text."""
  counts = {}
  for t in train_texts:
    for c in t:
      counts[c] = counts.get(c, 0) + 1
    counts[EOS] = counts.get(EOS, 0) + 1
  total = sum(counts.values()) + len(counts) + 1
  unk = math.log2(total)
  texts = list(texts)
  bits = np.asarray([sum(math.log2(total / (counts[c] + 1)) if c in counts else unk
                         for c in list(t) + [EOS]) for t in texts], np.float64)
  han = np.asarray([clean.count_han(t) for t in texts], np.int64)
  return (bits, han) if per_text else (float(bits.sum()), int(han.sum()))


def _encode(texts):
  """Code points of all texts joined, and the offset where each text ends."""
  texts = list(texts)
  joined = ''.join(texts)
  codes = np.frombuffer(joined.encode('utf-32-le'), np.uint32)
  bounds = np.cumsum([len(t) for t in texts])
  return codes, bounds


def _sequences(ids, bounds):
  """<s> text </s> for each text, concatenated; and for each position the index of its </s>."""
  lengths = np.diff(bounds, prepend=0) + 2
  n = int(lengths.sum())
  seq = np.empty(n, np.int64)
  ends = np.cumsum(lengths) - 1
  heads = ends - lengths + 1
  inner = np.ones(n, bool)
  inner[heads] = inner[ends] = False
  seq[heads], seq[ends] = _BOS_ID, _EOS_ID
  seq[inner] = ids
  last = np.repeat(ends, lengths)
  return seq, last
