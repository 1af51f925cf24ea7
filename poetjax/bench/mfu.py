"""Benchmark: tokens/s and MFU of the train step on this machine's accelerator (synthetic rows).

    python -m poetjax.bench.mfu --preset small --batch 128 --seq_len 256     # small_gpu's shape
    python -m poetjax.bench.mfu --preset base --batch 64 --seq_len 1024

The real `train.Trainer` step (bfloat16 compute, f32 params and AdamW, clipping, z-loss) on
random full rows, all devices in one data-parallel mesh; no input pipeline, so this is the
ceiling the pipeline has to feed. MFU = achieved FLOP/s (`model.flops_per_token`, attention
included) over the devices' dense bf16 peak (`metrics.PEAK_FLOPS`). Prints a table and one
JSON line; see the README's GPU section for the figures measured on an H100.
"""

import argparse
import json
import statistics
import time

import jax

from poetjax import metrics
from poetjax import model as model_lib
from poetjax import sharding
from poetjax import train
from poetjax.bench import train as bench_train


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', default='small', choices=sorted(model_lib.PRESETS))
  parser.add_argument('--batch', type=int, default=128, help='global rows per step')
  parser.add_argument('--seq_len', type=int, default=256)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--attention', default='cudnn', help="attention_impl: cudnn, xla or ''")
  parser.add_argument('--remat', action='store_true')
  parser.add_argument('--grad_accum', type=int, default=1)
  parser.add_argument('--steps', type=int, default=10, help='steps per timed repeat')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args(argv)

  config = model_lib.config_for(args.preset, dtype=args.dtype, remat=args.remat,
                                attention_impl=args.attention or None)
  train_config = train.default_config()
  train_config.grad_accum = args.grad_accum
  mesh = sharding.make_mesh(sharding.default_config())
  trainer = train.Trainer(config, train_config, mesh, seed=0)
  batches = [trainer.place(b) for b in bench_train.batches(2, args.batch, args.seq_len,
                                                          config.vocab_size)]
  compile_start = time.perf_counter()
  jax.block_until_ready(trainer.step(batches[0]))
  compile_s = time.perf_counter() - compile_start
  for i in range(3):  # warm-up
    jax.block_until_ready(trainer.step(batches[i % 2]))

  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    for i in range(args.steps):
      out = trainer.step(batches[i % 2])
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / args.steps)

  step_s = statistics.median(times)
  tokens_per_s = args.batch * args.seq_len / step_s
  flops = model_lib.flops_per_token(config, args.seq_len)
  devices = jax.devices()
  peak = metrics.device_peak_flops(devices[0]) * len(devices)
  mfu = tokens_per_s * flops / peak
  params = model_lib.count_params(trainer.model)
  print(f'{"device":<10}{"preset":<8}{"params":>8}{"rows x seq":>12}{"step ms":>9}'
        f'{"tokens/s":>12}{"TFLOP/s":>9}{"MFU":>7}')
  print(f'{devices[0].device_kind[:9]:<10}{args.preset:<8}{params / 1e6:>7.1f}M'
        f'{f"{args.batch}x{args.seq_len}":>12}{step_s * 1e3:>9.1f}{tokens_per_s:>12,.0f}'
        f'{tokens_per_s * flops / 1e12 / len(devices):>9.1f}{mfu:>7.1%}')
  print(json.dumps({
      'bench': 'mfu', 'device': devices[0].device_kind, 'devices': len(devices),
      'jax': jax.__version__, 'preset': args.preset, 'params': params, 'batch': args.batch,
      'seq_len': args.seq_len, 'dtype': args.dtype, 'attention': args.attention,
      'remat': args.remat, 'grad_accum': args.grad_accum, 'compile_s': round(compile_s, 1),
      'step_ms': round(step_s * 1e3, 2), 'step_ms_repeats': [round(t * 1e3, 2) for t in times],
      'tokens_per_s': round(tokens_per_s), 'flops_per_token': flops,
      'peak_flops_per_device': peak / len(devices), 'mfu': round(mfu, 4),
      'final_loss': float(out['loss'])}))


if __name__ == '__main__':
  main()
