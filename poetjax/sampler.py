"""A plain sampler: temperature and top-k sampling, the whole sequence recomputed at each step.

    poems = sampler.sample(model, tok, ['<form:七言绝句>', '<dynasty:宋><tune:浣溪沙>'], seed=0)

Enough to see what a model writes at the end of training. It is one jitted loop over a fixed
[n, max_len] buffer; each row keeps its prompt and samples after it until eos.
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(nnx.jit, static_argnames=('top_k',))
def _generate(model, tokens, prompt_lens, allowed, key, temperature, eos_id, pad_id, top_k):
  n, max_len = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(max_len), tokens.shape)

  def step(t, carry):
    tokens, done, key = carry
    logits = model(tokens, positions)[:, t - 1].astype(jnp.float32) / temperature
    logits = jnp.where(allowed, logits, -jnp.inf)
    if top_k:
      kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
      logits = jnp.where(logits < kth, -jnp.inf, logits)
    key, sub = jax.random.split(key)
    sampled = jax.random.categorical(sub, logits)
    in_prompt = t < prompt_lens
    token = jnp.where(in_prompt, tokens[:, t], jnp.where(done, pad_id, sampled))
    done = done | (~in_prompt & (token == eos_id))
    return tokens.at[:, t].set(token), done, key

  tokens, _, _ = jax.lax.fori_loop(1, max_len, step, (tokens, jnp.zeros(n, bool), key))
  return tokens


def sample(model, tokenizer, prompts, *, max_len=64, temperature=0.8, top_k=40, seed=0):
  """One poem per prompt (control pieces and/or opening text); returns the generated text."""
  encoded = [[tokenizer.bos_id, *tokenizer.encode(p)] for p in prompts]
  longest = max(len(e) for e in encoded)
  if longest >= max_len:
    raise ValueError(f'A prompt takes {longest} tokens, not less than max_len={max_len}.')
  tokens = np.full((len(prompts), max_len), tokenizer.pad_id, np.int32)
  for row, ids in zip(tokens, encoded):
    row[:len(ids)] = ids
  # Never pad, bos, unk, or the ids past the tokenizer that round the model's vocab up.
  allowed = np.arange(model.config.vocab_size) < tokenizer.vocab_size
  allowed[[tokenizer.pad_id, tokenizer.bos_id, tokenizer.unk_id]] = False
  out = _generate(model, jnp.asarray(tokens), jnp.asarray([len(e) for e in encoded]),
                  jnp.asarray(allowed),
                  jax.random.key(seed), jnp.float32(temperature), tokenizer.eos_id,
                  tokenizer.pad_id, top_k)
  poems = []
  for ids, prompt in zip(np.asarray(out).tolist(), encoded):
    ids = ids[len(prompt):]
    poems.append(tokenizer.decode(ids[:ids.index(tokenizer.eos_id)] if tokenizer.eos_id in ids
                                  else ids))
  return poems
