"""The Kneser-Ney character model: distributions sum to 1, hand-computed probabilities, and
agreement with a direct transcription of the interpolated Kneser-Ney formulas."""

import collections
import math
import random

import numpy as np
import pytest

from poetjax import ngram
from poetjax.data import tfds_builder

POEMS = ['白日依山尽，黄河入海流。', '欲穷千里目，更上一层楼。', '白日放歌须纵酒，青春作伴好还乡。',
         '春眠不觉晓，处处闻啼鸟。', '白日白日', '']


@pytest.mark.parametrize('order', [1, 2, 3, 4, 5, 6])
def test_distribution_sums_to_one(order):
  model = ngram.KneserNey(order).fit(POEMS)
  assert model.symbols[:2] == (ngram.EOS, ngram.UNK)
  assert len(set(model.symbols)) == len(model.symbols)
  for context in ['', '白', '白日', '白日依山', '欲穷千里目，更上一层', '雪', '白雪依山', '海流。']:
    p = model.distribution(context)
    assert p.shape == (len(model.symbols),)
    assert np.all(p > 0)
    assert abs(p.sum() - 1) < 1e-12


def test_unigram_by_hand():
  # 山 2, 水 1, </s> 2: D = n1 / (n1 + 2 n2) = 1/5; mass D * 3 types / 5 spread over 4 symbols.
  model = ngram.KneserNey(1).fit(['山水', '山'])
  assert model.discounts == [0.2]
  expected = {'山': 1.8 / 5 + 0.03, '水': 0.8 / 5 + 0.03, ngram.EOS: 1.8 / 5 + 0.03, '雪': 0.03}
  for char, p in expected.items():
    assert model.prob('水水', char) == pytest.approx(p)
  bits, han = model.bits(['山', '雪，'])
  assert han == 2
  p_comma = 0.03  # unknown too
  assert bits == pytest.approx(-math.log2(0.39) * 3 - math.log2(0.03) - math.log2(p_comma))


def test_bigram_by_hand():
  # Unigram counts are left extensions: 甲 {<s>, 乙} 2, 乙 {<s>, 甲} 2, </s> {乙} 1, so
  # D1 = 1 / (1 + 2 * 2). Bigrams keep raw counts: <s>甲 1, <s>乙 1, 乙甲 1, 甲乙 2, 乙</s> 2.
  model = ngram.KneserNey(2).fit(['甲乙', '乙甲乙'])
  d1, d2 = 0.2, 3 / 7
  assert model.discounts == pytest.approx([d1, d2])
  p1 = {'甲': 1.8 / 5 + d1 * 3 / 5 / 4, ngram.EOS: 0.8 / 5 + d1 * 3 / 5 / 4, '雪': d1 * 3 / 5 / 4}
  assert model.prob('', '甲') == pytest.approx((1 - d2) / 2 + d2 * 2 / 2 * p1['甲'])
  assert model.prob('甲', '甲') == pytest.approx(d2 * 1 / 2 * p1['甲'])
  assert model.prob('甲乙', ngram.EOS) == pytest.approx((2 - d2) / 3 + d2 * 2 / 3 * p1[ngram.EOS])
  assert model.prob('雪', '雪') == pytest.approx(p1['雪'])  # unseen context: the unigram


def _reference(texts, order):
  """P(w | context) straight from the formulas, with dictionaries of n-gram tuples."""
  seqs = [['<s>'] + list(t) + [ngram.EOS] for t in texts]
  raw = [collections.Counter() for _ in range(order + 2)]
  for s in seqs:
    for i in range(1, len(s)):
      for k in range(1, min(order + 1, i + 1) + 1):
        raw[k][tuple(s[i - k + 1:i + 1])] += 1
  counts = [None]
  for k in range(1, order + 1):
    left = collections.Counter(g[1:] for g in raw[k + 1])
    counts.append({g: c if k == order or g[0] == '<s>' else left[g] for g, c in raw[k].items()})
  discounts = [None]
  for k in range(1, order + 1):
    values = list(counts[k].values())
    n1, n2 = values.count(1), values.count(2)
    discounts.append(n1 / (n1 + 2 * n2) if n1 and n2 else 0.5)
  size = len({c for t in texts for c in t}) + 2

  def p(k, hist, w):
    if k == 0:
      return 1 / size
    following = {g: a for g, a in counts[k].items() if g[:-1] == hist}
    total = sum(following.values())
    lower = p(k - 1, hist[1:], w)
    if not total:
      return lower
    d = discounts[k]
    return max(following.get(hist + (w,), 0) - d, 0) / total + d * len(following) / total * lower

  def prob(context, w):
    hist = tuple((['<s>'] + list(context))[max(0, len(context) + 2 - order):]) if order > 1 else ()
    return p(len(hist) + 1, hist, w)
  return prob, discounts[1:]


@pytest.mark.parametrize('order', [1, 2, 3, 4, 5])
def test_matches_reference(order):
  rng = random.Random(order)
  alphabet = '山水风月花，。'
  train = [''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(40)]
  test = [''.join(rng.choice(alphabet + '雪') for _ in range(rng.randint(0, 10))) for _ in range(10)]
  model = ngram.KneserNey(order).fit(train)
  prob, discounts = _reference(train, order)
  assert model.discounts == pytest.approx(discounts)
  expected = 0.0
  for t in test:
    for i, w in enumerate(list(t) + [ngram.EOS]):
      q = prob(t[:i], w if w in alphabet or w == ngram.EOS else ngram.UNK)
      assert model.prob(t[:i], w) == pytest.approx(q, rel=1e-12)
      expected -= math.log2(q)
  bits, han = model.bits(test)
  assert bits == pytest.approx(expected, rel=1e-12)
  assert han == sum(c in '山水风月花雪' for t in test for c in t)
  per_text, per_han = model.bits(test, per_text=True)
  assert per_text == pytest.approx([model.bits([t])[0] for t in test], rel=1e-12)
  assert per_han.tolist() == [model.bits([t])[1] for t in test]


def test_unigram_bits_add_one():
  # Add-one over 山 2, 水 1, </s> 2 and an unknown slot: 9 in all.
  bits, han = ngram.unigram_bits(['山水', '山'], ['山', '雪'])
  assert han == 2
  assert bits == pytest.approx(2 * math.log2(3) + math.log2(9) + math.log2(3))
  per_text, per_han = ngram.unigram_bits(['山水', '山'], ['山', '雪'], per_text=True)
  assert per_text == pytest.approx([2 * math.log2(3), math.log2(9) + math.log2(3)])
  assert per_han.tolist() == [1, 1]


def test_higher_orders_fit_poetry_better():
  train = POEMS * 3
  test = ['白日依山尽，黄河入海流。']
  bits = [ngram.KneserNey(n).fit(train).bits(test)[0] for n in (1, 3, 5)]
  assert bits[0] > bits[1] > bits[2]
  assert ngram.unigram_bits(train, test)[0] > bits[1]


def test_real_split_beats_unigram(corpus_dir, tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  tfds_builder.build(corpus_dir, data_dir)
  train, test = ([r['text'] for r in tfds_builder.data_source(data_dir, split)]
                 for split in ('train', 'test'))
  bits, han = ngram.KneserNey(3).fit(train).bits(test)
  unigram, unigram_han = ngram.unigram_bits(train, test)
  assert han == unigram_han > 0
  assert bits / han < unigram / han
