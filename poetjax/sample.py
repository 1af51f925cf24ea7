"""Writes poems in a given form from a trained workdir, keeping its 平仄, rhyme and acrostic.

    python -m poetjax.sample --workdir runs/tiny --form 七言绝句 --acrostic 春夏秋冬 --num 4 \\
        --temperature 0.8 --top_p 0.9 --seed 0
    python -m poetjax.sample --workdir runs/tiny --tune 浣溪沙 --dynasty 宋 --num 2
    python -m poetjax.sample --workdir runs/tiny --form 五律 --first_line 白日依山尽 --json
    python -m poetjax.sample --workdir runs/tiny --form 七绝 --num 200 --report   # checker table
    python -m poetjax.sample --workdir runs/tiny --adapter runs/libai --form 七绝 --author 李白

Each poem is printed with its 平仄 under every line (平 仄, 中 either reading, ？ unknown).
--candidates N samples N poems per poem asked for (cycling through the form's 平起/仄起 and
rhyme variants) and keeps the best by mean log-probability plus the checker's score.
--tones strict keeps the template's 平仄 everywhere, loose applies 一三五不论 (never allowing
孤平 or 三平尾), off keeps lengths, punctuation and rhyme only; --tone_weight makes tones a
penalty instead of a rule. --beams N uses beam search instead of sampling.
"""

import argparse
import difflib
import json
import sys

import numpy as np

from poetjax import checker
from poetjax import checkpoint
from poetjax import constraints
from poetjax import jit_cache
from poetjax import sampler
from poetjax import templates
from poetjax import workdir as workdir_lib


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--step', default='latest', help="'latest', 'best' or a step number")
  p.add_argument('--adapter', help='a fine-tuning workdir (LoRA, BitFit, prompt) whose adapter '
                 'goes on the model of --workdir; --step then picks the adapter\'s step')
  p.add_argument('--no_merge', action='store_true',
                 help='keep LoRA beside the base kernels instead of folding it in')
  what = p.add_mutually_exclusive_group()
  what.add_argument('--form', help='五言绝句 七言绝句 五言律诗 七言律诗 (or 五绝 七绝 五律 七律)')
  what.add_argument('--tune', help='a 词牌, e.g. 浣溪沙 (see python -m poetjax.templates show)')
  p.add_argument('--acrostic', help='one character to head each line (藏头)')
  p.add_argument('--first_line', help='the poem starts with this line')
  p.add_argument('--keywords', default='', help='characters to favour, e.g. 月,江')
  p.add_argument('--keyword_boost', type=float, default=2.0)
  p.add_argument('--dynasty')
  p.add_argument('--author')
  p.add_argument('--style', help='a control piece, e.g. <author:李白>, used as given')
  p.add_argument('--tones', choices=('strict', 'loose', 'off'), default='loose')
  p.add_argument('--tone_weight', type=float, default=float('inf'),
                 help='inf: tones are a rule; a number: the logit penalty of a wrong tone')
  p.add_argument('--rhyme', help="a 平水韵 group (e.g. 一东) or 词林正韵 部, or 'off'")
  p.add_argument('--num', type=int, default=4)
  p.add_argument('--candidates', type=int, default=4, help='samples per poem kept')
  p.add_argument('--beams', type=int, default=0)
  p.add_argument('--temperature', type=float, default=0.8)
  p.add_argument('--top_k', type=int, default=50,
                 help='applied before top-p, as in Hugging Face generate; 0: top-p alone over the '
                      'whole vocabulary, 2.3x the time at batch 16')
  p.add_argument('--top_p', type=float, default=0.9)
  p.add_argument('--repetition_penalty', type=float, default=1.2)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--dtype', default=None,
                 help='sample in this dtype, e.g. bfloat16: half the weight memory; on a CPU '
                      'with bfloat16 units (AVX512-BF16, AMX) faster at batch 16 and more')
  p.add_argument('--json', action='store_true', help='one JSON object per poem')
  p.add_argument('--report', action='store_true', help='print the checker table of all poems')
  return p.parse_args(argv)


def form_templates(args, rows):
  """(template per row, rhyme system, form label) for the asked form or tune."""
  if args.tune:
    template = templates.lookup(args.tune)  # an unknown name fails with close matches
    return [template] * rows, 'cilin', ('tune', templates.canonical_tune(args.tune))
  name = templates.lookup(args.form or '七言绝句').name.split('·')[0]
  variants = templates.shi_variants(name, loose=args.tones == 'loose')
  return [variants[i % len(variants)] for i in range(rows)], 'pingshui', ('form', name)


def control_ids(tok, args, label):
  """bos, then the control pieces in the pipeline's order (dynasty, form, tune, author)."""
  ids = [tok.bos_id]
  fields = [('dynasty', args.dynasty), ('form', '词' if label[0] == 'tune' else label[1]),
            ('tune', label[1] if label[0] == 'tune' else None), ('author', args.author)]
  for field, value in fields:
    if not value:
      continue
    i = tok.control_id(field, value)
    if i is None:
      if field == 'tune':
        continue  # a rarer tune keeps its template, without its style token
      known = [tok.sp.id_to_piece(j) for j in range(tok.vocab_size)
               if tok.sp.id_to_piece(j).startswith(f'<{field}:')]
      close = difflib.get_close_matches(f'<{field}:{value}>', known, n=5, cutoff=0.3)
      raise ValueError(f'No control token for {field} {value!r}; close: {close or known[:10]}.')
    ids.append(i)
  if args.style:
    i = tok.sp.piece_to_id(args.style)
    if i not in tok.label_ids:
      raise ValueError(f'{args.style!r} is not a control piece of the tokenizer.')
    ids.append(i)
  return ids


def write(model, tok, args):
  """The poems as dicts: text, lines, marks, logprob, checker fields; best first per request."""
  per = 1 if args.beams else max(1, args.candidates)
  rows = args.num * per
  row_templates, system, label = form_templates(args, rows)
  cons = constraints.build(
      tok, row_templates, rows, vocab_size=model.config.vocab_size,
      tones='off' if args.tones == 'off' else 'strict', tone_weight=args.tone_weight,
      rhyme=args.rhyme, acrostic=args.acrostic, first_line=args.first_line,
      keywords=[w for w in args.keywords.split(',') if w], keyword_boost=args.keyword_boost,
      rhyme_system=system)
  prompt = control_ids(tok, args, label)
  max_new = row_templates[0].max_tokens
  common = dict(max_new_tokens=max_new, constraint=cons,
                **sampler.text_options(tok, model.config.vocab_size))
  prepared = sampler.prepare(model, args.dtype)
  if args.beams:
    out = sampler.beam_search(prepared, [prompt] * rows, num_beams=args.beams, **common)
  else:
    out = sampler.generate(prepared, [prompt] * rows, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p,
                           repetition_penalty=args.repetition_penalty, seed=args.seed, **common)
  if out.stuck.all():
    raise ValueError(constraints.explain(cons, out.constraint_state, 0, row_templates[0]))
  poems = []
  for r in range(rows):
    ids = [i for i in out.tokens[r, :out.lengths[r]] if i != tok.eos_id]
    text = tok.decode(ids)
    report = checker.check(text, row_templates[r])
    score = out.logprobs[r] / max(len(ids), 1) + report.tone_accuracy + report.rhyme_ok + (
        report.format_ok) - 10 * bool(out.stuck[r])
    poems.append({'text': text, 'template': row_templates[r].name,
                  'logprob': round(float(out.logprobs[r]), 3), 'score': round(float(score), 3),
                  'format_ok': report.format_ok, 'rhyme_ok': report.rhyme_ok,
                  'tone_accuracy': round(report.tone_accuracy, 3),
                  'alternation_246': report.alternation_246, 'stuck': bool(out.stuck[r]),
                  'marks': checker.format_marks(text)})
  best = []
  for q in range(args.num):
    group = poems[q * per:(q + 1) * per]
    best.append(max(group, key=lambda p: p['score']))
  return best, poems


def report_table(poems):
  n = len(poems)
  rate = lambda k: sum(bool(p[k]) for p in poems) / n
  alt = [p['alternation_246'] for p in poems if p['alternation_246'] is not None]
  return {'n': n, 'format': rate('format_ok'), 'rhyme': rate('rhyme_ok'),
          'alternation_246': float(np.mean(alt)) if alt else None,
          'tone_accuracy': float(np.mean([p['tone_accuracy'] for p in poems])),
          'stuck': rate('stuck')}


def main(argv=None):
  args = parse(argv)
  jit_cache.enable()
  try:
    model, tok, _, step = workdir_lib.load(args.workdir, args.step, adapter=args.adapter,
                                           merge=not args.no_merge)
    best, everything = write(model, tok, args)
  except (ValueError, FileNotFoundError, checkpoint.UnreadableCheckpointError) as e:
    sys.exit(f'error: {e}')
  if args.report:
    print(json.dumps({'step': step, 'best': report_table(best),
                      'all_candidates': report_table(everything)}, ensure_ascii=False))
    return
  for poem in best:
    if args.json:
      print(json.dumps(poem, ensure_ascii=False))
    else:
      print(f'{poem["template"]}  (log-prob {poem["logprob"]:.1f})')
      print(poem['marks'])
      print()


if __name__ == '__main__':
  main()
