"""Figures of training runs and their evaluation, as PNG files: the loss curves, bits per
character against the n-gram baselines, generation metrics by source, a page of sample poems
with their 平仄, and a comparison of runs.

    plots.curves({'tiny': 'runs/tiny'}, 'curves.png')   # metrics.jsonl of each workdir
    plots.lm_bars(report, 'lm.png')                    # report: the evaluation's report.json
    plots.generation_bars(report, 'generation.png')
    plots.poem_page(report['samples'], 'samples.png', columns=3)
    plots.compare({'tiny': report, 'small': other}, {'tiny': 'runs/tiny', 'small': 'runs/small'},
                  'compare.png')
    plots.write_all(report, {'tiny': 'runs/tiny'}, 'eval/')  # ['curves.png', 'lm.png', ...]

Every function writes one PNG and returns its path, or returns None when its inputs hold
nothing to draw: a missing section, key or file is skipped, and a metric that is None or NaN
draws no bar. Figures are drawn on matplotlib's Agg canvas without pyplot (no global figure
state, no display). Chinese is set in Noto Serif CJK SC, the font file the mplfonts package
ships; mplfonts itself is never imported (its import rewrites matplotlib's settings). The
files carry no version or time stamp, so the same inputs give the same bytes.
"""

import contextlib
import functools
import importlib.util
import json
import math
import pathlib

import matplotlib
from matplotlib import font_manager
from matplotlib import patches
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from poetjax import report as report_lib

DPI = 120
FONT_FILE = 'NotoSerifCJKsc-Regular.otf'
LM_ROWS = ('model', 'model + labels', 'KN-3', 'KN-4', 'KN-5', 'unigram')
# (key, label, scale): shares in 0..1; self-BLEU is on sacrebleu's 0-100 scale.
GENERATION_METRICS = (('format', 'format', 1), ('rhyme', 'rhyme', 1),
                      ('alternation_246', '2-4-6\nalternation', 1),
                      ('tone_accuracy', 'tone\naccuracy', 1), ('distinct_2', 'distinct-2', 1),
                      ('copied_lines', 'copied\nlines', 1), ('self_bleu', 'self-BLEU\n/ 100', 100))
MIN_GROUP_POEMS = 20  # smaller genre/form groups are too noisy to show
MAX_GROUPS = 8

_COLOURS = {'model': '#1f77b4', 'model + labels': '#17becf', 'KN-3': '#8c8c8c',
            'KN-4': '#a6a6a6', 'KN-5': '#6e6e6e', 'unigram': '#d0d0d0',
            'model constrained': '#2ca02c', 'human': '#ff7f0e'}
_CYCLE = ('#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2',
          '#17becf', '#bcbd22', '#7f7f7f')
_MARK_COLOURS = {'平': '#1f5fbf', '仄': '#c0392b', '中': '#7f7f7f', '？': '#b0b0b0'}


# ---- fonts and saving

@functools.cache
def _font_path():
  spec = importlib.util.find_spec('mplfonts')
  path = spec and pathlib.Path(spec.submodule_search_locations[0]) / 'fonts' / FONT_FILE
  if not path or not path.is_file():
    raise RuntimeError(f'The Chinese font {FONT_FILE} comes with the mplfonts package: '
                       "pip install 'mplfonts>=0.0.11,<0.1'")
  return path


@functools.cache
def cjk_family():
  """The family name of the CJK font, registered with matplotlib on the first call."""
  font_manager.fontManager.addfont(str(_font_path()))
  return font_manager.FontProperties(fname=str(_font_path())).get_name()


@functools.cache
def _cjk_chars():
  """The code points the CJK font has glyphs for."""
  from fontTools import ttLib  # pylint: disable=g-import-not-at-top  (matplotlib's dependency)
  with ttLib.TTFont(_font_path(), lazy=True) as font:
    return frozenset(font.getBestCmap())


def drawable(text):
  """text with the characters the font lacks (rare ones of CJK Extension B and beyond) and
  unprintable ones shown as 〓, the printers' mark for a missing character, not as a box."""
  chars = _cjk_chars()
  return ''.join(c if c.isprintable() and (ord(c) < 0x2e80 or ord(c) in chars) else '〓'
                 for c in text)


@contextlib.contextmanager
def _style():
  # Latin in DejaVu Sans, anything it lacks (Han, full-width marks) from the CJK font.
  with matplotlib.rc_context({'font.family': ['DejaVu Sans', cjk_family()],
                              'axes.spines.top': False, 'axes.spines.right': False}):
    yield


def _figure(width, height, layout='constrained'):
  fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=DPI, format='png', metadata={'Software': None})
  return path


# ---- reading

def _get(tree, *keys):
  """tree[k1][k2]... or None where a level is missing or not a dict."""
  for k in keys:
    if not isinstance(tree, dict):
      return None
    tree = tree.get(k)
  return tree


def _num(x):
  """x as a finite float, or None (missing, NaN, not a number)."""
  if isinstance(x, bool) or not isinstance(x, (int, float)):
    return None
  return float(x) if math.isfinite(x) else None


def read_metrics(workdir):
  """{key: ([steps], [values])} from workdir/metrics.jsonl, sorted by step; where a resumed run
  logged a step twice, its last value wins. {} when there is no file."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  if not path.is_file():
    return {}
  series = {}
  for line in path.read_text(encoding='utf-8').splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # a line cut short by a crash
      continue
    step = _num(record.get('step')) if isinstance(record, dict) else None
    if step is None:
      continue
    for key, value in record.items():
      if key != 'step' and _num(value) is not None:
        series.setdefault(key, {})[int(step)] = _num(value)
  return {k: tuple(map(list, zip(*sorted(v.items())))) for k, v in series.items()}


def _run_colours(names):
  return {n: _CYCLE[i % len(_CYCLE)] for i, n in enumerate(names)}


def _ordered(known, present):
  """The names of `known` that are present, then the others in their own order."""
  present = list(present)
  return [n for n in known if n in present] + [n for n in present if n not in known]


# ---- drawing helpers

def _bars(ax, groups, series, colours, labels=None, value_labels=False):
  """Grouped bars: groups along x, one bar per series name; values[name][group] may be None."""
  names = list(series)
  width = 0.8 / max(len(names), 1)
  for i, name in enumerate(names):
    xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
    pairs = [(x, v) for x, v in zip(xs, series[name]) if v is not None]
    if not pairs:
      continue
    bars = ax.bar([x for x, _ in pairs], [v for _, v in pairs], width * 0.92,
                  color=colours[name], label=(labels or {}).get(name, name))
    if value_labels:
      ax.bar_label(bars, fmt='%.2f', fontsize=7, padding=1)
  ax.set_xticks(range(len(groups)), groups)
  ax.set_xlim(-0.6, len(groups) - 0.4)


def _val_curves(ax, runs, colours, unigram=True):
  """Validation bits per character of each run; returns whether anything was drawn."""
  drawn = False
  for name, series in runs.items():
    if 'val/bits_per_char' in series:
      ax.plot(*series['val/bits_per_char'], 'o-', color=colours[name], label=name, markersize=3)
      drawn = True
    if unigram and 'val/unigram_bits_per_char' in series:
      ax.axhline(series['val/unigram_bits_per_char'][1][-1], color=colours[name], ls='--', lw=1)
      drawn = True
  ax.set_xlabel('step')
  ax.set_ylabel('validation bits per character (lower is better)')
  return drawn


def _empty(ax, text):
  ax.text(0.5, 0.5, text, ha='center', va='center', transform=ax.transAxes, color='grey')
  ax.set_xticks([])
  ax.set_yticks([])


# ---- figures

def curves(runs, path):
  """Train loss and validation bits per character against step, one line per run; the dashed
  line is the run's unigram baseline."""
  runs = {name: read_metrics(workdir) for name, workdir in (runs or {}).items()}
  runs = {name: series for name, series in runs.items() if series}
  if not runs:
    return None
  colours = _run_colours(runs)
  with _style():
    fig = _figure(11, 4.2)
    loss_ax, val_ax = fig.subplots(1, 2)
    for name, series in runs.items():
      if 'loss' in series:
        loss_ax.plot(*series['loss'], color=colours[name], lw=1, label=name)
    loss_ax.set(xlabel='step', ylabel='train loss (nats per token)', title='Training loss')
    if loss_ax.lines:
      loss_ax.legend()
    else:
      _empty(loss_ax, 'no train loss logged')
    if _val_curves(val_ax, runs, colours):
      val_ax.plot([], [], 'k--', lw=1, label='unigram baseline')
      val_ax.legend()
      val_ax.set_title('Validation')
    else:
      _empty(val_ax, 'no validation yet')
    return _save(fig, path)


def _lm_groups(groups, rows):
  """The largest groups with enough poems, as (label, {row: bits})."""
  groups = [(name, g) for name, g in (groups or {}).items()
            if isinstance(g, dict) and (_num(g.get('poems')) or 0) >= MIN_GROUP_POEMS]
  groups = sorted(groups, key=lambda item: -_num(item[1]['poems']))[:MAX_GROUPS]
  return [(f'{name}\n({int(g["poems"])} poems)', {r: _num(g.get(r)) for r in rows})
          for name, g in groups]


def lm_bars(report, path):
  """Bits per Han character of the test split: the model rows against the n-gram baselines,
  overall and per genre and form."""
  overall = _get(report, 'lm', 'overall') or {}
  overall = {r: _num(_get(overall, r, 'bits_per_char')) for r in overall}
  group_dicts = _get(report, 'lm', 'groups') or {}
  rows = _ordered(LM_ROWS, list(overall) + [r for g in group_dicts.values() if isinstance(g, dict)
                                            for r in g if r != 'poems'])
  overall = {r: overall.get(r) for r in rows if overall.get(r) is not None}
  groups = _lm_groups(group_dicts if isinstance(group_dicts, dict) else {}, rows)
  groups = [(label, values) for label, values in groups if any(v is not None for v in values.values())]
  if not overall and not groups:
    return None
  colours = {r: _COLOURS.get(r, _CYCLE[i % len(_CYCLE)]) for i, r in enumerate(rows)}
  ylabel = 'bits per Han character (lower is better)'
  with _style():
    # Wide enough for the legend above the groups even when there are only one or two.
    fig = _figure(max(4 + 1.3 * len(groups), 10) if groups else 5, 4.6)
    if overall and groups:
      overall_ax, groups_ax = fig.subplots(
          1, 2, gridspec_kw={'width_ratios': [max(len(overall), 2), 2.2 * len(groups)]})
    else:
      overall_ax = fig.subplots() if overall else None
      groups_ax = fig.subplots() if groups else None
    if overall_ax:
      names = list(overall)
      bars = overall_ax.bar(range(len(names)), [overall[n] for n in names],
                            color=[colours[n] for n in names])
      overall_ax.bar_label(bars, fmt='%.2f', fontsize=8, padding=1)
      overall_ax.set_xticks(range(len(names)), names, rotation=30, ha='right')
      overall_ax.set(ylabel=ylabel, title='Test split')
    if groups_ax:
      present = [r for r in rows if any(v[r] is not None for _, v in groups)]
      _bars(groups_ax, [label for label, _ in groups],
            {r: [v[r] for _, v in groups] for r in present}, colours)
      groups_ax.set(ylabel=ylabel, title='By genre and form')
      groups_ax.tick_params(axis='x', labelsize=8)
      groups_ax.legend(fontsize=8, ncols=min(len(present), 6), loc='lower center',
                       bbox_to_anchor=(0.5, 1.07), frameon=False)
    return _save(fig, path)


def generation_bars(report, path):
  """Prosody, diversity and copying of generated poems (the rows of form 'all'), one bar per
  source."""
  rows = [r for r in (_get(report, 'generation', 'rows') or [])
          if isinstance(r, dict) and r.get('form') == 'all' and r.get('source')]
  by_source = {r['source']: r for r in rows}
  metrics = [(key, label, scale) for key, label, scale in GENERATION_METRICS
             if any(_num(r.get(key)) is not None for r in rows)]
  if not metrics:
    return None
  sources = _ordered(report_lib.SOURCES, by_source)
  series = {s: [None if _num(by_source[s].get(k)) is None else _num(by_source[s][k]) / scale
                for k, _, scale in metrics] for s in sources}
  labels = {s: f'{s} (n={by_source[s]["n"]})' if _num(by_source[s].get('n')) else s
            for s in sources}
  colours = {s: _COLOURS.get(s, _CYCLE[i % len(_CYCLE)]) for i, s in enumerate(sources)}
  with _style():
    fig = _figure(2.2 + 1.15 * len(metrics), 4.4)
    ax = fig.subplots()
    _bars(ax, [label for _, label, _ in metrics], series, colours, labels, value_labels=True)
    ax.set_ylim(0, 1.1)
    ax.set(ylabel='share (0-1)', title='Generated poems, all forms')
    ax.text(0.0, -0.2, 'higher is better for format, rhyme and tones; lower for copied lines '
            'and self-BLEU', transform=ax.transAxes, fontsize=8, color='grey')
    ax.legend(fontsize=8, ncols=len(sources), loc='upper left')
    return _save(fig, path)


# ---- the poem page

_POEM_PT = 13  # poem characters; marks use the same size so each sits under its character
_TITLE_PT = 9
_MAX_RAW = 20  # characters per row when a poem cannot be read and is shown as written


def _poem_rows(sample):
  """(title, [(kind, text)]) of one sample, kind 'line', 'marks' or 'raw'."""
  from poetjax import checker  # pylint: disable=g-import-not-at-top  (loads the rhyme tables)
  text = str(sample.get('text') or '')
  title = ' · '.join(str(sample[k]) for k in ('form', 'source') if sample.get(k))
  try:
    pairs = checker.format_marks(text).split('\n')
    return title, [('marks', row) if i % 2 else ('line', drawable(row))
                   for i, row in enumerate(pairs)]
  except ValueError:
    flat = drawable(''.join(text.split()))
    return title, [('raw', flat[i:i + _MAX_RAW]) for i in range(0, len(flat), _MAX_RAW)]


def _row_height(kind):
  # In ems of the poem size: a little air after each line's marks.
  return {'line': 1.3, 'marks': 1.6, 'raw': 1.4}[kind]


def _draw_marks(fig, x, y, marks, family):
  # One text per mark kind, the other positions filled with the full-width space: every glyph
  # of the CJK font is one em wide, so the layers line up under the characters.
  for mark, colour in _MARK_COLOURS.items():
    if mark in marks:
      layer = ''.join(c if c == mark else '\u3000' for c in marks)
      fig.text(x, y, layer, fontsize=_POEM_PT, color=colour, family=family, va='top',
               transform=fig.dpi_scale_trans)


def poem_page(samples, path, columns=3):
  """Sample poems in a grid, each under a title of its form and source, every line with its
  平仄 below it (平 blue, 仄 red, 中 either, ？ unknown); a poem the checker cannot read is
  shown as written. The figure is sized from its content."""
  samples = [s for s in (samples or []) if isinstance(s, dict) and s.get('text')]
  if not samples:
    return None
  family = cjk_family()
  blocks = [_poem_rows(s) for s in samples]
  em = _POEM_PT / 72  # inches
  widest = max(len(text) for _, rows in blocks for _, text in rows)
  widest_title = max(_TITLE_PT / _POEM_PT * sum(1 if ord(c) > 0x2e80 else 0.6 for c in t)
                     for t, _ in blocks)
  col_width = (max(widest, widest_title, 6) + 2) * em
  columns = max(1, min(columns, len(blocks)))
  grid = [blocks[i:i + columns] for i in range(0, len(blocks), columns)]
  heights = [2 * em + max(sum(_row_height(k) for k, _ in rows) * em for _, rows in row)
             for row in grid]
  margin = 0.35
  width, height = 2 * margin + columns * col_width, 2 * margin + sum(heights)
  with _style():
    fig = _figure(width, height, layout=None)
    top = height - margin
    for row, row_height in zip(grid, heights):
      for c, (title, rows) in enumerate(row):
        x, y = margin + c * col_width, top
        fig.text(x, y, title, fontsize=_TITLE_PT, color='#555555', va='top',
                 transform=fig.dpi_scale_trans)
        y -= 1.6 * em
        for kind, text in rows:
          if kind == 'marks':
            _draw_marks(fig, x, y, text, family)
          else:
            fig.text(x, y, text, fontsize=_POEM_PT, family=family, va='top',
                     transform=fig.dpi_scale_trans)
          y -= _row_height(kind) * em
      top -= row_height
    return _save(fig, path)


# ---- several runs

def _headline(report):
  """{metric label: value} of one report: test bits per char, and format, rhyme, distinct-2 of
  the model's poems over all forms."""
  rows = _get(report, 'generation', 'rows') or []
  model = next((r for r in rows if isinstance(r, dict) and r.get('form') == 'all'
                and r.get('source') == 'model'), {})
  return {'bits': _num(_get(report, 'lm', 'overall', 'model', 'bits_per_char')),
          'format': _num(model.get('format')), 'rhyme': _num(model.get('rhyme')),
          'distinct-2': _num(model.get('distinct_2'))}


def compare(reports, runs, path):
  """Runs side by side: validation bits per character against step, test bits per character,
  and format, rhyme and distinct-2 of the model's poems."""
  reports, runs = reports or {}, runs or {}
  names = list(dict.fromkeys([*runs, *reports]))
  series = {n: read_metrics(runs[n]) for n in names if n in runs}
  series = {n: s for n, s in series.items() if 'val/bits_per_char' in s}
  heads = {n: _headline(reports.get(n)) for n in names}
  bits = {n: h['bits'] for n, h in heads.items() if h['bits'] is not None}
  shares = [m for m in ('format', 'rhyme', 'distinct-2')
            if any(h[m] is not None for h in heads.values())]
  panels = [p for p, present in (('curves', series), ('bits', bits), ('shares', shares))
            if present]
  if not panels:
    return None
  colours = _run_colours(names)
  ratios = {'curves': 3, 'bits': 0.6 + 0.45 * len(bits), 'shares': 0.6 + 0.35 * len(shares) * len(names)}
  with _style():
    fig = _figure(2 + sum(ratios[p] for p in panels) * 1.3, 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False,
                        gridspec_kw={'width_ratios': [ratios[p] for p in panels]})[0]
    axes = dict(zip(panels, axes))
    if 'curves' in axes:
      _val_curves(axes['curves'], series, colours, unigram=False)
      axes['curves'].set_title('Validation')
    if 'bits' in axes:
      ax = axes['bits']
      bars = ax.bar(range(len(bits)), list(bits.values()), color=[colours[n] for n in bits])
      ax.bar_label(bars, fmt='%.2f', fontsize=8, padding=1)
      ax.set_xticks(range(len(bits)), list(bits), rotation=30, ha='right')
      ax.set(ylabel='test bits per Han character (lower is better)', title='Test split')
    if 'shares' in axes:
      ax = axes['shares']
      _bars(ax, shares, {n: [heads[n][m] for m in shares] for n in names}, colours,
            value_labels=True)
      ax.set_ylim(0, 1.1)
      ax.set(ylabel='share (0-1), model samples, all forms', title='Generation')
    # One legend for the figure: every panel colours the runs alike.
    handles = [patches.Patch(color=colours[n], label=n) for n in names]
    fig.legend(handles=handles, loc='outside upper center', ncols=min(len(names), 6),
               frameon=False)
    return _save(fig, path)


def write_all(report, runs, out_dir):
  """curves.png, lm.png, generation.png and samples.png in out_dir; the names written."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  written = [curves(runs, out_dir / 'curves.png'),
             lm_bars(report, out_dir / 'lm.png'),
             generation_bars(report, out_dir / 'generation.png'),
             poem_page(_get(report, 'samples'), out_dir / 'samples.png')]
  return [p.name for p in written if p is not None]
