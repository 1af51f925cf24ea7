"""Text cleaning: editorial notes out, punctuation full-width, damaged poems refused.

`clean_text` returns the cleaned text, or raises `Rejected` with the reason that is counted in the
corpus statistics; nothing is dropped without a reason.
"""

import re

# Sentence punctuation kept in the text; everything else that is not Han is removed or refused.
PUNCT = '，。？！；：、'
LINE_END = '，。？！；'
_HALF_TO_FULL = str.maketrans({',': '，', '.': '。', '?': '？', '!': '！', ';': '；', ':': '：',
                               '．': '。', '､': '、', '｡': '。', '﹐': '，', '﹒': '。'})
# Editorial notes in brackets: variants (一作…), stage directions (旦云), footnote marks 〖1〗.
_NOTE = re.compile(r'（[^（）]*）|\([^()]*\)|〔[^〔〕]*〕|〖[^〖〗]*〗|\[[^\[\]]*\]|【[^【】]*】')
_BRACKETS = set('（）()〔〕〖〗[]【】{}')
# Quotation and title marks carry no verse structure.
_QUOTES = re.compile(r'[“”‘’「」『』《》〈〉"\'・·—－―~～]|--+')
# Placeholders for characters lost in the sources, and lacunae.
_MISSING = set('□■○●◯◻�…⋯')
_SPACES = re.compile(r'\s+')
_PUNCT_RUN = re.compile(f'([{PUNCT}])[{PUNCT}]+')
_COMPOSITE = re.compile(r'\{[^{}]*\}')


class Rejected(Exception):
  """A poem that must not be used as training text; the message is the counted reason."""


def is_han(ch):
  o = ord(ch)
  return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or
          0x20000 <= o <= 0x3134F or o == 0x3007)


def count_han(text):
  return sum(map(is_han, text))


def clean_text(paragraphs, composites=None):
  """Joins upstream paragraphs into one cleaned text (lines end in full-width punctuation)."""
  parts = []
  for p in paragraphs:
    p = _SPACES.sub('，', p.strip())  # primers separate their clauses with spaces
    if p and p[-1] not in PUNCT and p[-1] not in '）)〕〗]】':
      p += '。'
    parts.append(p)
  text = ''.join(parts).translate(_HALF_TO_FULL)
  if composites:  # characters outside Unicode written as {parts}: map the ones that resolve
    text = _COMPOSITE.sub(lambda m: composites.get(m.group(0), m.group(0)), text)
  if _COMPOSITE.search(text):
    raise Rejected('missing characters')
  while True:
    stripped = _NOTE.sub('', text)
    if stripped == text:
      break
    text = stripped
  if any(ch in _MISSING for ch in text):
    raise Rejected('missing characters')
  if any(ch in _BRACKETS for ch in text):
    raise Rejected('garbled: unbalanced brackets')
  text = _QUOTES.sub('', text)
  text = _PUNCT_RUN.sub(lambda m: _strongest(m.group(0)), text).lstrip(PUNCT)
  if not any(map(is_han, text)):
    raise Rejected('empty')
  bad = [ch for ch in text if ch not in PUNCT and not is_han(ch)]
  if bad:
    raise Rejected('garbled: non-Han characters')
  if text[-1] not in PUNCT:
    text += '。'
  return text


def _strongest(run):
  # "，。" left by a removed note keeps the stronger stop.
  for p in '。？！；，：、':
    if p in run:
      return p
  return run[0]


def clean_field(value):
  """Titles and names: notes and stray whitespace out, nothing refused."""
  value = _NOTE.sub('', value or '')
  return _SPACES.sub(' ', value).strip()


def split_lines(text):
  """Cuts after each line-ending mark; 、 and ： stay inside a line (领字, quotes)."""
  return tuple(re.findall(f'[^{LINE_END}]+[{LINE_END}]', text))
