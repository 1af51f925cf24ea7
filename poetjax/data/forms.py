"""Form of a shi by its structure: characters per line and number of lines."""

from poetjax.data import clean

_LENGTH = {5: '五言', 7: '七言'}


def detect_shi_form(lines):
  """五言/七言 绝句 (4 lines), 律诗 (8), 排律 (10 or more, even); anything else is 古体."""
  lengths = {clean.count_han(line) for line in lines}
  n = len(lines)
  if len(lengths) != 1 or (size := lengths.pop()) not in _LENGTH:
    return '古体'
  if any(not clean.is_han(ch) for line in lines for ch in line[:-1]):
    return '古体'  # a pause mark inside a line is not regulated verse
  if n == 4:
    return _LENGTH[size] + '绝句'
  if n == 8:
    return _LENGTH[size] + '律诗'
  if n >= 10 and n % 2 == 0:
    return _LENGTH[size] + '排律'
  return '古体'
