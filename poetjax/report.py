"""An evaluation report (poetjax/evaluate.py) as Markdown, and its headline numbers.

    report.markdown(report, ['curves.png', ...])   # report.md
    report.headline_numbers(report)                # the numbers a comparison puts side by side
    report.comparison(reports, 'comparison.png')   # comparison.md
"""

import math

from poetjax import checker

SOURCES = ('model', 'model constrained', 'human')
GEN_COLUMNS = (('n', 'n', 0), ('format', 'format', 3), ('rhyme', 'rhyme', 3),
               ('alternation_246', '2-4-6', 3), ('tone_accuracy', 'tone', 3), ('ok', 'all rules', 3),
               ('distinct_1', 'distinct-1', 3), ('distinct_2', 'distinct-2', 3),
               ('self_bleu', 'self-BLEU', 1), ('copied_lines', 'copied lines', 3),
               ('longest_match_mean', 'longest match', 1), ('longest_match_max', 'max', 0))


def fmt(value, digits=3):
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '—'
  return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def table(header, rows):
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return '\n'.join(lines + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows])


def _gen_rows(report, form):
  return {r['source']: r for r in (report.get('generation') or {}).get('rows', [])
          if r['form'] == form}


def headline_numbers(report):
  """Flat {metric: value}: test bits per character, pooled generation rates, style, continuation."""
  lm = (report.get('lm') or {}).get('overall', {})
  out = {'step': report['run']['step'], 'params': report['run']['params']}
  for name in ('model', 'model + labels', 'KN-5', 'unigram'):
    out[f'bits/char {name}'] = (lm.get(name) or {}).get('bits_per_char')
  pooled = _gen_rows(report, 'all')
  for source in SOURCES:
    for key in ('format', 'rhyme', 'alternation_246', 'distinct_2', 'self_bleu', 'copied_lines'):
      out[f'{key} {source}'] = (pooled.get(source) or {}).get(key)
  for field, row in (report.get('style') or {}).items():
    out[f'style {field}'] = row.get('control_accuracy')
    out[f'style {field} ceiling'] = row.get('human_accuracy')
  cont = report.get('continuation') or {}
  for who in ('model', 'random_train_poem'):
    out[f'chrF {who}'] = (cont.get(who) or {}).get('chrf')
  return out


def headline(report):
  """A few lines for the terminal."""
  n = headline_numbers(report)
  lines = [f'{report["run"]["name"]} (step {n["step"]}, {n["params"]:,} params)']
  if n['bits/char model'] is not None:
    lines.append(f'  test bits/char: {n["bits/char model"]:.3f} (given labels '
                 f'{fmt(n["bits/char model + labels"])}); KN-5 {fmt(n["bits/char KN-5"])}, '
                 f'unigram {fmt(n["bits/char unigram"])}')
  for source in SOURCES:
    if n[f'format {source}'] is not None:
      lines.append(f'  {source}: format {n[f"format {source}"]:.3f}, rhyme '
                   f'{fmt(n[f"rhyme {source}"])}, 2-4-6 {fmt(n[f"alternation_246 {source}"])}, '
                   f'distinct-2 {fmt(n[f"distinct_2 {source}"])}, self-BLEU '
                   f'{fmt(n[f"self_bleu {source}"], 1)}')
  return '\n'.join(lines)


def _lm(lm):
  out = ['## Language model on the test split', '',
         'Bits per Han character (lower is better): the text and end of each poem are predicted, '
         'the Han characters counted. Loss (nats per token) and perplexity are the neural '
         "model's own, per token of its tokenizer. The n-gram rows are fitted on the train split.",
         '', table(['', 'bits/char', 'loss', 'perplexity'],
                   [[name, fmt(r['bits_per_char']), fmt(r['loss']), fmt(r['perplexity'], 1)]
                    for name, r in lm['overall'].items()])]
  names = list(lm['overall'])
  out += ['', '### By genre and form', '', table(
      ['group', 'poems', *names],
      [[g, r['poems'], *(fmt(r.get(n)) for n in names)] for g, r in lm['groups'].items()])]
  return out


def _generation(gen, settings):
  check = ('with 一三五不论' if settings['tones'] == 'loose' else 'with its strict template')
  out = ['## Generated poems', '',
         f'{settings["samples"]} poems per form and source (fewer human ones where the test split '
         f'has fewer), temperature {settings["temperature"]}, top-p {settings["top_p"]}, seed '
         f'{settings["seed"]}. *model*: the form\'s control labels only; *model constrained*: '
         f'also its template as hard rules (平仄 {settings["tones"]}); *human*: test poems. '
         f'Every poem is checked against its form {check}. Copied lines: share of lines found '
         'verbatim in the train split; longest match: characters of the longest verbatim run '
         'shared with a train poem.', '']
  out.append(table(['form', 'source', *(c[1] for c in GEN_COLUMNS)],
                   [[r['form'], r['source'], *(fmt(r.get(k), d) for k, _, d in GEN_COLUMNS)]
                    for r in gen['rows']]))
  if gen.get('memorised'):
    out += ['', '### Longest verbatim matches with the train split', '']
    out += [f'- {m["length"]} characters, {m["form"]} ({m["source"]}): 「{m["match"]}」 from '
            f'{m["train_title"] or "(untitled)"}, {m["train_author"] or "anonymous"}'
            for m in gen['memorised']]
  return out


def _style(rows):
  out = ['## Style control', '',
         'Poems sampled with a control label, classified by a TF-IDF character n-gram logistic '
         'regression fitted on the train split. The ceiling is its accuracy on human test poems.',
         '', table(['label', 'asked', 'poems', 'classified as asked', 'ceiling (human)', 'chance'],
                   [[field, ', '.join(r['labels']), r['requested'], fmt(r['control_accuracy']),
                     fmt(r['human_accuracy']), fmt(r['chance'])] for field, r in rows.items()])]
  return out


def _continuation(c):
  out = ['## Continuation', '',
         f'{c["n"]} test poems of the regulated forms, given their first line (line lengths '
         'kept, no tone or rhyme rule); corpus chrF and BLEU of the rest against the real rest. '
         'Floor: the rest of a random train poem of the same form.']
  if c['skipped_unknown_characters']:
    out[-1] += (f' {c["skipped_unknown_characters"]} poems were left out: their first line has '
                'characters the tokenizer lacks.')
  out += ['', table(['', 'chrF', 'BLEU'],
                    [[who, fmt((c[k] or {}).get('chrf'), 1), fmt((c[k] or {}).get('bleu'), 1)]
                     for who, k in (('model', 'model'), ('random train poem (floor)',
                                                         'random_train_poem'))])]
  return out


def _samples(samples):
  out = ['## Sample poems', '', '平 仄 under each character; 中 either reading, ？ not in the table.']
  for s in samples:
    try:
      body = checker.format_marks(s['text'])
    except ValueError:
      body = s['text'] or '(empty)'
    out += ['', f'**{s["form"]}** · {s["source"]}', '', '```', body, '```']
  return out


def markdown(report, figures=()):
  run = report['run']
  out = [f'# Evaluation of {run["name"]}, step {run["step"]}', '',
         f'- workdir: `{run["workdir"]}`' + (f', adapter: `{run["adapter"]}`' if run['adapter']
                                             else ''),
         f'- {run["params"]:,} params, tokenizer {run["tokenizer"]}, fine-tuning '
         f'{run["finetune"]}',
         f'- data: `{run["data_dir"]}` ({run["script"]}), {run["test_poems"]:,} test poems, '
         f'{run["train_poems"]:,} train poems', '']
  if report.get('lm'):
    out += _lm(report['lm']) + ['']
  if report.get('generation'):
    out += _generation(report['generation'], run['settings']) + ['']
  if report.get('style'):
    out += _style(report['style']) + ['']
  if report.get('continuation'):
    out += _continuation(report['continuation']) + ['']
  if figures:
    out += ['## Figures', ''] + [f'![{f}]({f})' for f in figures] + ['']
  if report.get('samples'):
    out += _samples(report['samples']) + ['']
  return '\n'.join(out)


def comparison(reports, figure=None):
  """comparison.md: one row per run of its headline numbers."""
  numbers = {name: headline_numbers(r) for name, r in reports.items()}
  keys = [k for k in next(iter(numbers.values())) if any(n[k] is not None for n in numbers.values())]
  out = ['# Comparison', '', table(['run', *keys], [[name, *(fmt(n[k]) for k in keys)]
                                                    for name, n in numbers.items()])]
  if figure:
    out += ['', f'![comparison]({figure})']
  return '\n'.join(out) + '\n'
