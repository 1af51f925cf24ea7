"""The poems an evaluation samples, and what is measured on a set of poems.

    sets = generation.form_sets(prepared, tok, data, settings)    # per form: model, constrained
    generation.measure(texts, reports, index)                      # one row of the report
    generation.style_control(prepared, tok, data, settings)        # classified as requested?
    generation.continuation(prepared, tok, data, settings)         # first line given

Every set is seeded: row r of a set draws from seed + r (poetjax/sampler.py), so a set is the
same whatever the batch size, and the constrained and unconstrained poems of a form are paired
row by row. Forms: the four regulated shi forms and the most frequent 词牌. Unconstrained
poems get the form's control labels only; constrained ones also the form's template as hard
rules (line lengths, punctuation, rhyme, and 平仄 strict or with 一三五不论), as
`python -m poetjax.sample` writes them.
"""

import argparse
import collections
import dataclasses
import random

import numpy as np

from poetjax import checker
from poetjax import constraints
from poetjax import diversity
from poetjax import sample as sample_cli
from poetjax import sampler
from poetjax import templates

SHI_FORMS = checker.SHI_FORMS
STYLE_MAX_NEW = 96  # tokens of a style-control sample: enough for a classifier, not a long 词


@dataclasses.dataclass
class Settings:
  samples: int = 200          # poems per form and source
  tunes: int = 5              # the most frequent 词牌 evaluated beside the shi forms
  tones: str = 'loose'        # 'loose' (一三五不论) or 'strict', for constraints and checker
  temperature: float = 0.8
  top_k: int = 50             # before top-p, as the sample CLI and Hugging Face generate
  top_p: float = 0.9
  repetition_penalty: float = 1.2
  seed: int = 0
  batch: int = 200            # rows per sampler call
  style_samples: int = 20     # poems per requested label
  continuations: int = 200    # test poems whose first line is continued


def forms(settings):
  return list(SHI_FORMS) + checker.common_tunes(settings.tunes)


def sample(prepared, tok, prompts, *, seed, max_new, settings, constraint=None, progress=None):
  """(texts, stuck) of one poem per prompt (token ids); constraint(rows) builds the rules of
  those rows, or is None."""
  texts, stuck = [], []
  options = sampler.text_options(tok, prepared.config.vocab_size)
  for start in range(0, len(prompts), settings.batch):
    rows = list(range(start, min(start + settings.batch, len(prompts))))
    out = sampler.generate(
        prepared, [prompts[r] for r in rows], max_new_tokens=max_new,
        temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty, seed=[seed + r for r in rows],
        constraint=constraint and constraint(rows), **options)
    texts += sampler.texts(tok, out)
    stuck += out.stuck.tolist()
    if progress:
      progress(len(rows))
  return texts, stuck


def _request(form, settings):
  """What `python -m poetjax.sample` would be asked for this form."""
  tune = form not in SHI_FORMS
  return argparse.Namespace(form=None if tune else form, tune=form if tune else None,
                            tones=settings.tones, dynasty=None, author=None, style=None)


def form_sets(prepared, tok, settings, progress=None):
  """{form: {'model': texts, 'model constrained': texts, 'stuck': flags}} for every form."""
  out = {}
  for form in forms(settings):
    args = _request(form, settings)
    n = settings.samples
    row_templates, system, label = sample_cli.form_templates(args, n)
    prompt = sample_cli.control_ids(tok, args, label)
    chars = row_templates[0].max_tokens
    # A few tokens past the form's length show a poem that runs over (it fails the format).
    free, _ = sample(prepared, tok, [prompt] * n, seed=settings.seed, max_new=chars + 8,
                     settings=settings, progress=progress)
    rule = lambda rows, t=row_templates, s=system: constraints.build(
        tok, [t[r] for r in rows], len(rows), vocab_size=prepared.config.vocab_size,
        tones='strict', rhyme_system=s)
    kept, stuck = sample(prepared, tok, [prompt] * n, seed=settings.seed, max_new=chars,
                         settings=settings, constraint=rule, progress=progress)
    out[form] = {'model': free, 'model constrained': kept, 'stuck': stuck}
  return out


def human_sets(test, settings):
  """{form: texts}: up to settings.samples test poems of each form, drawn with the seed."""
  out = {}
  for form in forms(settings):
    if form in SHI_FORMS:
      pool = [e['text'] for e in test if e['genre'] == '诗' and e['form'] == form]
    else:
      pool = [e['text'] for e in test
              if e['genre'] == '词' and templates.canonical_tune(e['tune']) == form]
    rng = random.Random(settings.seed)
    out[form] = rng.sample(pool, min(len(pool), settings.samples))
  return out


def check(text, form, loose):
  """The checker's Report of a poem against its form; a text it cannot read fails everything."""
  try:
    return checker.check(text, form, loose=loose)
  except ValueError:
    t = templates.shi(form, loose=loose) if form in SHI_FORMS else templates.lookup(form)
    return checker.Report(
        form=t.name, format_ok=False, lines=(), tone_accuracy=0.0, alternation_246=0.0,
        rhyme_ok=False, ok=False, tone_matches=0, alternating_lines=0,
        strict_positions=sum(w != '*' for line in t.lines for w in line.tones),
        long_lines=sum(line.length >= 4 for line in t.lines))


def measure(texts, reports, matches, index):
  """One report row: the checker's pooled rates, diversity and novelty of a set of poems;
  matches: each text's longest match in the train split (index.longest_match)."""
  row = checker.pool(reports)
  lengths = [m.length for m in matches]
  row.update(
      distinct_1=diversity.distinct_n(texts, 1), distinct_2=diversity.distinct_n(texts, 2),
      self_bleu=diversity.self_bleu(texts) if len(texts) > 1 else None,
      copied_lines=index.copied_share(texts),
      longest_match_mean=float(np.mean(lengths)) if lengths else None,
      longest_match_max=int(max(lengths)) if lengths else None)
  return row


def memorised(found, train, k=5):
  """The k generated poems with the longest verbatim match in the train split, from
  (match, form, source, text) of each."""
  found = sorted(found, key=lambda f: -f[0].length)
  return [{'length': m.length, 'form': form, 'source': source, 'text': text, 'match': m.text,
           'train_title': train[m.poem]['title'], 'train_author': train[m.poem]['author']}
          for m, form, source, text in found[:k]]


# ---- style control

def _most_common(examples, key, where):
  counts = collections.Counter(e[key] for e in examples if where(e) and e[key])
  return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def style_requests(field, classes, train, tok):
  """[(label, prompt ids)]: the labels of a classifier's classes asked for with control tokens.

  dynasty: the 5 with the most 七言绝句, each asked as one (one form for all, so the form
  does not give the dynasty away); genre: 诗 词 曲 through the commonest form of each; author:
  every class, with the author's commonest dynasty and form in front, as in training.
  """
  piece = lambda f, v: tok.control_id(f, v)
  requests = []
  if field == 'dynasty':
    wrote = lambda e: e['dynasty'] in classes and e['form'] == '七言绝句'
    for label, _ in _most_common(train, 'dynasty', wrote)[:5]:
      ids = [piece('dynasty', label), piece('form', '七言绝句')]
      requests.append((label, ids))
  elif field == 'genre':
    for label, _ in _most_common(train, 'genre', lambda e: e['genre'] in classes)[:3]:
      form = _most_common(train, 'form', lambda e, g=label: e['genre'] == g)[0][0]
      requests.append((label, [piece('form', form)]))
  else:
    mine = [e for e in train if e['author'] in set(classes)]
    for label in classes:
      of_author = lambda e, a=label: e['author'] == a
      dynasty = _most_common(mine, 'dynasty', of_author)[0][0]
      form = _most_common(mine, 'form', of_author)[0][0]
      requests.append((label, [piece('dynasty', dynasty), piece('form', form),
                               piece('author', label)]))
  # A label without its own control token cannot be asked for.
  return [(label, [tok.bos_id, *ids]) for label, ids in requests
          if ids[-1] is not None and None not in ids]


def style_control(prepared, tok, classifier, requests, settings, progress=None):
  """How often poems sampled for each requested label are classified as that label."""
  labels = [label for label, _ in requests for _ in range(settings.style_samples)]
  prompts = [ids for _, ids in requests for _ in range(settings.style_samples)]
  texts, _ = sample(prepared, tok, prompts, seed=settings.seed, max_new=STYLE_MAX_NEW,
                    settings=settings, progress=progress)
  hit = np.asarray(classifier.predict(texts) if texts else []) == np.asarray(labels)
  per_label = {label: float(hit[[l == label for l in labels]].mean()) for label, _ in requests}
  return {'requested': len(texts), 'control_accuracy': float(hit.mean()) if len(hit) else None,
          'per_label': per_label}, texts, labels


# ---- continuation

def continuation_pairs(test, train, settings):
  """(poems, floors): test poems of the shi forms to continue, and for each a random train poem
  of the same form, whose continuation is the floor."""
  rng = random.Random(settings.seed)
  pool = [e for e in test if e['genre'] == '诗' and e['form'] in SHI_FORMS]
  chosen = rng.sample(pool, min(len(pool), settings.continuations))
  by_form = collections.defaultdict(list)
  for e in train:
    if e['genre'] == '诗' and e['form'] in SHI_FORMS:
      by_form[e['form']].append(e['text'])
  return chosen, [rng.choice(by_form[e['form']]) for e in chosen]


def rest(text):
  """A poem without its first line."""
  return ''.join(chars + end for chars, end in templates.segments(text)[1:])


def continuation(prepared, tok, test, train, settings, progress=None):
  """chrF and BLEU of the model's continuations of test poems' first lines against the real
  ones, beside a random train poem of the same form. The continuations keep the line lengths
  and punctuation of the form, no tone or rhyme rule."""
  chosen, floors = continuation_pairs(test, train, settings)
  # A first line can only be forced with characters the tokenizer has as pieces.
  known = lambda line: all(tok.sp.piece_to_id(ch) != tok.unk_id for ch in line)
  firsts = [templates.segments(e['text'])[0][0] for e in chosen]
  usable = [i for i, first in enumerate(firsts) if known(first)]
  made = [''] * len(chosen)
  for form in SHI_FORMS:
    rows = [i for i in usable if chosen[i]['form'] == form]
    if not rows:
      continue
    variants = templates.shi_variants(form, loose=settings.tones == 'loose')
    rule = lambda part, rows=rows, v=variants: constraints.build(
        tok, [v[r % len(v)] for r in part], len(part), vocab_size=prepared.config.vocab_size,
        tones='off', rhyme='off', first_line=[firsts[rows[r]] for r in part])
    prompt = [tok.bos_id, tok.control_id('form', form)]
    texts, _ = sample(prepared, tok, [prompt] * len(rows), seed=settings.seed,
                      max_new=variants[0].max_tokens,
                      settings=settings, constraint=rule, progress=progress)
    for i, text in zip(rows, texts):
      made[i] = text
  refs = [rest(chosen[i]['text']) for i in usable]
  return {
      'n': len(usable), 'skipped_unknown_characters': len(chosen) - len(usable),
      'model': diversity.chrf_bleu([rest(made[i]) for i in usable], refs) if usable else None,
      'random_train_poem': diversity.chrf_bleu([rest(floors[i]) for i in usable], refs)
                           if usable else None,
      'examples': [{'first_line': firsts[i], 'real': chosen[i]['text'], 'model': made[i]}
                   for i in usable[:3]],
  }, [made[i] for i in usable]
