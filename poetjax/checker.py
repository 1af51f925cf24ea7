"""Scores a poem against a form: line format, 平仄, 2-4-6 alternation and rhyme.

    r = checker.check('白日依山尽，黄河入海流。欲穷千里目，更上一层楼。')
    r.form, r.ok, r.tone_accuracy, r.rhyme_ok     # '五言绝句·仄起首句不入韵', ...
    checker.check(text, '浣溪沙')                  # a 词牌 (every variant tried) or form name
    print(checker.format_marks(text))              # each line with its 平仄 under it

    python -m poetjax.checker --corpus_dir ../shared/chinese-poetry --split test
    python -m poetjax.checker --poem '白日依山尽，黄河入海流。欲穷千里目，更上一层楼。'

Marks: 平 and 仄 from the 平水韵 (poetjax.prosody), 中 for a character with both readings,
？ for one the table lacks; both of the last count as matching either tone, and as rhyming with
anything. A shi without a template is matched against the four variants of its detected form
(poetjax.data.forms), a 词牌 against every variant in ci_tunes.json; the best one is reported.
Rhyme classes: 平水韵 平声 groups for shi, 词林正韵 部 (any tone) for ci.
"""

import argparse
import collections
import dataclasses
import json
import os
import sys

from poetjax import prosody as prosody_lib
from poetjax import templates
from poetjax.data import clean
from poetjax.data import forms

_MARK = {prosody_lib.PING: '平', prosody_lib.ZE: '仄', prosody_lib.BOTH: '中', 0: '？'}
SHI_FORMS = ('五言绝句', '七言绝句', '五言律诗', '七言律诗')
PUBLISHED = {'rhyme': 0.945, 'alternation_246': 0.917}  # Tang regulated verse, 平水韵


@dataclasses.dataclass(frozen=True)
class LineReport:
  text: str
  marks: str                  # one of 平 仄 中 ？ per character
  tones: str                  # what the template asks: P Z *
  tone_ok_positions: tuple    # bool per position the line and the template share
  alternates: bool            # 2nd/4th/6th characters alternate 平仄 (True under 4 characters)


@dataclasses.dataclass(frozen=True)
class Report:
  form: str                   # the template's name
  format_ok: bool             # line count, lengths and end marks exactly as the template
  lines: tuple                # LineReport per line the poem and the template share
  tone_accuracy: float        # share of the template's P/Z positions that match
  alternation_246: float      # share of lines of 4+ characters that alternate at 2-4-6
  rhyme_ok: bool              # every rhyme set of the template shares one rhyme class
  ok: bool                    # format, rhyme and every P/Z position right
  strict_positions: int       # the counts behind the shares, for pooling over poems
  tone_matches: int
  long_lines: int
  alternating_lines: int


def marks(text, prosody=None):
  prosody = prosody or prosody_lib.load()
  return ''.join(_MARK[prosody.tone(ch)] for ch in text if clean.is_han(ch))


def format_marks(text, prosody=None):
  """The poem line by line, each with its 平仄 under it."""
  prosody = prosody or prosody_lib.load()
  return '\n'.join(f'{chars}{end}\n{marks(chars, prosody)}'
                   for chars, end in templates.segments(_normalise(text)))


def check(text, template=None, prosody=None, loose=False):
  """The Report of `text` against `template` (a Template, a form or 词牌 name, or None to detect
  a regulated shi). loose: 一三五不论 for regulated verse named or detected here."""
  prosody = prosody or prosody_lib.load()
  text = _normalise(text)
  reports = [_score(text, t, prosody) for t in _candidates(text, template, loose)]
  return max(reports, key=lambda r: (r.format_ok, r.rhyme_ok,
                                     r.tone_matches / max(r.strict_positions, 1)))


def _normalise(text):
  rows = [line.strip() for line in text.splitlines() if line.strip()]
  # One line per row without marks: a couplet's first line ends in ，, its second in 。.
  rows = [r if r[-1] in clean.PUNCT else r + ('。' if i % 2 or i == len(rows) - 1 else '，')
          for i, r in enumerate(rows)]
  try:
    return clean.clean_text(rows)
  except clean.Rejected as e:
    raise ValueError(f'Cannot check {text[:20]!r}: {e}. Give the poem as Han characters with '
                     'its punctuation (，。), or one line per row.') from e


def _candidates(text, template, loose):
  if isinstance(template, templates.Template):
    return [template]
  if template is None:
    lines = clean.split_lines(text)
    form = forms.detect_shi_form(lines)
    if form not in templates.FORMS:
      raise ValueError(f'Not regulated verse ({form}: {len(lines)} lines): pass template= a '
                       'form or 词牌 name, e.g. check(text, "浣溪沙").')
    return templates.shi_variants(form, loose, len(lines) if '排律' in form else None)
  name = templates.SHORT.get(template, template)
  if name in templates.FORMS:
    return templates.shi_variants(name, loose)
  if templates.canonical_tune(template):
    return templates.ci_variants(template)
  return [templates.lookup(template)]  # a variant by its full name, or a clear error


def _is_shi(template):
  return template.name.partition('·')[0] in templates.FORMS


def _tone_ok(tone, want):
  if want == '*' or tone in (0, prosody_lib.BOTH):
    return True
  return tone == (prosody_lib.PING if want == 'P' else prosody_lib.ZE)


def _alternates(tones):
  # 2nd, 4th, 6th characters; an uncertain one alternates with anything.
  even = tones[1::2][:3]
  return all(a != b or a in (0, prosody_lib.BOTH) for a, b in zip(even, even[1:]))


def _score(text, template, prosody):
  segs = templates.segments(text)
  format_ok = len(segs) == len(template.lines) and all(
      len(chars) == line.length and end == line.end
      for (chars, end), line in zip(segs, template.lines))
  lines, strict, matches, long_lines, alternating = [], 0, 0, 0, 0
  for (chars, _), line in zip(segs, template.lines):
    tones = [prosody.tone(ch) for ch in chars]
    ok = tuple(_tone_ok(t, w) for t, w in zip(tones, line.tones))
    strict += sum(w != '*' for w in line.tones[:len(chars)])
    matches += sum(o for o, w in zip(ok, line.tones) if w != '*')
    alt = len(chars) < 4 or _alternates(tones)
    long_lines += len(chars) >= 4
    alternating += len(chars) >= 4 and alt
    lines.append(LineReport(chars, ''.join(_MARK[t] for t in tones), line.tones, ok, alt))
  classes = prosody.ping_groups if _is_shi(template) else prosody.bu
  sets = collections.defaultdict(list)
  for (chars, _), line in zip(segs, template.lines):
    if line.rhyme_set:
      sets[line.rhyme_set].append(set(classes(chars[-1])))
  rhyme_ok = all(set.intersection(*known) if (known := [c for c in s if c]) else True
                 for s in sets.values())
  return Report(form=template.name, format_ok=format_ok, lines=tuple(lines),
                tone_accuracy=matches / strict if strict else 1.0,
                alternation_246=alternating / long_lines if long_lines else 1.0,
                rhyme_ok=bool(rhyme_ok), ok=format_ok and bool(rhyme_ok) and matches == strict,
                strict_positions=strict, tone_matches=matches,
                long_lines=long_lines, alternating_lines=alternating)


# ---- the corpus table

def score_rows(poems, num_tunes=10, loose=False, prosody=None):
  """{row name: pooled scores} for the regulated forms (Tang, all) and the most common tunes."""
  prosody = prosody or prosody_lib.load()
  rows = collections.defaultdict(list)
  short = {v: k for k, v in templates.SHORT.items()}
  for p in poems:
    if p.genre == '诗' and p.form in SHI_FORMS:
      r = check(p.text, None, prosody, loose)
      for scope in (('唐', '全部') if p.dynasty == '唐' else ('全部',)):
        rows[f'{short[p.form]} {scope}'].append(r)
        rows[f'律绝 {scope}'].append(r)
  rows = {f'{short[f]} {s}': rows[f'{short[f]} {s}'] for s in ('唐', '全部')
          for f in SHI_FORMS} | {f'律绝 {s}': rows[f'律绝 {s}'] for s in ('唐', '全部')}
  by_tune = collections.defaultdict(list)
  for p in poems:
    if p.genre == '词' and (tune := templates.canonical_tune(p.tune)):
      by_tune[tune].append(p)
  ci = []
  for tune in common_tunes(num_tunes):
    rows[tune] = [check(p.text, tune, prosody) for p in by_tune[tune]]
    ci += rows[tune]
  rows[f'词 (top {num_tunes})'] = ci
  return {name: pool(reports) for name, reports in rows.items()}


def common_tunes(n):
  """The n 词牌 with the most poems in the corpus, most first."""
  size = lambda t: templates._tunes()['tunes'][t]['poems']  # pylint: disable=protected-access
  return sorted(templates.tune_names(), key=lambda t: -size(t))[:n]


def pool(reports):
  """Pooled scores of Reports: shares of poems, and tone and 2-4-6 over positions and lines."""
  n = len(reports)
  share = lambda k: sum(k(r) for r in reports) / n if n else float('nan')
  strict = sum(r.strict_positions for r in reports)
  long_lines = sum(r.long_lines for r in reports)
  return {'n': n, 'format': share(lambda r: r.format_ok), 'rhyme': share(lambda r: r.rhyme_ok),
          'alternation_246': sum(r.alternating_lines for r in reports) / long_lines
                             if long_lines else float('nan'),
          'tone_accuracy': sum(r.tone_matches for r in reports) / strict
                           if strict else float('nan'),
          'ok': share(lambda r: r.ok)}


def render(rows):
  out = [f'{"form":<14}{"n":>6}{"format":>9}{"rhyme":>9}{"2-4-6":>9}{"tone acc":>10}{"ok":>8}']
  for name, r in rows.items():
    pad = 14 - sum(1 for ch in name if clean.is_han(ch))  # a Han character is two columns
    out.append(f'{name:<{pad}}{r["n"]:>6}{r["format"]:>9.3f}{r["rhyme"]:>9.3f}'
               f'{r["alternation_246"]:>9.3f}{r["tone_accuracy"]:>10.3f}{r["ok"]:>8.3f}')
  return '\n'.join(out)


def main(argv=None):
  from poetjax.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog='python -m poetjax.checker', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--poem', help='check this one poem instead of the corpus')
  parser.add_argument('--form', help='a form or 词牌 name (default: detect a regulated shi)')
  parser.add_argument('--corpus_dir', default=os.environ.get(corpus_lib.ENV_VAR))
  parser.add_argument('--split', default='test', choices=('train', 'validation', 'test', 'all'))
  parser.add_argument('--num_tunes', type=int, default=10)
  parser.add_argument('--loose', action='store_true', help='一三五不论 for regulated verse')
  args = parser.parse_args(argv)
  try:
    if args.poem:
      r = check(args.poem, args.form, loose=args.loose)
      print(r.form)
      for line in r.lines:
        print(f'{line.text}\n{line.marks}  {line.tones}')
      print(json.dumps({k: v for k, v in dataclasses.asdict(r).items() if k != 'lines'},
                       ensure_ascii=False))
      return
    corpus = corpus_lib.read_corpus(args.corpus_dir)
  except (ValueError, corpus_lib.CorpusError) as e:
    sys.exit(str(e))
  poems = [p for p in corpus.poems if args.split in ('all', p.split)]
  rows = score_rows(poems, args.num_tunes, args.loose)
  print(render(rows))
  print(json.dumps({'bench': 'checker', 'split': args.split, 'loose': args.loose,
                    'published_tang': PUBLISHED,
                    'rows': {k: {m: round(v, 4) for m, v in r.items()} for k, r in rows.items()}},
                   ensure_ascii=False))


if __name__ == '__main__':
  main()
