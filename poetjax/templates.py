"""Form templates: line lengths, 平仄, rhymes and punctuation of regulated verse and of 词牌.

    t = templates.lookup('七绝')                     # 七言绝句·平起首句入韵
    t = templates.shi('五言律诗', start='仄起', first_line_rhymes=False, loose=True)
    t = templates.lookup('浣溪沙')                   # from ci_tunes.json, derived from the corpus
    [(l.length, l.tones, l.rhyme, l.end) for l in t.lines]

    python -m poetjax.templates show 如梦令
    python -m poetjax.templates build --corpus_dir ../shared/chinese-poetry   # ci_tunes.json

Shi follow the textbook patterns (王力《诗词格律》): four per form, 平起 or 仄起 by the second
character of the first line, the first line rhyming or not, lines joined by 粘 and 对. Tones are
'P' (平), 'Z' (仄) or '*' (either). The 词牌 are derived from the train split of the 宋词
collection by `build_ci` (its docstring gives the rules) and written to ci_tunes.json.
"""

import argparse
import collections
import dataclasses
import difflib
import functools
import itertools
import json
import os
import pathlib
import re
import sys

from poetjax import prosody as prosody_lib
from poetjax.data import clean

CI_TUNES = pathlib.Path(__file__).with_name('ci_tunes.json')
FORMS = {'五言绝句': (5, 4), '七言绝句': (7, 4), '五言律诗': (5, 8), '七言律诗': (7, 8),
         '五言排律': (5, 12), '七言排律': (7, 12)}  # 排律: any even count of 10+, 12 by default
SHORT = {'五绝': '五言绝句', '七绝': '七言绝句', '五律': '五言律诗', '七律': '七言律诗',
         '五排': '五言排律', '七排': '七言排律'}
STARTS = ('平起', '仄起')
# The usual variant: 五言 仄起 without a rhyme in the first line, 七言 平起 with one.
_DEFAULT = {5: ('仄起', False), 7: ('平起', True)}
# 五言 lines by (tone of the 2nd character, tone of the last); a 七言 line puts two characters
# of the opposite tone in front: 仄仄平平仄 -> 平平仄仄平平仄.
_FIVE = {('Z', 'Z'): 'ZZPPZ', ('P', 'P'): 'PPZZP', ('P', 'Z'): 'PPPZZ', ('Z', 'P'): 'ZZZPP'}
_OPPOSITE = {'P': 'Z', 'Z': 'P'}
# Line ends as templates write them: a question or exclamation closes a sentence like 。.
_END = {'？': '。', '！': '。', '；': '。', '：': '，'}
_SEGMENT = re.compile(f'([^{clean.PUNCT}]+)([{clean.PUNCT}])')


@dataclasses.dataclass(frozen=True)
class Line:
  length: int
  tones: str     # one per position: 'P' 平, 'Z' 仄, '*' either
  rhyme: bool    # the last character rhymes in the template's main rhyme, with its rhyme_tone
  end: str       # punctuation after the line: '，', '。' or (ci) '、'
  rhyme_set: int = 0  # 0: no rhyme; lines with the same number rhyme together (one 部, any
                      # tone); 1 is the main rhyme. 换韵 tunes (菩萨蛮) have several.


@dataclasses.dataclass(frozen=True)
class Template:
  name: str               # '七言绝句·平起首句入韵', '浣溪沙', '江城子·又一体1'
  lines: tuple
  rhyme_tone: int         # prosody.PING or ZE: the tone of the main rhyme

  @property
  def num_chars(self):
    return sum(line.length for line in self.lines)

  @property
  def max_tokens(self):
    """Tokens of a poem in this form written one character per piece: characters, line ends,
    eos. A subword tokenizer needs fewer."""
    return self.num_chars + len(self.lines) + 1


def segments(text):
  """(characters, end) per line of a poem, cut at every mark (、 too); ends as templates write
  them. Anything after the last mark is a line ending in 。."""
  out = [(chars, _END.get(end, end)) for chars, end in _SEGMENT.findall(text)]
  tail = re.split(f'[{clean.PUNCT}]', text)[-1]
  return out + [(tail, '。')] if tail else out


# ---- regulated verse

def _pattern(length, second, end):
  if length == 5:
    return _FIVE[second, end]
  return second * 2 + _FIVE[_OPPOSITE[second], end]


def _expand(tones):
  """Every P/Z string a pattern with '*' allows."""
  choices = [('P', 'Z') if t == '*' else (t,) for t in tones]
  return (''.join(c) for c in itertools.product(*choices))


def _gu_ping(tones):
  # 孤平 (王力): a 平-ending line whose last five characters hold at most one other 平, and not
  # next to the rhyme (仄平仄仄平; 仄仄仄平平 is fine).
  core = tones[-5:]
  return core[-1] == 'P' and core[3] != 'P' and core[:4].count('P') <= 1


def _san_ping_wei(tones):
  return tones[-3:] == 'PPP'


def _faulty(tones):
  return any(_gu_ping(t) or _san_ping_wei(t) for t in _expand(tones))


def _loosen(tones):
  """一三五不论: the 1st, 3rd (and 5th) characters free, unless that allows 孤平 or 三平尾."""
  out = list(tones)
  for i in range(0, len(tones) - 2, 2):
    trial = out[:i] + ['*'] + out[i + 1:]
    if not _faulty(trial):
      out = trial
  return ''.join(out)


def _marks(text, prosody):
  # 'P'/'Z' where the table is sure; '?' for a character with both readings or none.
  return ''.join({prosody_lib.PING: 'P', prosody_lib.ZE: 'Z'}.get(prosody.tone(ch), '?')
                 for ch in text if clean.is_han(ch))


def gu_ping(line_text, prosody=None):
  """True when the line certainly has 孤平 (an uncertain character is read as 平)."""
  return _gu_ping(_marks(line_text, prosody or prosody_lib.load()).replace('?', 'P'))


def san_ping_wei(line_text, prosody=None):
  """True when the line certainly ends in three 平 (an uncertain character is read as 仄)."""
  return _san_ping_wei(_marks(line_text, prosody or prosody_lib.load()).replace('?', 'Z'))


def shi(form, start=None, first_line_rhymes=None, loose=False, num_lines=None):
  """The template of a regulated form; start and first_line_rhymes default to the usual variant.

  form: '五言绝句'.. '七言排律' or a short name (五绝 七绝 五律 七律 五排 七排); num_lines only
  for 排律 (an even number, 10 or more).
  """
  form = _form_name(form)
  length, n = FORMS[form]
  if num_lines is not None:
    if '排律' not in form or num_lines < 10 or num_lines % 2:
      raise ValueError(f'num_lines={num_lines} does not fit {form}: only 排律 take a line '
                       'count, an even number of 10 or more.')
    n = num_lines
  start = start or _DEFAULT[length][0]
  if start not in STARTS:
    raise ValueError(f'Unknown start {start!r}: use one of {", ".join(STARTS)} (the tone of '
                     'the second character of the first line).')
  rhymes = _DEFAULT[length][1] if first_line_rhymes is None else bool(first_line_rhymes)
  second = 'P' if start == '平起' else 'Z'
  keys = [(second, 'P' if rhymes else 'Z')]
  for i in range(1, n):  # 对 inside a couplet (a rhyming line), 粘 across couplets
    keys.append((_OPPOSITE[keys[-1][0]], 'P') if i % 2 else (keys[-1][0], 'Z'))
  lines = []
  for i, (s, e) in enumerate(keys):
    tones = _pattern(length, s, e)
    lines.append(Line(length, _loosen(tones) if loose else tones, rhyme=e == 'P',
                      end='。' if i % 2 else '，', rhyme_set=int(e == 'P')))
  name = f'{form}·{start}首句{"入韵" if rhymes else "不入韵"}' + ('·一三五不论' if loose else '')
  return Template(name, tuple(lines), prosody_lib.PING)


def shi_variants(form, loose=False, num_lines=None):
  """The four variants of a regulated form."""
  return [shi(form, s, r, loose, num_lines) for s in STARTS for r in (True, False)]


def _form_name(form):
  form = SHORT.get(form, form)
  if form not in FORMS:
    raise ValueError(_unknown('form', form, list(FORMS) + list(SHORT)))
  return form


# ---- 词牌

@functools.cache
def _tunes():
  if not CI_TUNES.is_file():
    raise FileNotFoundError(f'{CI_TUNES} is missing: rebuild it with `python -m '
                            'poetjax.templates build --corpus_dir /path/to/chinese-poetry`.')
  return json.loads(CI_TUNES.read_text(encoding='utf-8'))


def tune_names():
  return tuple(_tunes()['tunes'])


def canonical_tune(tune):
  """The name ci_tunes.json files a tune under ('酹江月' -> '念奴娇'), or None."""
  data = _tunes()
  for name in (tune, *re.split('[・·]', tune)[::-1]):
    name = data['aliases'].get(name, name)
    if name in data['tunes']:
      return name
  return None


def ci(tune, variant=0):
  """The template of a 词牌 (variant 0 is the most common form in the corpus)."""
  name = canonical_tune(tune)
  if name is None:
    raise ValueError(_unknown('词牌', tune, list(_tunes()['tunes']) + list(_tunes()['aliases'])))
  variants = _tunes()['tunes'][name]['variants']
  if not 0 <= variant < len(variants):
    raise ValueError(f'{name} has {len(variants)} variant(s) in {CI_TUNES.name}: use variant '
                     f'0..{len(variants) - 1}.')
  v = variants[variant]
  tone = prosody_lib.PING if v['rhyme_tone'] == 'P' else prosody_lib.ZE
  other = 'Z' if tone == prosody_lib.PING else 'P'  # 西江月's 仄 ends rhyme in its 平 部
  lines = tuple(Line(len(t), t, rhyme=s == 1 and t[-1] != other, end=e, rhyme_set=s)
                for t, e, s in v['lines'])
  return Template(name + (f'·又一体{variant}' if variant else ''), lines, tone)


def ci_variants(tune):
  name = ci(tune).name
  return [ci(name, i) for i in range(len(_tunes()['tunes'][name]['variants']))]


def lookup(name):
  """A template by name: a form ('七言绝句', '七绝', '七言绝句·仄起首句不入韵') or a 词牌."""
  name = name.strip()
  form, _, variant = name.partition('·')
  if SHORT.get(form, form) in FORMS:
    if not variant:
      return shi(form)
    for t in shi_variants(form) + shi_variants(form, loose=True):
      if t.name.partition('·')[2] == variant:
        return t
    raise ValueError(_unknown(f'{form} variant', variant,
                              [t.name.partition('·')[2] for t in shi_variants(form)]))
  m = re.fullmatch(r'(.+)·又一体(\d+)', name)
  if m and canonical_tune(m.group(1)):
    return ci(m.group(1), int(m.group(2)))
  if canonical_tune(name) is None:
    known = list(FORMS) + list(SHORT) + list(tune_names()) + list(_tunes()['aliases'])
    raise ValueError(_unknown('form or 词牌', name, known))
  return ci(name)


def _unknown(what, name, known):
  close = difflib.get_close_matches(name, known, n=5, cutoff=0.3)
  hint = f'close: {", ".join(close)}' if close else f'known: {", ".join(list(known)[:20])}, ...'
  return f'Unknown {what} {name!r} ({hint}). python -m poetjax.templates show lists them.'


# ---- deriving the 词牌 from the corpus

TONE_SHARE = 0.75    # a position is P or Z when this share of the poems (with a sure tone) agree
RHYME_SHARE = 0.5    # two line ends rhyme when they share a 词林正韵 部 in more poems than not
VARIANT_SHARE = 0.1  # a form of a tune is kept with this share of its poems ...
VARIANT_MIN = 3      # ... and at least this many
MIN_POEMS = 20       # tunes with fewer poems in the train split are left out


def build_ci(poems, prosody=None, min_poems=MIN_POEMS):
  """Templates of the 词牌 of `poems` (Poem records of one collection, one split).

  A tune is filed under its standard name ('酹江月・念奴娇' -> 念奴娇, the other one an alias).
  Its poems are grouped by form: the length and end mark of every line (、 cuts a line too).
  Forms with VARIANT_SHARE of the tune's poems and VARIANT_MIN poems are kept, the most
  common first. Per position the tone is P or Z where TONE_SHARE of the poems whose character
  has one sure tone agree, else '*'. Two lines rhyme when their last characters share a
  词林正韵 部 in more than RHYME_SHARE of the poems; rhyming lines are joined into sets (a
  tune that changes rhyme has several), the largest set is the main one (ties: the later).
  """
  prosody = prosody or prosody_lib.load()
  by_tune, aliases = collections.defaultdict(list), {}
  for p in poems:
    names = [n for n in re.split('[・·]', p.tune) if n]
    if not names or names[-1] == '失调名':
      continue
    for alias in names[:-1]:
      if all(map(clean.is_han, alias)):  # not '□□□'
        aliases[alias] = names[-1]
    by_tune[names[-1]].append(p)
  tunes = {}
  for tune, group in sorted(by_tune.items(), key=lambda kv: (-len(kv[1]), kv[0])):
    if len(group) < min_poems:
      continue
    shapes = [tuple((len(c), e) for c, e in segments(p.text)) for p in group]
    keep = [f for f, k in collections.Counter(shapes).most_common()
            if k >= VARIANT_MIN and k >= VARIANT_SHARE * len(group)]
    if keep:
      variants = [_variant(f, [p for p, s in zip(group, shapes) if s == f], prosody)
                  for f in keep]
      tunes[tune] = {'poems': len(group), 'variants': variants}
  aliases = {a: t for a, t in sorted(aliases.items()) if t in tunes and a not in tunes}
  return {'source': 'chinese-poetry 宋词, train split (python -m poetjax.templates build)',
          'rules': {'tone_share': TONE_SHARE, 'rhyme_share': RHYME_SHARE,
                    'variant_share': VARIANT_SHARE, 'variant_min': VARIANT_MIN,
                    'min_poems': min_poems},
          'aliases': aliases, 'tunes': tunes}


def _variant(form, poems, prosody):
  texts = [[c for c, _ in segments(p.text)] for p in poems]
  lines = [''.join(_agree([prosody.tone(t[i][j]) for t in texts]) for j in range(length))
           for i, (length, _) in enumerate(form)]
  ends = [[set(prosody.bu(t[i][-1])) for t in texts] for i in range(len(form))]
  parent = list(range(len(form)))

  def root(i):
    while parent[i] != i:
      i = parent[i]
    return i

  for i, j in itertools.combinations(range(len(form)), 2):
    pairs = [bool(a & b) for a, b in zip(ends[i], ends[j]) if a and b]
    if pairs and sum(pairs) > RHYME_SHARE * len(pairs):
      parent[root(j)] = root(i)
  sets = collections.defaultdict(list)
  for i in range(len(form)):
    sets[root(i)].append(i)
  rhyming = sorted((s for s in sets.values() if len(s) > 1), key=lambda s: (-len(s), -s[-1]))
  number = {i: k + 1 for k, s in enumerate(rhyming) for i in s}
  main = [t[i][-1] for t in texts for i in rhyming[0]] if rhyming else []
  tone = _agree([prosody.tone(ch) for ch in main], 0.5)
  return {'poems': len(poems), 'rhyme_tone': 'Z' if tone == 'Z' else 'P',
          'lines': [[t, e, number.get(i, 0)] for i, (t, (_, e)) in enumerate(zip(lines, form))]}


def _agree(tones, share=TONE_SHARE):
  ping = tones.count(prosody_lib.PING)
  ze = tones.count(prosody_lib.ZE)
  if ping + ze and ping >= share * (ping + ze):
    return 'P'
  if ping + ze and ze >= share * (ping + ze):
    return 'Z'
  return '*'


def _dump(data):
  # One variant per line: small diffs when the corpus or the rules change.
  head = {k: v for k, v in data.items() if k != 'tunes'}
  out = json.dumps(head, ensure_ascii=False, indent=1)[:-2] + ',\n "tunes": {\n'
  tunes = []
  for name, t in data['tunes'].items():
    variants = ',\n   '.join(json.dumps(v, ensure_ascii=False) for v in t['variants'])
    tunes.append(f'  {json.dumps(name, ensure_ascii=False)}: {{"poems": {t["poems"]}, '
                 f'"variants": [\n   {variants}]}}')
  return out + ',\n'.join(tunes) + '\n }\n}\n'


def describe(t):
  marks = {'P': '平', 'Z': '仄', '*': '中'}
  rows = [f'{t.name}  ({len(t.lines)} lines, {t.num_chars} characters, '
          f'{"平" if t.rhyme_tone == prosody_lib.PING else "仄"}韵)']
  for line in t.lines:
    tag = f'韵{line.rhyme_set}' if line.rhyme_set else ''
    rows.append(f'  {"".join(marks[c] for c in line.tones)}{line.end} {tag}')
  return '\n'.join(rows)


def main(argv=None):
  from poetjax.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog='python -m poetjax.templates', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('command', choices=['build', 'show'])
  parser.add_argument('name', nargs='?', help='show: a form or 词牌 (none: list them)')
  parser.add_argument('--corpus_dir', default=os.environ.get(corpus_lib.ENV_VAR))
  parser.add_argument('--out', default=str(CI_TUNES))
  parser.add_argument('--min_poems', type=int, default=MIN_POEMS)
  args = parser.parse_args(argv)
  if args.command == 'show':
    try:
      if not args.name:
        print(' '.join(list(FORMS) + list(tune_names())))
      for t in ([] if not args.name else
                shi_variants(args.name) if SHORT.get(args.name, args.name) in FORMS else
                ci_variants(args.name)):
        print(describe(t))
    except ValueError as e:
      sys.exit(str(e))
    return
  try:
    corpus = corpus_lib.read_corpus(args.corpus_dir)
  except corpus_lib.CorpusError as e:
    sys.exit(str(e))
  poems = [p for p in corpus.poems if p.collection == '宋词' and p.split == 'train']
  data = build_ci(poems, min_poems=args.min_poems)
  pathlib.Path(args.out).write_text(_dump(data), encoding='utf-8')
  print(f'{len(data["tunes"])} tunes, {sum(len(t["variants"]) for t in data["tunes"].values())} '
        f'forms, {len(data["aliases"])} aliases -> {args.out}')


if __name__ == '__main__':
  main()
