"""The style classifier on two synthetic styles, and its handling of the author classes."""

import math
import random

import pytest

from poetjax import style


def _poems(chars, n, rng):
  return ['，'.join(''.join(rng.choice(chars) for _ in range(5)) for _ in range(4)) + '。'
          for _ in range(n)]


def _examples(rng, **by_label):
  return [{'text': t, 'genre': '诗', 'author': label, 'dynasty': label}
          for label, (chars, n) in by_label.items() for t in _poems(chars, n, rng)]


def test_separates_two_styles():
  rng = random.Random(0)
  train = _examples(rng, 唐=('山水云松月风', 60), 宋=('金玉珠宝月风', 60))
  clf = style.Classifier().fit(train, 'dynasty')
  assert clf.field == 'dynasty' and set(clf.classes) == {'唐', '宋'}
  assert clf.predict(['山水云松，云松山水。', '金玉珠宝，珠宝金玉。']) == ['唐', '宋']
  test = _examples(rng, 唐=('山水云松月风', 20), 宋=('金玉珠宝月风', 20))
  assert clf.accuracy([e['text'] for e in test], [e['dynasty'] for e in test]) == 1.0


def test_top_authors_only():
  rng = random.Random(1)
  train = _examples(rng, 甲=('山水云松', 30), 乙=('金玉珠宝', 20), 丙=('花鸟虫鱼', 10),
                    无名氏=('春夏秋冬', 40))
  clf = style.Classifier(top_authors=2, max_train=45).fit(train, 'author')
  assert set(clf.classes) == {'甲', '乙'}
  # 丙 is not a class: skipped, not counted wrong.
  texts = _poems('山水云松', 5, rng) + _poems('花鸟虫鱼', 5, rng)
  assert clf.accuracy(texts, ['甲'] * 5 + ['丙'] * 5) == 1.0
  assert math.isnan(clf.accuracy(texts, ['丙'] * 10))


def test_needs_two_classes():
  rng = random.Random(2)
  with pytest.raises(ValueError):
    style.Classifier().fit(_examples(rng, 唐=('山水', 10)), 'dynasty')
