"""Benchmark: new tokens/s of our sampler against Hugging Face `generate`, and the cost of forms.

    python -m poetjax.bench.sample [--repeats 5]

Part 1, same shape, same CPU, one process, interleaved: `sampler.generate` (jitted prefill +
`lax.while_loop` decode over a KV cache) against `transformers.GPT2LMHeadModel.generate`
(PyTorch, use_cache=True), d_model 384, 6 layers, 6 heads, vocab 8000, an 8-token prompt,
64 new tokens (no early stop), top-k 50 sampling, batch 1 and 16, float32.
Part 1b, the same in bfloat16 on both sides: our `prepare(model, 'bfloat16')` (bfloat16 KV
cache, its default) against the Hugging Face model cast with `.to(torch.bfloat16)`. On a CPU
with bfloat16 units both run faster than in float32 at batch 16.
Part 2: our sampler at the char tokenizer's vocab, 七言绝句 with hard 平仄 and rhyme against
unconstrained, batch 1 and 16: the cost of the constraints; and at batch 16 the cost of each
sampling filter there (top-p alone bisects over the whole vocabulary; with top-k, top-p and the
draw run over the best chunks of ids).
Part 3, the ceilings: a decode loop of the same model's matmuls alone (each step the kernels in
turn, nothing else, in the sampler's layout for that batch), interleaved with the rest, and at
batch 1 the memory roofline: param bytes per token over the DRAM bandwidth measured here. No
float32 sampler of this model on this CPU passes them.
Prints a table and one JSON line. Medians of interleaved repeats; quote the ratios.
"""

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from poetjax import constraints
from poetjax import metrics
from poetjax import model as model_lib
from poetjax import sampler
from poetjax import templates
from poetjax.data import tokenizer as tokenizer_lib

D_MODEL, LAYERS, HEADS, VOCAB, PROMPT, NEW, TOP_K = 384, 6, 6, 8000, 8, 64, 50
FILTERS = {'top-p 0.9': dict(top_k=0, top_p=0.9), 'top-k 50, top-p 0.9': dict(top_p=0.9),
           'top-k 50': {}, 'temperature alone': dict(top_k=0)}


def ours(vocab):
  config = model_lib.config_for('small', vocab_size=vocab, d_model=D_MODEL, num_layers=LAYERS,
                                num_heads=HEADS, mlp_dim=1024)
  return model_lib.Transformer(config, rngs=nnx.Rngs(params=0, dropout=1))


def run_ours(model, batch, constraint=None, prompt=None, top_k=TOP_K, top_p=1.0):
  prompts = prompt or [list(range(1, PROMPT + 1))] * batch
  out = sampler.generate(model, prompts, max_new_tokens=NEW, temperature=1.0, top_k=top_k,
                         top_p=top_p, seed=0, constraint=constraint)
  return int(out.lengths.sum())  # no stop ids: every row makes NEW tokens


def gpt2(torch, transformers, dtype=None):
  config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=PROMPT + NEW, n_embd=D_MODEL,
                                   n_layer=LAYERS, n_head=HEADS, n_inner=4 * D_MODEL,
                                   bos_token_id=0, eos_token_id=0)
  torch.manual_seed(0)
  net = transformers.GPT2LMHeadModel(config).eval().to(dtype or torch.float32)

  def run(batch):
    ids = torch.arange(1, PROMPT + 1).repeat(batch, 1)
    with torch.inference_mode():
      out = net.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=TOP_K,
                         max_new_tokens=NEW, min_new_tokens=NEW, use_cache=True,
                         pad_token_id=0, eos_token_id=None)
    return int((out.shape[1] - PROMPT) * batch)
  return run


def dram_bandwidth(repeats, megabytes=512):
  """Bytes/s read from an array far larger than the CPU's caches: the faster of a jitted sum
  (XLA runs it on one core) and a vector-matrix product (split over the cores; on 2 cores here
  2-3x the sum's rate), so that the roofline is not one core's share of the bandwidth."""
  x = jnp.ones((1024, megabytes * 2**20 // 4 // 1024), jnp.float32)
  v = jnp.ones((1, 1024), jnp.float32)
  total = jax.jit(jnp.sum)
  product = jax.jit(lambda v, x: v @ x, compiler_options=sampler.CPU_COMPILER_OPTIONS)
  seconds = min(statistics.median(metrics.call_seconds(fn, repeats))
                for fn in (lambda: total(x), lambda: product(v, x)))
  return x.nbytes / seconds


def _leaves(state):
  """(path names, array) of each param of a prepared model's state."""
  for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
    yield [str(getattr(k, 'key', k)) for k in path], x


def decode_bytes(model):
  """Param bytes a decode step reads: all but the embedding table (one row of it is looked up;
  prepare gave the head its own copy)."""
  return sum(x.nbytes for names, x in _leaves(model.state) if 'embedding' not in names)


def matmuls_alone(model, batch):
  """A peer that is a decode loop of matmuls alone: NEW steps of `batch` rows through every
  kernel of a prepared model in turn (each product feeds the next, as in the model), in the
  layout the sampler decodes that many rows with: [in, out], or at one row the [out, in]
  copies of `prepare`'s one_row (model.RowsFirst)."""
  rows_first = batch == 1 and model.one_row is not None
  kernels = []  # [in, out] each, or [out, in] when rows_first
  for names, x in _leaves(model.one_row()[1] if rows_first else model.state):
    if rows_first:
      if 'table' in names:  # RowsFirst tables, the head's included
        kernels.append(x)
    elif 'head' in names:
      kernels.append(x)  # [embed, vocab]
    elif 'kernel' in names:  # Einsum kernels: input axes first, two of them for attn.o
      inputs = 2 if 'o' in names else 1
      kernels.append(x.reshape(math.prod(x.shape[:inputs]), -1))

  @functools.partial(jax.jit, compiler_options=sampler.CPU_COMPILER_OPTIONS)  # as the sampler's
  def loop(x, kernels):
    def step(_, x):
      for k in kernels:
        k = k.T if rows_first else k  # in the jit, fused into the product as in the sampler
        x = jnp.tile(x, (1, -(-k.shape[0] // x.shape[1])))[:, :k.shape[0]] @ k
      return x[:, :D_MODEL] * 1e-3
    return jax.lax.fori_loop(0, NEW, step, x)

  rows = jnp.ones((batch, D_MODEL), jnp.float32)

  def run():
    jax.block_until_ready(loop(rows, kernels))
    return batch * NEW
  return run


def timed(fn, repeats, label, rates):
  """Appends new tokens/s of `repeats` calls of fn() to rates[label]."""
  for _ in range(repeats):
    start = time.perf_counter()
    tokens = fn()
    rates.setdefault(label, []).append(tokens / (time.perf_counter() - start))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args(argv)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    sys.exit(f'The Hugging Face peer needs PyTorch and transformers ({e}): '
             'pip install -r poetjax/bench/requirements.txt')
  torch.set_num_threads(os.cpu_count())
  transformers.logging.set_verbosity_error()

  # prepare(): split the model once, as the sample CLI does, not on every call.
  model, hf = sampler.prepare(ours(VOCAB)), gpt2(torch, transformers)
  model_bf16 = sampler.prepare(ours(VOCAB), 'bfloat16')
  hf_bf16 = gpt2(torch, transformers, torch.bfloat16)
  tok = tokenizer_lib.load('char')
  big = sampler.prepare(ours(-(-tok.vocab_size // 128) * 128))
  template = templates.lookup('七言绝句')
  prompt = [[tok.bos_id, tok.control_id('form', '七言绝句')]]
  peers = {}
  for batch in (1, 16):
    cons = constraints.build(tok, template, batch, vocab_size=big.config.vocab_size)
    peers[f'ours b{batch}'] = lambda b=batch: run_ours(model, b)
    peers[f'hf b{batch}'] = lambda b=batch: hf(b)
    peers[f'ours bf16 b{batch}'] = lambda b=batch: run_ours(model_bf16, b)
    peers[f'hf bf16 b{batch}'] = lambda b=batch: hf_bf16(b)
    peers[f'free b{batch}'] = lambda b=batch: run_ours(big, b, prompt=prompt * b)
    peers[f'form b{batch}'] = lambda b=batch, c=cons: run_ours(big, b, c, prompt * b)
    peers[f'matmuls b{batch}'] = matmuls_alone(model, batch)
  for label, filters in FILTERS.items():
    peers[f'filter {label}'] = lambda f=filters: run_ours(big, 16, prompt=prompt * 16, **f)
  for fn in peers.values():  # compile and warm up
    fn(), fn()
  rates = {}
  for r in range(args.repeats):
    for label in (list(peers) if r % 2 == 0 else list(peers)[::-1]):
      timed(peers[label], 1, label, rates)
  med = {k: statistics.median(v) for k, v in rates.items()}
  bandwidth = dram_bandwidth(args.repeats)
  param_bytes = decode_bytes(model)
  result = {'bench': 'sample', 'cpus': os.cpu_count(), 'jax': jax.__version__,
            'torch': torch.__version__, 'transformers': transformers.__version__,
            'd_model': D_MODEL, 'layers': LAYERS, 'heads': HEADS, 'vocab': VOCAB,
            'prompt': PROMPT, 'new_tokens': NEW, 'top_k': TOP_K, 'repeats': args.repeats,
            'form_vocab': big.config.vocab_size, 'dram_gb_per_s': round(bandwidth / 1e9, 1),
            'param_mb': round(param_bytes / 1e6, 1),
            'memory_roofline_b1': round(bandwidth / param_bytes)}
  print(f'{"batch":<7}{"ours tok/s":>12}{"HF tok/s":>10}{"ratio":>8}{"matmuls alone":>15}'
        f'{"bf16 ours":>11}{"bf16 HF":>9}{"ratio":>7}'
        f'{"free tok/s":>12}{"七绝 tok/s":>11}{"form cost":>11}')
  for batch in (1, 16):
    o, h, m = med[f'ours b{batch}'], med[f'hf b{batch}'], med[f'matmuls b{batch}']
    f, c = med[f'free b{batch}'], med[f'form b{batch}']
    ob, hb = med[f'ours bf16 b{batch}'], med[f'hf bf16 b{batch}']
    print(f'{batch:<7}{o:>12,.0f}{h:>10,.0f}{o / h:>8.2f}{m:>9,.0f} ({m / h:.1f}x)'
          f'{ob:>11,.0f}{hb:>9,.0f}{ob / hb:>7.2f}'
          f'{f:>12,.0f}{c:>12,.0f}{1 - c / f:>11.1%}')
    result.update({f'ours_b{batch}': round(o), f'hf_b{batch}': round(h),
                   f'ratio_b{batch}': round(o / h, 2), f'matmul_ceiling_b{batch}': round(m),
                   f'ceiling_ratio_b{batch}': round(m / h, 2), f'ours_bf16_b{batch}': round(ob),
                   f'hf_bf16_b{batch}': round(hb), f'ratio_bf16_b{batch}': round(ob / hb, 2),
                   f'unconstrained_b{batch}': round(f), f'constrained_b{batch}': round(c),
                   f'constraint_cost_b{batch}': round(1 - c / f, 3)})
  filters = {label: med[f'filter {label}'] for label in FILTERS}
  print('Filters at batch 16, vocab {:,}, new tokens/s: {}.'.format(
      big.config.vocab_size, ', '.join(f'{label} {rate:,.0f}' for label, rate in filters.items())))
  result['filters_b16'] = {label: round(rate) for label, rate in filters.items()}
  print(f'Memory roofline at batch 1: {param_bytes / 1e6:.0f} MB of float32 params per token over '
        f'{bandwidth / 1e9:.1f} GB/s of DRAM bandwidth = {bandwidth / param_bytes:,.0f} tok/s '
        f'({bandwidth / param_bytes / med["hf b1"]:.1f}x HF).')
  print(json.dumps(result))


if __name__ == '__main__':
  main()
