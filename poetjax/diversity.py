"""Diversity, novelty and overlap of generated poems: distinct-n, self-BLEU, chrF/BLEU and an
index of the train split for the memorisation audit.

    diversity.distinct_n(poems, 2)              # unique / total Han bigrams
    diversity.self_bleu(poems)                  # mean BLEU of each poem against all the others
    diversity.chrf_bleu(continuations, real)    # {'chrf': ..., 'bleu': ...}, corpus level
    index = diversity.TrainIndex(train_texts)   # about a minute for the 20M-character train split
    index.copied_share(poems)                   # share of lines found verbatim in the train split
    index.longest_match('白日依山尽，黄河入海流。')  # Match(length=12, text=..., poem=<train index>)

Lines are the runs between ，。？！；、 and newlines, compared on their Han characters only, so a
quotation mark or a space does not hide a copy. BLEU and chrF are sacrebleu's, on a 0-100 scale;
BLEU tokenizes with sacrebleu's 'zh' (every Han character and punctuation mark is a word).
The longest match is taken on the text as written (punctuation included, whitespace dropped),
against a suffix array of the train texts (libdivsufsort): each query is a binary search per
position, a few milliseconds for a poem.
"""

import bisect
import collections
import re

import numpy as np
import pydivsufsort
import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.metrics.helpers import extract_all_word_ngrams

from poetjax.data import clean

_LINE_BREAK = re.compile('[，。？！；、\n]')
_SEP = '\x00'  # between train texts: below every character, and never in a query


def han(text):
  return ''.join(c for c in text if clean.is_han(c))


def lines(text):
  """The lines of a poem, as their Han characters; lines without any are dropped."""
  return [h for h in map(han, _LINE_BREAK.split(text)) if h]


def distinct_n(texts, n):
  """Unique n-grams / all n-grams of Han characters, n-grams within one text (punctuation
  removed first, so they may cross a line break); 0.0 when there are none."""
  grams = collections.Counter()
  for t in texts:
    h = han(t)
    grams.update(h[i:i + n] for i in range(len(h) - n + 1))
  total = sum(grams.values())
  return len(grams) / total if total else 0.0


def self_bleu(texts):
  """Mean sentence BLEU (0-100) of each text against all the others as references; high means
  the texts repeat each other.

  The same numbers as sacrebleu's sentence_score(text, all other texts) for each text, in
  O(n) instead of O(n^2): the n-grams of every text are counted once, and each text's clipping
  count is the largest count among the other texts (the top count, or the second when the text
  holds the top alone).
  """
  texts = list(texts)
  if len(texts) < 2:
    raise ValueError('self-BLEU needs at least two texts')
  bleu = BLEU(tokenize='zh', effective_order=True)
  order = bleu.max_ngram_order
  grams, lengths = zip(*(extract_all_word_ngrams(bleu._preprocess_segment(t), 1, order)  # pylint: disable=protected-access
                         for t in texts))
  top = collections.defaultdict(lambda: [0, 0, 0])  # n-gram -> [top count, holders, second]
  for counts in grams:
    for g, c in counts.items():
      t = top[g]
      if c > t[0]:
        t[:] = [c, 1, t[0]]
      elif c == t[0]:
        t[1] += 1
      elif c > t[2]:
        t[2] = c
  sorted_lengths = sorted(lengths)
  scores = []
  for counts, length in zip(grams, lengths):
    correct, total = [0] * order, [0] * order
    for g, c in counts.items():
      best, holders, second = top[g]
      others = second if c == best and holders == 1 else best
      total[len(g) - 1] += c
      correct[len(g) - 1] += min(c, others)
    refs = list(sorted_lengths)
    refs.remove(length)
    ref_len = min(refs, key=lambda r: (abs(r - length), r))  # sacrebleu's closest reference
    scores.append(BLEU.compute_bleu(correct, total, length, ref_len, smooth_method='exp',
                                    effective_order=True, max_ngram_order=order).score)
  return float(np.mean(scores))


def chrf_bleu(hypotheses, references):
  """Corpus chrF and BLEU (0-100) of continuations against the real ones, one each."""
  hypotheses, references = list(hypotheses), list(references)
  return {'chrf': sacrebleu.corpus_chrf(hypotheses, [references]).score,
          'bleu': sacrebleu.corpus_bleu(hypotheses, [references], tokenize='zh').score}


Match = collections.namedtuple('Match', 'length text poem')  # poem: index of a train text


class TrainIndex:
  """The train texts' lines (hashed) and a suffix array of their concatenation."""

  def __init__(self, texts):
    texts = [t.replace(_SEP, '') for t in texts]
    # Hashes, not strings: a sorted int64 per line instead of a set of a few million strings.
    self._lines = np.unique(np.fromiter(
        (hash(line) for t in texts for line in lines(t)), np.int64))
    self._starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
    self._text = _SEP.join(texts) + _SEP
    codes = np.frombuffer(self._text.encode('utf-32-le'), np.uint32)
    # Ranks keep code point order, so str comparisons agree with the array's order; two bytes
    # per character make the suffix sort twice as fast as four.
    chars, ranks = np.unique(codes, return_inverse=True)
    ranks = ranks.astype(np.uint16 if len(chars) <= 1 << 16 else np.uint32)
    del codes
    self._sa = memoryview(np.ascontiguousarray(pydivsufsort.divsufsort(ranks), np.int32))

  def copied(self, text):
    """The lines of `text` found verbatim as a line of a train text."""
    ls = lines(text)
    hashes = np.array([hash(line) for line in ls], np.int64)
    at = np.minimum(np.searchsorted(self._lines, hashes), len(self._lines) - 1)
    return [line for line, found in zip(ls, self._lines[at] == hashes) if found]

  def copied_share(self, texts):
    """Lines found verbatim in the train split / all lines, pooled over `texts`."""
    found = total = 0
    for t in texts:
      found += len(self.copied(t))
      total += len(lines(t))
    return found / total if total else 0.0

  def longest_match(self, text):
    """The longest substring of `text` (whitespace removed) found in a train text."""
    q = ''.join(text.split()).replace(_SEP, '')
    best, where = 0, -1
    for i in range(len(q)):
      if len(q) - i <= best:
        break
      length, pos = self._prefix_match(q[i:])
      if length > best:
        best, where = length, pos
    poem = int(np.searchsorted(self._starts, where, 'right')) - 1 if best else -1
    return Match(best, self._text[where:where + best] if best else '', poem)

  def _prefix_match(self, q):
    """The longest prefix of q in the train text and where it starts: the suffixes that share
    most with q sort next to where q would be inserted."""
    text, sa, m = self._text, self._sa, len(q)
    at = bisect.bisect_left(sa, q, key=lambda p: text[p:p + m])
    best, pos = 0, -1
    for j in (at - 1, at):
      if 0 <= j < len(sa):
        p = sa[j]
        n = _common_prefix(text[p:p + m], q)
        if n > best:
          best, pos = n, p
    return best, pos


def _common_prefix(a, b):
  n = 0
  for x, y in zip(a, b):
    if x != y:
      break
    n += 1
  return n
