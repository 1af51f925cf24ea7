"""Distinct-n, self-BLEU, chrF/BLEU and the train index on inputs with known answers."""

import random

import pytest
from sacrebleu.metrics import BLEU

from poetjax import diversity

TRAIN = ['白日依山尽，黄河入海流。欲穷千里目，更上一层楼。', '床前明月光，疑是地上霜。',
         '春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。']


def test_lines():
  assert diversity.lines('白日依山尽，“黄河”入海流。\n 欲穷、千里目！') == [
      '白日依山尽', '黄河入海流', '欲穷', '千里目']


def test_distinct_n():
  texts = ['白日，白日。', '白云']
  # Unigrams 白 日 白 日 白 云: 3 of 6; bigrams 白日 日白 白日 白云: 3 of 4.
  assert diversity.distinct_n(texts, 1) == 0.5
  assert diversity.distinct_n(texts, 2) == 0.75
  assert diversity.distinct_n(['白'], 2) == 0.0


def test_self_bleu():
  assert diversity.self_bleu(['白日依山尽', '白日依山尽', '白日依山尽']) == pytest.approx(100)
  assert diversity.self_bleu(['白日依山尽', '黄河入海流']) == 0.0
  with pytest.raises(ValueError):
    diversity.self_bleu(['白日依山尽'])


def test_self_bleu_equals_sacrebleu_against_all_others():
  rng = random.Random(0)
  pool = '白日依山尽黄河入海流欲穷千里目更上一层楼'
  texts = [''.join(rng.choice(pool) for _ in range(rng.randint(0, 14))) + '。' for _ in range(40)]
  texts += texts[:3] + TRAIN  # repeats: a text holding an n-gram's top count with another
  bleu = BLEU(tokenize='zh', effective_order=True)
  slow = [bleu.sentence_score(t, texts[:i] + texts[i + 1:]).score for i, t in enumerate(texts)]
  assert diversity.self_bleu(texts) == pytest.approx(sum(slow) / len(slow), rel=1e-12)


def test_chrf_bleu():
  scores = diversity.chrf_bleu(TRAIN, TRAIN)
  assert scores['chrf'] == pytest.approx(100) and scores['bleu'] == pytest.approx(100)
  scores = diversity.chrf_bleu(['白日依山尽，黄河入海流。'], ['床前明月光，疑是地上霜。'])
  assert scores['bleu'] < 10 and scores['chrf'] < 10


def test_copied_lines():
  index = diversity.TrainIndex(TRAIN)
  # One planted line of two; the quotes do not hide it.
  poem = '“疑是地上霜”，江水向东流。'
  assert index.copied(poem) == ['疑是地上霜']
  assert index.copied_share([poem, '远上寒山石径斜。']) == pytest.approx(1 / 3)
  assert index.copied_share([]) == 0.0


def test_longest_match_planted():
  index = diversity.TrainIndex(TRAIN)
  match = index.longest_match('秋风起兮，处处闻啼鸟。夜来 风')
  assert match == diversity.Match(10, '，处处闻啼鸟。夜来风', 2)  # punctuation counts
  assert index.longest_match('') == diversity.Match(0, '', -1)
  assert index.longest_match('雪').length == 0


def test_longest_match_brute_force():
  rng = random.Random(0)
  alphabet = '山水风月花雪，。'
  train = [''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(50)]
  index = diversity.TrainIndex(train)
  for _ in range(30):
    query = ''.join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
    match = index.longest_match(query)
    assert match.text in query and match.text in train[match.poem]
    assert not any(query[i:i + match.length + 1] in t
                   for t in train for i in range(len(query) - match.length))
