"""Control tokens: the style labels put in front of a poem's text.

They are spelled `<field:value>` and are single pieces of the tokenizer (user-defined symbols),
so a label costs one position and can be dropped without touching the text.
"""

import collections

DYNASTIES = ('先秦', '汉', '魏晋', '南北朝', '隋', '唐', '五代', '宋', '元', '明', '清')
GENRES = ('诗', '词', '曲', '诗经', '楚辞', '蒙学')
FORMS = ('五言绝句', '七言绝句', '五言律诗', '七言律诗', '五言排律', '七言排律', '古体',
         '词', '曲', '诗经', '楚辞', '蒙学')
# Order in which labels are put in front of the text.
FIELDS = ('dynasty', 'form', 'tune', 'author')
# Reserved for later use (fill-in-the-middle, separators).
SENTINELS = ('<fim_prefix>', '<fim_middle>', '<fim_suffix>', '<sep>', '<mask>', '<extra_0>',
             '<extra_1>', '<extra_2>')
NUM_TUNES = 200
NUM_AUTHORS = 500


def piece(field, value):
  return f'<{field}:{value}>'


def pieces(example, fields=FIELDS):
  """The control pieces of one example (a dict or Poem), for the non-empty fields."""
  get = example.get if isinstance(example, dict) else lambda k: getattr(example, k)
  return [piece(f, get(f)) for f in fields if get(f)]


def vocabulary(poems, num_tunes=NUM_TUNES, num_authors=NUM_AUTHORS):
  """All control pieces: fixed dynasties and forms, the most frequent tunes and authors."""
  tunes = collections.Counter(p.tune for p in poems if p.tune and p.genre == '词')
  authors = collections.Counter(p.author for p in poems if p.author and p.author != '佚名')
  return ([piece('dynasty', d) for d in DYNASTIES] + [piece('form', f) for f in FORMS] +
          [piece('tune', t) for t, _ in _top(tunes, num_tunes)] +
          [piece('author', a) for a, _ in _top(authors, num_authors)])


def _top(counter, n):
  # Ties broken by the value itself so the vocabulary is the same on every machine.
  return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
