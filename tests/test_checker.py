"""The checker on hand-made cases with known answers, then on a slice of the real corpus."""

import pytest

from poetjax import checker
from poetjax import templates
from poetjax.data import corpus

# 杜牧《赠猎骑》: every position of 七言绝句·仄起首句入韵 right, rhymes 新 身 人 in 十一真.
PERFECT = '已落双雕血尚新，鸣鞭走马又翻身。凭君莫射南来鴈，恐有家书寄远人。'


def test_perfect_qijue():
  r = checker.check(PERFECT)
  assert r.form == '七言绝句·仄起首句入韵'
  assert r.ok and r.format_ok and r.rhyme_ok
  assert r.tone_accuracy == 1.0 and r.alternation_246 == 1.0
  assert r.lines[0].marks == '仄仄平平仄仄平' and all(all(l.tone_ok_positions) for l in r.lines)
  assert checker.check(PERFECT, '七绝') == r  # the same best variant by name


def test_broken_rhyme():
  r = checker.check(PERFECT.replace('远人', '远山'))  # 山 is 平 but in 十五删
  assert r.format_ok and not r.rhyme_ok and not r.ok
  assert r.tone_accuracy == 1.0


def test_wrong_tone_at_position_2():
  r = checker.check(PERFECT.replace('已落', '已来'), '七言绝句·仄起首句入韵')  # 来: 平
  assert r.lines[0].tone_ok_positions[1] is False
  assert sum(map(all, (l.tone_ok_positions for l in r.lines))) == 3
  assert r.tone_accuracy == pytest.approx(27 / 28) and r.alternation_246 == 0.75
  assert r.format_ok and r.rhyme_ok and not r.ok


@pytest.mark.parametrize('text', [
    '已落双雕血尚新，鸣鞭走马又翻身。凭君莫射南来鴈，',      # three lines
    '已落双雕血尚新，鸣鞭走马翻身。凭君莫射南来鴈，恐有家书寄远人。',  # a line of 6
    '已落双雕血尚新。鸣鞭走马又翻身。凭君莫射南来鴈，恐有家书寄远人。',  # 。 for ，
])
def test_wrong_format(text):
  r = checker.check(text, '七绝')
  assert not r.format_ok and not r.ok


def test_famous_poem_and_marks():
  text = '白日依山尽，黄河入海流。欲穷千里目，更上一层楼。'
  r = checker.check(text)
  assert r.form == '五言绝句·仄起首句不入韵' and r.rhyme_ok and not r.ok  # 欲: 仄 at 1
  assert checker.check(text, loose=True).ok
  assert checker.format_marks(text).splitlines()[:2] == ['白日依山尽，', '仄仄平平仄']
  assert checker.check('白日依山尽\n黄河入海流\n欲穷千里目\n更上一层楼', loose=True).ok


def test_ci_by_tune():
  text = ('一曲新词酒一杯，去年天气旧亭台。夕阳西下几时回。'
          '无可奈何花落去，似曾相识燕归来。小园香径独徘徊。')  # 晏殊《浣溪沙》, editors' marks differ
  r = checker.check(text, '浣溪沙')
  assert r.form == '浣溪沙' and r.rhyme_ok and not r.format_ok  # 。 where 全宋词 has ，
  assert checker.check(text.replace('杯，', '杯。'), '浣溪沙').format_ok


def test_errors():
  with pytest.raises(ValueError, match='Not regulated verse'):
    checker.check('床前明月光，疑是地上霜。举头望明月。')
  with pytest.raises(ValueError, match='close'):
    checker.check(PERFECT, '七绝句')
  with pytest.raises(ValueError, match='Cannot check'):
    checker.check('abc')


@pytest.fixture(scope='module')
def poems(corpus_dir):
  return corpus.read_corpus(corpus_dir, workers=1).poems


def test_corpus_slice(poems):
  rows = checker.score_rows(poems, num_tunes=3)
  tang = rows['律绝 唐']
  assert tang['n'] >= 20 and tang['format'] > 0.95
  assert tang['rhyme'] > 0.85 and tang['alternation_246'] > 0.8 and tang['tone_accuracy'] > 0.75
  # Song ci as 全宋词 punctuates them (纳兰性德 and 花间集 mark their lines differently).
  ci = [p for p in poems if p.collection in ('宋词', '宋词三百首') and templates.canonical_tune(p.tune)]
  reports = [checker.check(p.text, templates.canonical_tune(p.tune)) for p in ci]
  formatted = [r for r in reports if r.format_ok]
  assert len(ci) > 100 and len(formatted) > 0.5 * len(reports)
  assert sum(r.rhyme_ok for r in formatted) > 0.85 * len(formatted)
  assert '律绝 唐' in checker.render(rows)
