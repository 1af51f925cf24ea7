"""Scores a trained model against the test split, the baselines and the human poems, and draws it.

    python -m poetjax.evaluate --workdir runs/tiny                  # -> runs/tiny/eval/
    python -m poetjax.evaluate --workdir runs/tiny --adapter runs/libai --out eval/libai
    python -m poetjax.evaluate --workdir runs/tiny --compare runs/small runs/libai --out eval/cmp
    python -m poetjax.evaluate --workdir runs/tiny --samples 20 --skip style,continuation

Writes report.json, report.md, samples.jsonl (every poem generated) and PNG plots. Sections:

  lm            loss, perplexity and bits per Han character of the test split, overall and per
                genre and form; the text alone and given its labels; beside Kneser-Ney
                character n-grams of orders 3-5 and the unigram, fitted on the train split
  generation    --samples poems per form (五绝 七绝 五律 七律 and the --tunes commonest 词牌),
                free and constrained: the checker's format, rhyme, 2-4-6 and tone rates,
                distinct-1/2, self-BLEU, lines copied from the train split and the longest
                verbatim match; the same for human test poems of each form
  style         poems sampled with dynasty, genre and author labels, classified by a TF-IDF
                logistic regression fitted on the train split; its accuracy on human test poems
                is the ceiling
  continuation  test poems' first lines continued; chrF and BLEU against the real lines, beside
                a random train poem of the same form (the floor)

--compare evaluates more workdirs on the same poems and seeds, each into out/<name>/, and
writes comparison.md, comparison.json and comparison.png. The n-gram baselines are cached in
--cache_dir per dataset (they take a minute to fit on the whole train split).
"""

import argparse
import collections
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import sys
import time

import numpy as np
import tqdm

from poetjax import checkpoint
from poetjax import diversity
from poetjax import generation
from poetjax import jit_cache
from poetjax import likelihood
from poetjax import model as model_lib
from poetjax import ngram
from poetjax import plots
from poetjax import report as report_lib
from poetjax import sampler
from poetjax import style
from poetjax import workdir as workdir_lib
from poetjax.data import pipeline
from poetjax.data import tfds_builder

SECTIONS = ('lm', 'generation', 'style', 'continuation')
BASELINE_ORDERS = (3, 4, 5)
STYLE_FIELDS = ('dynasty', 'genre', 'author')
MIN_GROUP = 10  # poems a genre or form needs to get its own row
SHOWN_SAMPLES = 1  # poems per form and source on the sample page


def parse(argv):
  p = argparse.ArgumentParser(prog='python -m poetjax.evaluate', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', required=True, help='a training workdir (launch.py --workdir)')
  p.add_argument('--adapter', help='a fine-tuning workdir whose adapter goes on --workdir')
  p.add_argument('--step', default='latest', help="'latest', 'best' or a step number")
  p.add_argument('--compare', nargs='*', default=[], help='more workdirs for one comparison')
  p.add_argument('--out', help='report directory (default: WORKDIR/eval, or ADAPTER/eval)')
  p.add_argument('--data_dir', help="the prepared dataset (default: the run's data.data_dir)")
  p.add_argument('--cache_dir', default=os.path.join(
      os.environ.get('XDG_CACHE_HOME', '~/.cache'), 'poetjax'),
                 help="where the n-gram baselines are kept between runs; '' to not cache")
  p.add_argument('--skip', default='', help=f'sections to leave out, comma separated: {SECTIONS}')
  defaults = generation.Settings()
  for field in dataclasses.fields(generation.Settings):
    choices = ('loose', 'strict') if field.name == 'tones' else None
    p.add_argument(f'--{field.name}', type=field.type, default=getattr(defaults, field.name),
                   choices=choices)
  p.add_argument('--classifier_train', type=int, default=100_000,
                 help='train poems the style classifiers fit on (drawn with the seed); 0: all')
  p.add_argument('--quiet', action='store_true', help='no progress bars')
  args = p.parse_args(argv)
  args.skip = {s for s in args.skip.split(',') if s}
  if args.skip - set(SECTIONS):
    p.error(f'--skip: unknown sections {sorted(args.skip - set(SECTIONS))}; use {SECTIONS}.')
  return args


def settings_of(args):
  return generation.Settings(**{f.name: getattr(args, f.name)
                                for f in dataclasses.fields(generation.Settings)})


def read_split(data_dir, split, script):
  """All examples of a split, as dicts; a missing or empty split is a FileNotFoundError."""
  source = tfds_builder.data_source(data_dir, split, script)
  if not len(source):
    raise FileNotFoundError(f'The {split} split of chinese_poetry/{script} in {data_dir} is '
                            'empty: build the dataset from the whole corpus.')
  block = 4096
  return [e for start in range(0, len(source), block)
          for e in pipeline.read(source, list(range(start, min(start + block, len(source)))))]


class Data:
  """The test and train splits, and what is fitted on the train split: built once, shared by
  every run of a comparison."""

  def __init__(self, data_dir, script, args):
    self.data_dir, self.script = str(data_dir), script
    self.test = read_split(data_dir, 'test', script)
    self._args = args
    self._classifiers = {}

  @functools.cached_property
  def train(self):
    return read_split(self.data_dir, 'train', self.script)

  @functools.cached_property
  def index(self):
    return diversity.TrainIndex([e['text'] for e in self.train])

  def classifier(self, field):
    if field not in self._classifiers:
      self._classifiers[field] = style.Classifier(
          max_train=self._args.classifier_train or None, seed=self._args.seed).fit(
              self.train, field)
    return self._classifiers[field]

  @functools.cached_property
  def baselines(self):
    """{name: (bits per test poem, Han characters per test poem)} of the n-gram baselines."""
    texts = [e['text'] for e in self.test]
    key = hashlib.sha256('\n'.join([self.script, str(len(self.train))] + texts).encode())
    path = None
    if self._args.cache_dir:
      path = pathlib.Path(self._args.cache_dir).expanduser() / f'ngram-{key.hexdigest()[:16]}.json'
      if path.is_file():
        return {k: (np.asarray(b), np.asarray(h)) for k, (b, h) in json.loads(path.read_text()).items()}
    train = [e['text'] for e in self.train]
    out = {}
    for order in BASELINE_ORDERS:
      out[f'KN-{order}'] = ngram.KneserNey(order).fit(train).bits(texts, per_text=True)
    out['unigram'] = ngram.unigram_bits(train, texts, per_text=True)
    if path:
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps({k: [b.tolist(), h.tolist()] for k, (b, h) in out.items()}))
    return out

  def groups(self, filters):
    """{name: bool mask over the test poems}: all, each genre and form with MIN_GROUP poems, and
    the poems matching a fine-tuning run's data filters."""
    masks = {'all': np.ones(len(self.test), bool)}
    for field in ('genre', 'form'):
      values = sorted({e[field] for e in self.test})
      for value in values:
        mask = np.asarray([e[field] == value for e in self.test])
        if mask.sum() >= MIN_GROUP:
          masks[f'{field} {value}'] = mask
    if filters:
      wanted = {k: {v} if isinstance(v, str) else set(v) for k, v in filters.items()}
      name = 'filter ' + ' '.join(f'{k}={",".join(sorted(v))}' for k, v in wanted.items())
      masks[name] = np.asarray([all(e[k] in v for k, v in wanted.items()) for e in self.test])
    return masks


def lm_section(prepared, tok, config, data, args):
  seq_len = config.data.pipeline.seq_len
  scores = {}
  for name, labels in (('model', False), ('model + labels', True)):
    with _bar(args, f'scoring the test split ({name})', None) as bar:
      scores[name] = likelihood.score(prepared, tok, data.test, seq_len=seq_len, labels=labels,
                                      progress=bar.update)
  groups = data.groups(dict(config.data.pipeline.filters))
  overall = {name: likelihood.summary(s) for name, s in scores.items()}
  bpc = lambda bits, han, m: float(bits[m].sum() / han[m].sum()) if han[m].sum() else None
  for name, (bits, han) in data.baselines.items():
    overall[name] = {'bits_per_char': bpc(bits, han, groups['all']), 'loss': None,
                     'perplexity': None}
  table = {}
  for group, mask in groups.items():
    row = {'poems': int(mask.sum())}
    row.update({name: likelihood.summary(s, mask)['bits_per_char'] for name, s in scores.items()})
    row.update({name: bpc(bits, han, mask) for name, (bits, han) in data.baselines.items()})
    table[group] = row
  return {'overall': overall, 'groups': table}


def generation_section(prepared, tok, data, settings, args):
  forms = generation.forms(settings)
  with _bar(args, 'sampling forms', 2 * len(forms) * settings.samples) as bar:
    sets = generation.form_sets(prepared, tok, settings, progress=bar.update)
  human = generation.human_sets(data.test, settings)
  loose = settings.tones == 'loose'
  rows, samples, shown, found = [], [], [], []
  pooled = collections.defaultdict(lambda: ([], [], []))  # source -> texts, reports, matches
  for form in forms:
    by_source = {'model': sets[form]['model'], 'model constrained': sets[form]['model constrained'],
                 'human': human[form]}
    for source, texts in by_source.items():
      samples += [{'form': form, 'source': source, 'text': t} for t in texts]
      if not texts:
        continue
      reports = [generation.check(t, form, loose) for t in texts]
      matches = [data.index.longest_match(t) for t in texts]  # once per poem: a few ms each
      row = generation.measure(texts, reports, matches, data.index)
      if source == 'model constrained':
        row['stuck'] = float(np.mean(sets[form]['stuck']))
      rows.append({'form': form, 'source': source, **row})
      for part, new in zip(pooled[source], (texts, reports, matches)):
        part += new
      if source != 'human':
        found += [(m, form, source, t) for t, m in zip(texts, matches)]
    shown += [{'form': form, 'source': source, 'text': t}
              for source in ('model constrained', 'model', 'human')
              for t in by_source[source][:SHOWN_SAMPLES]]
  for source, (texts, reports, matches) in pooled.items():
    rows.append({'form': 'all', 'source': source,
                 **generation.measure(texts, reports, matches, data.index)})
  return ({'forms': forms, 'rows': rows, 'memorised': generation.memorised(found, data.train)},
          samples, shown)


def style_section(prepared, tok, data, settings, args):
  out, samples = {}, []
  texts = [e['text'] for e in data.test]
  for field in STYLE_FIELDS:
    clf = data.classifier(field)
    requests = generation.style_requests(field, clf.classes, data.train, tok)
    with _bar(args, f'sampling {field} labels', len(requests) * settings.style_samples) as bar:
      row, made, labels = generation.style_control(prepared, tok, clf, requests, settings,
                                                   progress=bar.update)
    row['labels'] = [label for label, _ in requests]
    row['human_accuracy'] = clf.accuracy(texts, [e[field] for e in data.test])
    row['chance'] = 1 / len(clf.classes)
    out[field] = row
    samples += [{'form': f'{field} {label}', 'source': 'model', 'text': t}
                for t, label in zip(made, labels)]
  return out, samples


def continuation_section(prepared, tok, data, settings, args):
  with _bar(args, 'continuing first lines', min(settings.continuations, len(data.test))) as bar:
    row, made = generation.continuation(prepared, tok, data.test, data.train, settings,
                                        progress=bar.update)
  return row, [{'form': 'continuation', 'source': 'model', 'text': t} for t in made]


def _bar(args, desc, total):
  return tqdm.tqdm(total=total, desc=desc, disable=args.quiet, leave=False, dynamic_ncols=True)


def evaluate_run(workdir, adapter, data, args):
  """(report, every generated poem) of one workdir (and adapter)."""
  model, tok, config, step = workdir_lib.load(workdir, args.step, adapter=adapter, merge=True)
  prepared = sampler.prepare(model)
  settings = settings_of(args)
  report = {'run': {
      'name': pathlib.Path(adapter or workdir).name, 'workdir': str(workdir),
      'adapter': adapter and str(adapter), 'step': step, 'seed': args.seed,
      'params': model_lib.count_params(model), 'tokenizer': config.data.tokenizer,
      'finetune': workdir_lib.finetune_mode(config), 'data_dir': data.data_dir,
      'script': data.script, 'test_poems': len(data.test), 'settings': dataclasses.asdict(settings),
  }}
  samples, timing = [], {}
  sections = {
      'lm': lambda: (lm_section(prepared, tok, config, data, args), [], []),
      'generation': lambda: generation_section(prepared, tok, data, settings, args),
      'style': lambda: (*style_section(prepared, tok, data, settings, args), []),
      'continuation': lambda: (*continuation_section(prepared, tok, data, settings, args), []),
  }
  report['samples'] = []
  for name, run in sections.items():
    if name in args.skip:
      continue
    start = time.perf_counter()
    report[name], made, shown = run()
    samples += made
    report['samples'] += shown
    timing[name] = round(time.perf_counter() - start, 1)
  report['run']['train_poems'] = len(data.train)
  report['timing_s'] = timing  # the one part of a report that differs between equal runs
  return report, samples


def write(report, samples, workdir, out):
  out.mkdir(parents=True, exist_ok=True)
  (out / 'report.json').write_text(json.dumps(report, ensure_ascii=False, indent=1))
  with (out / 'samples.jsonl').open('w', encoding='utf-8') as f:
    for s in samples:
      f.write(json.dumps(s, ensure_ascii=False) + '\n')
  figures = plots.write_all(report, {report['run']['name']: workdir}, out)
  (out / 'report.md').write_text(report_lib.markdown(report, figures))


def main(argv=None):
  args = parse(argv)
  jit_cache.enable()
  runs = [(args.workdir, args.adapter)] + [(d, None) for d in args.compare]
  out = pathlib.Path(args.out or pathlib.Path(args.adapter or args.workdir) / 'eval')
  try:
    config = workdir_lib.load_config(args.adapter or args.workdir)
    data = Data(pathlib.Path(args.data_dir or config.data.data_dir).expanduser(),
                config.data.script, args)
    reports, names = {}, []
    for workdir, adapter in runs:
      report, samples = evaluate_run(workdir, adapter, data, args)
      name = report['run']['name']
      while name in reports:  # two runs of one name: runs/a/x and runs/b/x
        name += "'"
      report['run']['name'] = name
      reports[name] = report
      write(report, samples, adapter or workdir, out / name if args.compare else out)
      print(report_lib.headline(report))
  except (ValueError, FileNotFoundError, checkpoint.UnreadableCheckpointError) as e:
    sys.exit(f'error: {e}')
  if args.compare:
    (out / 'comparison.json').write_text(json.dumps(
        {n: report_lib.headline_numbers(r) for n, r in reports.items()}, ensure_ascii=False,
        indent=1))
    dirs = {n: (a or w) for n, (w, a) in zip(reports, runs)}
    figure = plots.compare(reports, dirs, out / 'comparison.png')
    (out / 'comparison.md').write_text(report_lib.comparison(reports, figure and figure.name))
  print(f'Report in {out}')


if __name__ == '__main__':
  main()
