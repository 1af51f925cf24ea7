"""Benchmark: new tokens/s of our sampler against Hugging Face `generate`, and the cost of forms.

    python -m poetjax.bench.sample [--repeats 5]

Part 1, same shape, same CPU, one process, interleaved: `sampler.generate` (jitted prefill +
`lax.while_loop` decode over a KV cache) against `transformers.GPT2LMHeadModel.generate`
(PyTorch, use_cache=True), d_model 384, 6 layers, 6 heads, vocab 8000, an 8-token prompt,
64 new tokens (no early stop), top-k 50 sampling, batch 1 and 16, float32.
Part 2: our sampler at the char tokenizer's vocab, 七言绝句 with hard 平仄 and rhyme against
unconstrained, batch 1 and 16: the cost of the constraints.
Prints a table and one JSON line. Medians of interleaved repeats; quote the ratios.
"""

import argparse
import json
import os
import statistics
import sys
import time

from flax import nnx
import jax
import numpy as np

from poetjax import constraints
from poetjax import model as model_lib
from poetjax import sampler
from poetjax import templates
from poetjax.data import tokenizer as tokenizer_lib

D_MODEL, LAYERS, HEADS, VOCAB, PROMPT, NEW, TOP_K = 384, 6, 6, 8000, 8, 64, 50


def ours(vocab):
  config = model_lib.config_for('small', vocab_size=vocab, d_model=D_MODEL, num_layers=LAYERS,
                                num_heads=HEADS, mlp_dim=1024)
  return model_lib.Transformer(config, rngs=nnx.Rngs(params=0, dropout=1))


def run_ours(model, batch, constraint=None, prompt=None):
  prompts = prompt or [list(range(1, PROMPT + 1))] * batch
  out = sampler.generate(model, prompts, max_new_tokens=NEW, temperature=1.0, top_k=TOP_K,
                         seed=0, constraint=constraint)
  return int(out.lengths.sum())  # no stop ids: every row makes NEW tokens


def gpt2(torch, transformers):
  config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=PROMPT + NEW, n_embd=D_MODEL,
                                   n_layer=LAYERS, n_head=HEADS, n_inner=4 * D_MODEL,
                                   bos_token_id=0, eos_token_id=0)
  torch.manual_seed(0)
  net = transformers.GPT2LMHeadModel(config).eval()

  def run(batch):
    ids = torch.arange(1, PROMPT + 1).repeat(batch, 1)
    with torch.inference_mode():
      out = net.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=TOP_K,
                         max_new_tokens=NEW, min_new_tokens=NEW, use_cache=True,
                         pad_token_id=0, eos_token_id=None)
    return int((out.shape[1] - PROMPT) * batch)
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
  tok = tokenizer_lib.load('char')
  big = sampler.prepare(ours(-(-tok.vocab_size // 128) * 128))
  template = templates.lookup('七言绝句')
  prompt = [[tok.bos_id, tok.control_id('form', '七言绝句')]]
  peers = {}
  for batch in (1, 16):
    cons = constraints.build(tok, template, batch, vocab_size=big.config.vocab_size)
    peers[f'ours b{batch}'] = lambda b=batch: run_ours(model, b)
    peers[f'hf b{batch}'] = lambda b=batch: hf(b)
    peers[f'free b{batch}'] = lambda b=batch: run_ours(big, b, prompt=prompt * b)
    peers[f'form b{batch}'] = lambda b=batch, c=cons: run_ours(big, b, c, prompt * b)
  for fn in peers.values():  # compile and warm up
    fn(), fn()
  rates = {}
  for r in range(args.repeats):
    for label in (list(peers) if r % 2 == 0 else list(peers)[::-1]):
      timed(peers[label], 1, label, rates)
  med = {k: statistics.median(v) for k, v in rates.items()}
  result = {'bench': 'sample', 'cpus': os.cpu_count(), 'jax': jax.__version__,
            'torch': torch.__version__, 'transformers': transformers.__version__,
            'd_model': D_MODEL, 'layers': LAYERS, 'heads': HEADS, 'vocab': VOCAB,
            'prompt': PROMPT, 'new_tokens': NEW, 'top_k': TOP_K, 'repeats': args.repeats,
            'form_vocab': big.config.vocab_size}
  print(f'{"batch":<7}{"ours tok/s":>12}{"HF tok/s":>10}{"ratio":>8}'
        f'{"free tok/s":>12}{"七绝 tok/s":>11}{"form cost":>11}')
  for batch in (1, 16):
    o, h = med[f'ours b{batch}'], med[f'hf b{batch}']
    f, c = med[f'free b{batch}'], med[f'form b{batch}']
    print(f'{batch:<7}{o:>12,.0f}{h:>10,.0f}{o / h:>8.2f}{f:>12,.0f}{c:>12,.0f}'
          f'{1 - c / f:>11.1%}')
    result.update({f'ours_b{batch}': round(o), f'hf_b{batch}': round(h),
                   f'ratio_b{batch}': round(o / h, 2), f'unconstrained_b{batch}': round(f),
                   f'constrained_b{batch}': round(c), f'constraint_cost_b{batch}': round(1 - c / f, 3)})
  print(json.dumps(result))


if __name__ == '__main__':
  main()
