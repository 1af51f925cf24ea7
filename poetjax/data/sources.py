"""The collections (sources) of the upstream chinese-poetry layout and how to read each file.

Each entry names a file pattern, the script the files are written in, and a function that turns
one parsed JSON file into raw records: dicts with paragraphs, title, author, and optionally tune,
dynasty and genre (the entry gives the defaults).
"""

import dataclasses
import re
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Collection:
  name: str            # reported in statistics and stored as Poem.collection
  pattern: str         # glob under the corpus root
  script: str          # 'traditional' or 'simplified': what the files are written in
  dynasty: str
  genre: str
  records: Callable    # parsed JSON -> iterable of raw records


def _shi(data):
  for x in data:
    yield {'paragraphs': x.get('paragraphs') or [], 'title': x.get('title', ''),
           'author': x.get('author', '')}


def _ci(data):
  for x in data:
    if x.get('rhythmic') == '花间集':  # the anthology's preface, prose
      yield {'skip': 'prose, not verse'}
      continue
    tune = x.get('rhythmic', '')
    yield {'paragraphs': x.get('paragraphs') or [], 'title': x.get('title') or tune,
           'author': x.get('author', ''), 'tune': tune}


_GONGDIAO = re.compile(r'^(北|南)?(仙吕|中吕|南吕|双调|越调|商调|正宫|黄钟|大石调|小石调|般涉调|商角调|'
                       r'道宫|高平调|歇指调|宫调|角调)(宫)?$')


def qu_tune(title):
  """曲牌 from a 元曲 title: '剧名・宫调/曲牌', '宫调・曲牌题目' or a bare '曲牌'."""
  pieces = [p for p in title.split('・') if p]
  if not pieces:
    return ''
  head = pieces[0].split('/')[-1]
  if _GONGDIAO.match(pieces[0]) and len(pieces) > 1:
    tune = pieces[1]
  elif len(pieces) > 1:
    tune = pieces[-1]
  else:
    tune = head
  tune = re.split(r'[《（(，。]', tune.split('/')[-1])[0]
  return tune if 0 < len(tune) <= 8 else ''


def _qu(data):
  for x in data:
    yield {'paragraphs': x.get('paragraphs') or [], 'title': x.get('title', ''),
           'author': x.get('author', ''), 'tune': qu_tune(x.get('title', ''))}


def _content(data):  # 诗经, 楚辞
  for x in data:
    author = x.get('author', '')
    rec = {'paragraphs': x.get('content') or [], 'title': x.get('title', ''), 'author': author}
    if author and author not in ('屈原', '宋玉', '景差'):
      rec['dynasty'] = '汉'  # the 楚辞 anthology's later pieces are Han imitations
    yield rec


def _nalan(data):
  for x in data:
    title = x.get('title', '').strip()
    rec = {'paragraphs': x.get('para') or x.get('paragraphs') or [], 'title': title,
           'author': x.get('author', '纳兰性德')}
    if '·' in title:  # '长相思·山一程': a ci, tune before the dot
      rec.update(genre='词', tune=title.split('·')[0].strip())
    yield rec


_DYNASTY_PREFIX = re.compile(r'^[（(]([^）)]+)[）)]')


def _anthology(data):
  """唐诗三百首 and 千家诗 in 蒙学: sections of poems with 'chapter' as title; a poem in parts
  (其一, 其二) holds them as dicts under 'paragraphs'."""
  for section in data.get('content', []):
    for x in section.get('content', []):
      author, title = x.get('author', ''), x.get('subchapter') or x.get('chapter', '')
      dynasty = ''
      if m := _DYNASTY_PREFIX.match(author):
        author, dynasty = author[m.end():], m.group(1)[:1]
      parts = x.get('paragraphs') or []
      if parts and isinstance(parts[0], dict):
        parts = [(f"{title}·{p.get('subchapter', '')}", p.get('paragraphs') or []) for p in parts]
      else:
        parts = [(title, parts)]
      for part_title, paragraphs in parts:
        rec = {'paragraphs': paragraphs, 'title': part_title, 'author': author}
        if dynasty in ('唐', '宋', '明', '清'):
          rec['dynasty'] = dynasty
        yield rec


def _primer(dynasty):
  """Rhymed primers (三字经, 千字文, 声律启蒙, ...): one record per chapter, or the whole text."""
  def records(data):
    title, author = data.get('title', ''), data.get('author', '')
    if 'paragraphs' in data:
      yield {'paragraphs': data['paragraphs'], 'title': title, 'author': author,
             'dynasty': dynasty}
    for chapter in _chapters(data.get('content', [])):
      yield {'paragraphs': chapter.get('paragraphs') or [],
             'title': f"{title}·{chapter.get('chapter', '')}", 'author': author,
             'dynasty': dynasty}
  return records


def _chapters(content):
  for c in content:
    if 'paragraphs' in c:
      yield c
    yield from _chapters(c.get('content', []))


def _prose(data):
  yield {'skip': 'prose, not verse'}


T, S = 'traditional', 'simplified'
COLLECTIONS = (
    Collection('全唐诗', '全唐诗/poet.tang.*.json', T, '唐', '诗', _shi),
    Collection('全宋诗', '全唐诗/poet.song.*.json', T, '宋', '诗', _shi),
    Collection('宋词', '宋词/ci.song.*.json', S, '宋', '词', _ci),
    Collection('五代诗词', '五代诗词/huajianji/*.json', S, '五代', '词', _ci),
    Collection('五代诗词', '五代诗词/nantang/poetrys.json', S, '五代', '词', _ci),
    Collection('元曲', '元曲/yuanqu.json', S, '元', '曲', _qu),
    Collection('诗经', '诗经/shijing.json', S, '先秦', '诗经', _content),
    Collection('楚辞', '楚辞/chuci.json', S, '先秦', '楚辞', _content),
    Collection('曹操诗集', '曹操诗集/*.json', S, '汉', '诗', _shi),
    Collection('纳兰性德', '纳兰性德/*.json', S, '清', '诗', _nalan),
    Collection('水墨唐诗', '水墨唐诗/*.json', S, '唐', '诗', _shi),
    Collection('唐诗三百首', '全唐诗/唐诗三百首.json', T, '唐', '诗', _shi),
    Collection('唐诗补录', '全唐诗/唐诗补录.json', S, '唐', '诗', _shi),
    Collection('宋词三百首', '宋词/宋词三百首.json', S, '宋', '词', _ci),
    Collection('蒙学', '蒙学/tangshisanbaishou.json', T, '唐', '诗', _anthology),
    Collection('蒙学', '蒙学/qianjiashi.json', T, '唐', '诗', _anthology),
    Collection('蒙学', '蒙学/sanzijing-*.json', T, '宋', '蒙学', _primer('宋')),
    Collection('蒙学', '蒙学/qianziwen.json', T, '南北朝', '蒙学', _primer('南北朝')),
    Collection('蒙学', '蒙学/baijiaxing.json', T, '宋', '蒙学', _primer('宋')),
    Collection('蒙学', '蒙学/dizigui.json', T, '清', '蒙学', _primer('清')),
    Collection('蒙学', '蒙学/shenglvqimeng.json', T, '清', '蒙学', _primer('清')),
    Collection('蒙学', '蒙学/zengguangxianwen.json', T, '明', '蒙学', _primer('明')),
    Collection('蒙学', '蒙学/guwenguanzhi.json', T, '清', '蒙学', _prose),
    Collection('蒙学', '蒙学/youxueqionglin.json', T, '明', '蒙学', _prose),
    Collection('蒙学', '蒙学/zhuzijiaxun.json', T, '清', '蒙学', _prose),
    Collection('蒙学', '蒙学/wenzimengqiu.json', T, '清', '蒙学', _prose),
)
# Upstream files that hold no poems (author lists, indexes, tone tables): not read, not counted.
COMPOSITES = '全唐诗/表面结构字.json'
