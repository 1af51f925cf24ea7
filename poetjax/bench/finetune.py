"""Benchmark: full fine-tuning, LoRA (r=4, 8, 16), BitFit and prompt tuning against each other.

    python -m poetjax.bench.finetune --base runs/tiny --filters author=李白 --steps 200

Quality: from the pretraining workdir --base, each method trains --steps steps of the same
batches (the poems matching --filters), then is scored on the whole validation subset of
those poems in bits per Han character, beside the base's own score there.
Cost, on a model of --cost_preset (default `small`, the size the targets are set for; a random
base, as cost does not depend on the values): trainable params, step time (median of
interleaved repeats on one batch, relative to full fine-tuning), peak memory of the step
(XLA's buffer assignment: arguments + outputs + temporaries - donated), and the bytes of one
saved checkpoint. Prints a table and one JSON line. --skip_quality or --skip_cost runs one part.
"""

import argparse
import json
import pathlib
import statistics
import tempfile
import time

from flax import nnx
import jax

from poetjax import checkpoint
from poetjax import configs
from poetjax import loop
from poetjax import model as model_lib
from poetjax import peft
from poetjax import sharding
from poetjax import train
from poetjax import workdir as workdir_lib
from poetjax.bench import train as train_bench
from poetjax.data import tokenizer as tokenizer_lib

# (name, finetune fields, peak learning rate): the usual ranges for each method; prompt
# tuning needs a far larger step than the others (Lester et al. 2021 used 0.3).
METHODS = (
    ('full', {'mode': 'full'}, 1e-3),
    ('lora r=4', {'mode': 'lora', 'lora_rank': 4, 'lora_alpha': 8.0}, 3e-3),
    ('lora r=8', {'mode': 'lora', 'lora_rank': 8, 'lora_alpha': 16.0}, 3e-3),
    ('lora r=16', {'mode': 'lora', 'lora_rank': 16, 'lora_alpha': 32.0}, 3e-3),
    ('lora r=8 +MLP', {'mode': 'lora', 'lora_rank': 8, 'lora_alpha': 16.0,
                       'targets': peft.ALL_PROJECTIONS}, 3e-3),
    ('bitfit', {'mode': 'bitfit'}, 1e-2),
    ('prompt', {'mode': 'prompt', 'prompt_length': 16}, 3e-2),
)


def parse_filters(text):
  pairs = [p.partition('=') for p in text.split(',') if p]
  if not pairs or any(not v for _, _, v in pairs):
    raise SystemExit(f'--filters {text!r}: give field=value[,field=value], e.g. author=李白.')
  return {k: v for k, _, v in pairs}


def method_config(args, fields, lr):
  c = configs.finetune(parse_filters(args.filters), mode=fields['mode'], base_workdir=args.base)
  c.finetune.update(fields)
  c.data.data_dir = args.data_dir or workdir_lib.load_config(args.base).data.data_dir
  c.train.steps = args.steps
  c.train.learning_rate = lr
  c.train.warmup_steps = min(20, args.steps // 10)
  c.loop.eval_every = args.steps
  c.loop.eval_batches = 0  # the whole validation subset
  c.checkpoint.every_steps = args.steps
  c.sample.num_poems = 0
  return c


def base_bits(config):
  """The base model's bits per character on the validation subset (no training)."""
  mesh = sharding.make_mesh(config.mesh)
  _, params = loop.load_base(config, mesh)
  tok = tokenizer_lib.load(config.data.tokenizer)
  mconfig = workdir_lib.model_config(config, tok)
  trainer = train.Trainer(mconfig, config.train, mesh, base_params=params)
  _, val_source = loop.prepare_data(config.data)
  return loop.Evaluator(val_source, tok, config, mconfig.vocab_size)(trainer)['val/bits_per_char']


def quality(args, scratch):
  rows = {'base (no fine-tuning)': base_bits(method_config(args, *METHODS[0][1:]))}
  for name, fields, lr in METHODS:
    if args.methods and name not in args.methods.split(','):
      continue
    config = method_config(args, fields, lr)
    _, last = loop.train_and_evaluate(config, scratch / name.replace(' ', '_'))
    rows[name] = last['val/bits_per_char']
  return rows


def _dir_bytes(path):
  return sum(f.stat().st_size for f in pathlib.Path(path).rglob('*') if f.is_file())


def cost(args, scratch):
  mconfig = model_lib.config_for(args.cost_preset, vocab_size=13_568)
  mesh = sharding.make_mesh(sharding.default_config(), jax.devices()[:1])
  params = nnx.state(train.create_model(mconfig), nnx.Param)
  batch = train_bench.batches(1, rows=args.rows, seq_len=args.seq_len,
                              vocab=mconfig.vocab_size)[0]
  trainers, rows = {}, {}
  for name, fields, _ in METHODS:
    finetune = peft.default_config()
    finetune.update({**fields, 'base': 'random'})
    trainer = train.Trainer(mconfig, train.default_config(), mesh, finetune=finetune,
                            base_params=params)
    trained, total = peft.count(trainer.model, fields['mode'])
    memory = trainer.lower(args.rows, args.seq_len).compile().memory_analysis()
    peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes
            - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
    with checkpoint.Checkpointer(scratch / f'cost_{len(rows)}', checkpoint.default_config()) as c:
      c.save(1, trainer.state, force=True)
      c.wait()
      size = _dir_bytes(c.directory / '1')
    for _ in range(2):  # compile and warm up
      jax.block_until_ready(trainer.step(batch))
    trainers[name] = trainer
    rows[name] = {'trainable': trained, 'trainable_fraction': trained / total, 'times': [],
                  'peak_memory_bytes': peak, 'checkpoint_bytes': size}
  for _ in range(args.repeats):  # interleaved, so drifts of a shared machine hit all alike
    for name, trainer in trainers.items():
      start = time.perf_counter()
      for _ in range(args.timed_steps):
        jax.block_until_ready(trainer.step(batch))
      rows[name]['times'].append((time.perf_counter() - start) / args.timed_steps)
  full = statistics.median(rows['full']['times'])
  for row in rows.values():
    row['step_s'] = statistics.median(row.pop('times'))
    row['step_vs_full'] = row['step_s'] / full
    row['checkpoint_vs_full'] = row['checkpoint_bytes'] / rows['full']['checkpoint_bytes']
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--base', default='runs/tiny', help='a pretraining workdir')
  p.add_argument('--filters', default='author=李白', help='field=value[,field=value]')
  p.add_argument('--steps', type=int, default=200)
  p.add_argument('--data_dir', help="default: the base's")
  p.add_argument('--cost_preset', default='small')
  p.add_argument('--rows', type=int, default=16)
  p.add_argument('--seq_len', type=int, default=128)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--timed_steps', type=int, default=2)
  p.add_argument('--methods', help="some of the methods, e.g. 'lora r=8,full' (default all)")
  p.add_argument('--skip_quality', action='store_true')
  p.add_argument('--skip_cost', action='store_true')
  args = p.parse_args(argv)
  with tempfile.TemporaryDirectory() as scratch:
    scratch = pathlib.Path(scratch)
    bits = {} if args.skip_quality else quality(args, scratch)
    costs = {} if args.skip_cost else cost(args, scratch)
  print(f'\nbits/char on the validation poems with {args.filters} (base {args.base}, '
        f'{args.steps} steps); cost on `{args.cost_preset}`, {args.rows} x {args.seq_len}:')
  print(f'{"method":22s} {"bits/char":>9s} {"trainable":>11s} {"share":>7s} {"step":>7s} '
        f'{"memory":>9s} {"checkpoint":>11s}')
  for name in ['base (no fine-tuning)'] + [m[0] for m in METHODS]:
    c = costs.get(name)
    cols = (f'{c["trainable"]:>11,} {c["trainable_fraction"]:>7.2%} {c["step_vs_full"]:>6.2f}x '
            f'{c["peak_memory_bytes"] / 2**20:>7.0f}MB {c["checkpoint_vs_full"]:>10.2%}'
            ) if c else ''
    b = f'{bits[name]:9.3f}' if name in bits else ' ' * 9
    print(f'{name:22s} {b} {cols}')
  print(json.dumps({'bench': 'finetune', 'filters': args.filters, 'steps': args.steps,
                    'bits_per_char': bits, 'cost_preset': args.cost_preset, 'cost': costs},
                   ensure_ascii=False))


if __name__ == '__main__':
  main()
