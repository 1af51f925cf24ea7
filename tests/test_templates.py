"""Regulated-verse patterns, 一三五不论, the derived 词牌 and name lookup."""

import itertools
import json

import pytest

from poetjax import prosody as prosody_lib
from poetjax import templates
from poetjax.data import corpus

ALL_SHI = [templates.shi(f, s, r, loose, n)
           for f in templates.FORMS for s in templates.STARTS for r in (True, False)
           for loose in (False, True) for n in ((None, 10) if '排律' in f else (None,))]


def _tones(t):
  return [line.tones for line in t.lines]


def test_qijue_and_wujue_textbook_patterns():
  assert _tones(templates.shi('七言绝句', '平起', True)) == [
      'PPZZZPP', 'ZZPPZZP', 'ZZPPPZZ', 'PPZZZPP']
  assert _tones(templates.shi('七言绝句', '平起', False)) == [
      'PPZZPPZ', 'ZZPPZZP', 'ZZPPPZZ', 'PPZZZPP']
  assert _tones(templates.shi('七言绝句', '仄起', True)) == [
      'ZZPPZZP', 'PPZZZPP', 'PPZZPPZ', 'ZZPPZZP']
  assert _tones(templates.shi('七言绝句', '仄起', False)) == [
      'ZZPPPZZ', 'PPZZZPP', 'PPZZPPZ', 'ZZPPZZP']
  assert _tones(templates.shi('五言绝句', '仄起', False)) == ['ZZPPZ', 'PPZZP', 'PPPZZ', 'ZZZPP']
  assert _tones(templates.shi('五言绝句', '仄起', True)) == ['ZZZPP', 'PPZZP', 'PPPZZ', 'ZZZPP']
  assert _tones(templates.shi('五言绝句', '平起', False)) == ['PPPZZ', 'ZZZPP', 'ZZPPZ', 'PPZZP']
  assert _tones(templates.shi('五言绝句', '平起', True)) == ['PPZZP', 'ZZZPP', 'ZZPPZ', 'PPZZP']


def test_qilv_textbook_pattern():
  t = templates.shi('七律', '平起', True)
  assert t.name == '七言律诗·平起首句入韵' and t.rhyme_tone == prosody_lib.PING
  assert _tones(t) == ['PPZZZPP', 'ZZPPZZP', 'ZZPPPZZ', 'PPZZZPP',
                       'PPZZPPZ', 'ZZPPZZP', 'ZZPPPZZ', 'PPZZZPP']
  assert [line.rhyme for line in t.lines] == [True, True, False, True, False, True, False, True]
  assert ''.join(line.end for line in t.lines) == '，。' * 4


@pytest.mark.parametrize('t', [t for t in ALL_SHI if '*' not in t.lines[0].tones],
                         ids=lambda t: t.name)
def test_nian_and_dui(t):
  for i, (a, b) in enumerate(zip(t.lines, t.lines[1:])):
    even = lambda line: line.tones[1::2][:3]
    if i % 2 == 0:  # 对: a couplet's lines are opposite at 2, 4, 6
      assert all(x != y for x, y in zip(even(a), even(b))), (t.name, i)
    else:  # 粘: the next couplet starts like the last line ended
      assert a.tones[1] == b.tones[1], (t.name, i)
  for i, line in enumerate(t.lines):
    assert line.rhyme == (line.tones[-1] == 'P') == bool(line.rhyme_set)
    assert line.rhyme or i == 0 or i % 2 == 0
    assert all(line.tones[k] != line.tones[k + 2] for k in range(1, line.length - 2, 2))


@pytest.mark.parametrize('t', [t for t in ALL_SHI if '不论' in t.name], ids=lambda t: t.name)
def test_loose_never_allows_gu_ping_or_san_ping_wei(t):
  strict = templates.lookup(t.name.removesuffix('·一三五不论'))
  for line, base in zip(t.lines, strict.lines):
    free = [i for i, c in enumerate(line.tones) if c == '*']
    assert set(free) <= set(range(0, line.length - 2, 2))
    assert all(line.tones[i] == base.tones[i] for i in range(line.length) if i not in free)
    for pick in itertools.product('PZ', repeat=len(free)):
      tones = list(line.tones)
      for i, c in zip(free, pick):
        tones[i] = c
      text = ''.join({'P': '东', 'Z': '白'}[c] for c in tones)  # 东 平, 白 仄 (入声)
      assert not templates.gu_ping(text) and not templates.san_ping_wei(text), (t.name, tones)
  # 平平仄仄平 keeps its first 平 (else 孤平); 仄仄仄平平 its third 仄 (else 三平尾).
  assert _tones(templates.shi('五绝', '平起', True, loose=True))[:2] == ['PP*ZP', '*ZZPP']


def test_gu_ping_and_san_ping_wei_on_text():
  p = prosody_lib.load()
  assert [p.tone(ch) for ch in '东白山'] == [prosody_lib.PING, prosody_lib.ZE, prosody_lib.PING]
  assert templates.gu_ping('白东白国人', p)       # 仄平仄仄平
  assert not templates.gu_ping('东风白国人', p)   # 平平仄仄平
  assert not templates.gu_ping('白国石东人', p)   # 仄仄仄平平
  assert templates.san_ping_wei('白国东风人', p)  # 仄仄平平平
  assert not templates.san_ping_wei('白国看风人', p)  # 看 may be 仄: not certain


def test_famous_poem_fits_its_variant():
  p = prosody_lib.load()
  t = templates.shi('五言绝句', '仄起', False, loose=True)
  text = '白日依山尽，黄河入海流。欲穷千里目，更上一层楼。'
  for (chars, end), line in zip(templates.segments(text), t.lines):
    assert len(chars) == line.length and end == line.end
    for ch, want in zip(chars, line.tones):
      assert want == '*' or p.tone(ch) & {'P': prosody_lib.PING, 'Z': prosody_lib.ZE}[want]
  assert {p.ping_groups(c[-1])[0] for c, _ in templates.segments(text)[1::2]} == {'十一尤'}


def test_ci_tunes_json():
  data = json.loads(templates.CI_TUNES.read_text(encoding='utf-8'))
  assert len(data['tunes']) >= 100
  for tune in list(data['tunes'])[:100]:
    for i in range(len(data['tunes'][tune]['variants'])):
      t = templates.ci(tune, i)
      assert t.lines[-1].rhyme_set and all(line.end in '，。、' for line in t.lines), t.name
  huanxisha = templates.ci('浣溪沙')
  assert [line.length for line in huanxisha.lines] == [7] * 6
  assert [line.rhyme for line in huanxisha.lines] == [True, True, True, False, True, True]
  assert huanxisha.rhyme_tone == prosody_lib.PING
  rumeng = templates.lookup('如梦令')
  assert rumeng.num_chars == 33 and rumeng.rhyme_tone == prosody_lib.ZE
  assert [line.length for line in templates.ci('菩萨蛮').lines] == [7, 7, 5, 5, 5, 5, 5, 5]
  assert len({line.rhyme_set for line in templates.ci('菩萨蛮').lines}) == 4  # 换韵 thrice
  assert templates.ci('念奴娇').num_chars == 100 and templates.ci('水调歌头').num_chars == 95


def test_rhymes_agree_with_the_editors_full_stops():
  # 全宋词's editors end a rhyming line with 。 and others with ， or 、: an independent check.
  lines = [line for tune in templates.tune_names() for t in templates.ci_variants(tune)
           for line in t.lines]
  agree = sum(bool(line.rhyme_set) == (line.end == '。') for line in lines) / len(lines)
  print(f'\nci_tunes.json: rhyme flags agree with the editors\' 。 on {agree:.3f} of '
        f'{len(lines)} lines')
  assert agree > 0.95


def test_lookup_names():
  assert templates.lookup('七绝').name == '七言绝句·平起首句入韵'
  assert templates.lookup('五绝').name == '五言绝句·仄起首句不入韵'
  assert templates.lookup('五言律诗·平起首句入韵').lines[0].tones == 'PPZZP'
  assert templates.lookup('七律·仄起首句不入韵·一三五不论').lines[0].tones == '*Z*P*ZZ'
  assert templates.lookup('酹江月').name == '念奴娇'  # an alias
  assert templates.lookup('醉落魄・一斛珠').name == '一斛珠'  # a corpus tune field
  assert templates.lookup('水调歌头·又一体1').name == '水调歌头·又一体1'
  assert templates.lookup('浣溪纱').name == '浣溪沙'  # a spelling the corpus uses
  with pytest.raises(ValueError, match='close: 如梦令'):
    templates.lookup('如梦灵')
  with pytest.raises(ValueError, match='variant'):
    templates.ci('如梦令', 9)
  with pytest.raises(ValueError, match='平起'):
    templates.shi('七绝', start='平')
  with pytest.raises(ValueError, match='排律'):
    templates.shi('七绝', num_lines=12)


def test_build_ci_on_a_slice(corpus_dir):
  poems = [p for p in corpus.read_corpus(corpus_dir, workers=1).poems if p.collection == '宋词']
  data = templates.build_ci(poems, min_poems=3)
  assert data['tunes'] and set(data['rules']) >= {'tone_share', 'rhyme_share'}
  for tune, entry in data['tunes'].items():
    counts = [v['poems'] for v in entry['variants']]
    assert counts == sorted(counts, reverse=True) and counts[0] >= 3
    assert sum(counts) <= entry['poems']
    for v in entry['variants']:
      assert all(set(tones) <= set('PZ*') and end in '，。、' for tones, end, _ in v['lines'])
