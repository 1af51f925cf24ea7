"""The record every part of poetjax shares: one cleaned, de-duplicated poem."""

import dataclasses

# Fields written to the TFDS dataset, in order (all strings; `lines` is joined by "\n" there).
FEATURES = ('id', 'text', 'lines', 'title', 'author', 'dynasty', 'genre', 'form', 'tune', 'collection')
SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(frozen=True)
class Poem:
  id: str           # stable content hash (hex), identical in both scripts
  text: str         # the whole poem, lines with their own full-width punctuation, no newlines
  lines: tuple      # the text cut after each ，。？！；
  title: str
  author: str
  dynasty: str      # 先秦 汉 魏晋 南北朝 隋 唐 五代 宋 元 明 清
  genre: str        # 诗 词 曲 诗经 楚辞 蒙学
  form: str         # 五言绝句 七言绝句 五言律诗 七言律诗 五言排律 七言排律 古体 | 词 | 曲 | 诗经 | 楚辞 | 蒙学
  tune: str         # 词牌 for 词, 曲牌 for 曲, else ''
  collection: str   # upstream folder the poem was read from, e.g. 全唐诗
  split: str        # train / validation / test, from the content hash

  def as_example(self):
    """The dict form stored in TFDS and seen by the Grain pipeline."""
    d = {k: getattr(self, k) for k in FEATURES}
    d['lines'] = '\n'.join(self.lines)
    return d
