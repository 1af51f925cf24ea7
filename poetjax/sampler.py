"""Jitted sampling with a KV cache: prefill in one call, then the whole decode loop in jit.

    out = sampler.generate(model, [[bos, *ids], ...], max_new_tokens=64, temperature=0.8,
                           top_p=0.9, seed=0, stop_ids=[eos], pad_id=pad)
    out.tokens  # int [n, max_new_tokens]: the new tokens, pad after a stop token

    poems = sampler.sample(model, tok, ['<form:七言绝句>'], seed=0)   # text in, text out

Prompts of different lengths are left-padded to one bucket: each row's RoPE positions start at
its own first token and its padding is masked out of attention, so a row samples as it would
alone. Decoding is a `lax.while_loop` over a preallocated cache ([b * kv_heads, size,
head_dim] per layer), one loop per cache size: 32 slots past the prompt, then doubling, so a
step's attention reads the slots filled so far rounded up, not max_len. It stops early once
every row has stopped. Logits go through, in order:
repetition penalty (CTRL's: a seen token's logit divided by the penalty if positive, multiplied
if not), the form constraints (poetjax/constraints.py), temperature, top-k, top-p; then argmax
(temperature 0) or a draw by the step-th uniform of the stream `key(seed + row)`, so a seed gives
the same poems on every run, a row the same poem whatever else is in its batch, and a shorter
max_new_tokens a prefix of a longer one. Beam search is `beam_search`.
"""

import dataclasses
import functools
from typing import Any, NamedTuple, Optional

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

PROMPT_BUCKET = 8  # prompt lengths are padded up to a multiple of this: fewer compiles


@dataclasses.dataclass
class Output:
  tokens: np.ndarray  # int32 [n, max_new_tokens], pad_id after the stop token
  lengths: np.ndarray  # new tokens per row, the stop token included
  logprobs: np.ndarray  # float32 [n]: the model's summed log-probability of the new tokens
  stuck: np.ndarray  # bool [n]: the constraints admitted no token (see constraints.explain)
  constraint_state: Optional[dict] = None  # the constraints' final state, per row


# XLA's CPU backend gives matmuls to YNNPACK by default; for the decode loop's few rows of
# float32 its Eigen path is faster: 1.26x the new tokens/s at batch 16 with prepare()'s head,
# 1.07x at batch 1 (interleaved A/B at the bench.sample shape). With bfloat16 params YNNPACK
# is the faster one: it multiplies the bfloat16 weights as they lie, where the Eigen path first
# writes float32 copies of them, every step: 1.32x to 1.47x at batch 16, 1.00x to 1.13x at 1.
CPU_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}
CPU_BFLOAT16_COMPILER_OPTIONS = {}


def cpu_compiler_options(state):
  """XLA's CPU options for decoding with these params: CPU_BFLOAT16_COMPILER_OPTIONS when any
  param is bfloat16, else CPU_COMPILER_OPTIONS."""
  bf16 = any(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state))
  return CPU_BFLOAT16_COMPILER_OPTIONS if bf16 else CPU_COMPILER_OPTIONS


def _jit(static_argnames):
  """jax.jit for fn(graphdefs, states, ...) (_inputs), with cpu_compiler_options(states) on a
  CPU: one jit per set of options, built on first use."""
  def wrap(fn):
    jits = {}

    @functools.wraps(fn)
    def call(graphdefs, states, *args, **kwargs):
      options = cpu_compiler_options(states) if jax.default_backend() == 'cpu' else {}
      key = tuple(sorted(options.items()))
      if key not in jits:
        jits[key] = jax.jit(fn, static_argnames=static_argnames, compiler_options=options)
      return jits[key](graphdefs, states, *args, **kwargs)
    return call
  return wrap


def _models(graphdefs, states):
  """(the prompt's model, the decode loop's model) from _inputs' graphdefs and states."""
  models = [nnx.merge(g, s) for g, s in zip(graphdefs, states)]
  return models[0], models[-1]


def _key_mask(pad, first, count, max_len):
  """bool [b, count, max_len]: new tokens at first.. attend to cache slots pad..themselves."""
  slots = jnp.arange(max_len)[None, None, :]
  query = (first + jnp.arange(count))[None, :, None]
  mask = (slots <= query) & (slots >= pad[:, None, None])
  return mask | (slots == query)  # a padding slot sees itself: no empty rows


def _prefill(model, tokens, pad, max_new, cache_dtype):
  """The prompt through the model -> (last logits [n, vocab], a cache of the decode loop's
  first size)."""
  n, length = tokens.shape
  max_len = _cache_spans(length, max_new)[0]
  cache = model.init_cache(n, max_len, cache_dtype)
  positions = jnp.maximum(jnp.arange(length)[None, :] - pad[:, None], 0)
  # A soft prompt (prompt tuning) fills the placeholder slots _inputs put after the padding.
  logits, cache = model.extend(tokens, positions, _key_mask(pad, 0, length, max_len), cache, 0,
                               prompt_start=pad, last_only=True)
  return logits[:, 0], cache


def _decode_step(model, token, pad, index, cache, max_len):
  """One new token per row at cache slot `index` -> next logits [n, vocab]."""
  logits, cache = model.extend(token[:, None], (index - pad)[:, None],
                               _key_mask(pad, index, 1, max_len), cache, index)
  return logits[:, 0], cache


def filter_logits(logits, *, temperature, top_k, top_p, use_top_p=True):
  """Temperature, then keep the top_k largest (0 = all), then the smallest set of mass top_p:
  the logits sample_tokens draws from, over the whole vocabulary (-inf: filtered out)."""
  def scattered(values, ids):
    if ids is None:
      return values
    full = jnp.full(logits.shape, -jnp.inf, values.dtype)
    return full.at[jnp.arange(len(ids))[:, None], ids].set(values, mode='drop')
  return _filtered(logits, scattered, temperature=temperature, top_k=top_k, top_p=top_p,
                   use_top_p=use_top_p)


def sample_tokens(uniform, logits, *, temperature, top_k, top_p, use_top_p=True):
  """One id per row drawn from filter_logits' logits by its uniform in [0, 1) (`draw`)."""
  def drawn(values, ids):
    pick = draw(uniform, values)
    return pick if ids is None else jnp.take_along_axis(ids, pick[:, None], 1)[:, 0]
  return _filtered(logits, drawn, temperature=temperature, top_k=top_k, top_p=top_p,
                   use_top_p=use_top_p)


TOP_K_CHUNK = 16


def _filtered(logits, pick, *, temperature, top_k, top_p, use_top_p):
  """pick(values, ids) of the filtered logits: values [rows, m], -inf where filtered out, for
  the ids [rows, m] (None: the whole vocabulary in order).

  With top-k, only the k + 1 best chunks of ids can hold what is kept (_best_chunks), so top-p
  and the draw run over those alone: at [16, 8000] with top-k 50 a sampling step took 0.84x
  the time of one over the whole vocabulary, with top-p 0.9 as well 0.37x (0.56x and 0.28x at
  [16, 13,568]), before the k-th largest came from TopK.
  """
  temperature = jnp.maximum(temperature, 1e-6)
  nucleus = lambda values: _nucleus(values, top_p) if use_top_p else values
  # Top-k compares the logits before the temperature: the same ids at any temperature.
  kept = lambda x, kth: jnp.where(x >= kth[:, None], x / temperature, -jnp.inf)
  if not top_k:
    return pick(nucleus(logits / temperature), None)
  if top_k * TOP_K_CHUNK >= logits.shape[-1]:  # a small vocabulary: the whole row
    return pick(nucleus(kept(logits, _kth_largest(logits, top_k))), None)
  values, ids, least = _best_chunks(logits, top_k)
  kth = _kth_largest(values, top_k)
  # A logit tied with the k-th in a chunk left out is kept too, as by a top-k of the row. A row
  # with fewer than k finite logits (constraints) has them all in the chunks.
  inside = (least < kth) | (kth == -jnp.inf)
  return jax.lax.cond(inside.all(), lambda: pick(nucleus(kept(values, kth)), ids),
                      lambda: pick(nucleus(kept(logits, kth)), None))


def _best_chunks(logits, count, chunk=TOP_K_CHUNK):
  """The logits in the `count` + 1 chunks of ids with the largest maxima: (values [rows,
  (count + 1) * chunk], their ids in increasing order, the least of those maxima [rows]).

  Chunk j holds ids j, j + w, j + 2w, ... (w = n / chunk, rounded up): a chunk's maximum is
  then an elementwise max over `chunk` contiguous slices. Every logit above the least maximum
  lies in the best `count` chunks; so do the k largest logits (count >= k). The extra chunk
  gives that least maximum without slicing top_k's output, which XLA turns into a sort of the
  whole row (10x slower on a CPU).
  """
  rows, n = logits.shape
  width = -(-n // chunk)
  blocks = jnp.pad(logits, ((0, 0), (0, width * chunk - n)), constant_values=-jnp.inf)
  blocks = blocks.reshape(rows, chunk, width)
  maxima, best = jax.lax.top_k(blocks.max(1), count + 1)  # callers: count < width
  # Chunks in id order put the values in id order: the draw then picks the same id for a
  # uniform as over the whole row, whichever path the rest of the batch sends it down.
  best = jnp.sort(best, axis=-1)
  values = jnp.take_along_axis(blocks, best[:, None, :], axis=2).reshape(rows, -1)
  ids = (best[:, None, :] + width * jnp.arange(chunk)[None, :, None]).reshape(rows, -1)
  return values, ids.astype(jnp.int32), maxima.min(-1)


def _kth_largest(values, k):
  """Per row, the k-th largest value (the largest t with at least k values >= t).

  XLA's TopK, its values reduced whole: over the best chunks at [16, 816] 0.64x the time of a
  bisection counting values >= t (0.36x at one row). Sliced, the same top_k becomes a sort.
  """
  return jax.lax.top_k(values, min(k, values.shape[-1]))[0].min(-1)  # k > n: keep them all


def _nucleus(values, top_p):
  """values, -inf outside the smallest set of the most probable ones whose mass reaches top_p."""
  probs = jax.nn.softmax(values, axis=-1)
  mass = lambda least: jnp.where(probs >= least[:, None], probs, 0.0).sum(-1)
  return jnp.where(probs >= _largest_threshold(probs, mass, top_p)[:, None], values, -jnp.inf)


def _largest_threshold(values, measure, target, iterations=40):
  """Per row, the largest t with measure(t) >= target, measure falling as t rises.

  A bisection instead of a sort over the vocabulary: compare-and-sum passes over [rows, vocab]
  cost a fraction of one on a CPU, and keep exactly the same tokens (the most probable ones
  whose mass first reaches top_p; ties stay together). A row stops once its measure hits the
  target exactly, its bounds meet in float32, or it has no finite value. The answer lies in
  [low, high) all along (high: past the largest value until it first moves), so it is the
  smallest value at or above low: a real value, not a midpoint, and no token is cut by rounding.
  A row with fewer values than the target keeps them all (low stays at its least value).
  """
  finite = jnp.isfinite(values)
  low = jnp.where(finite, values, jnp.inf).min(-1)  # measure(low) is everything: >= target
  high = jnp.where(finite, values, -jnp.inf).max(-1)

  def unsettled(bounds):
    i, low, high, exact = bounds
    mid = (low + high) / 2
    return (i < iterations) & ~(exact | (mid == low) | (mid == high)).all()

  def bisect(bounds):
    i, low, high, exact = bounds
    mid = (low + high) / 2
    at_mid = measure(mid)
    up, down = ~exact & (at_mid >= target), ~exact & (at_mid < target)
    return (i + 1, jnp.where(up, mid, low), jnp.where(down, mid, high),
            exact | (up & (at_mid == target)))

  low = jax.lax.while_loop(unsettled, bisect, (0, low, high, ~finite.any(-1)))[1]
  return jnp.where(values >= low[:, None], values, jnp.inf).min(-1)


def draw(uniform, logits):
  """One token per row by inverse CDF: one uniform in [0, 1) per row, not a Gumbel per token.

  The token is the last one of positive weight whose weight before it is at most u: always
  a token the filters kept, whatever the rounding of the sums. A row with every logit -inf
  (constraints left nothing: the caller has marked it stuck) gets id 0.
  """
  weights = jnp.exp(logits - logits.max(-1, keepdims=True))  # softmax's, unnormalised
  before = _exclusive_prefix_sums(weights)
  u = uniform * (before[:, -1] + weights[:, -1])
  ids = jnp.arange(logits.shape[-1])
  return jnp.maximum(jnp.where((weights > 0) & (before <= u[:, None]), ids, -1).max(-1), 0)


def _exclusive_prefix_sums(x, block=64):
  """Per row, the sum of the entries before each one: [rows, n] -> [rows, n].

  Two small matmuls with strictly triangular ones, within blocks of `block` and then over
  the blocks' totals: on a CPU a third of jnp.cumsum's time over a vocabulary. HIGHEST
  precision, so that TPUs and GPUs do not add in bfloat16.
  """
  rows, n = x.shape
  blocks = jnp.pad(x, ((0, 0), (0, -n % block))).reshape(rows, -1, block)
  strict = lambda size: jnp.triu(jnp.ones((size, size), x.dtype), 1)
  exact = jax.lax.Precision.HIGHEST
  within = jnp.einsum('rbi,ij->rbj', blocks, strict(block), precision=exact)
  offsets = jnp.einsum('rb,bc->rc', blocks.sum(-1), strict(blocks.shape[1]), precision=exact)
  return (within + offsets[:, :, None]).reshape(rows, -1)[:, :n]


def _without_banned(logits, banned, first_banned, is_stop, t, min_new):
  """-inf for the banned ids, a row's first_banned ids at its first new token, and the stop ids
  before the min_new-th."""
  return jnp.where(banned | (first_banned & (t == 0)) | (is_stop & (t < min_new)), -jnp.inf,
                   logits)


def penalize_repeats(logits, seen, penalty):
  return jnp.where(seen, jnp.where(logits > 0, logits / penalty, logits * penalty), logits)


# The decode loop's cache starts this many slots past the prompt and doubles its room as it
# fills: each step's attention reads the slots up to the next size, not the whole max_len.
# At batch 16 that attention reads the cache from DRAM: 1.08x to 1.10x the new tokens/s for
# 64 new tokens (two sizes), 0.94x to 1.17x for 128 (three; median of four runs 1.10x). Each
# size compiles its own loop body.
CACHE_ROOM = 32


def _cache_spans(length, max_new):
  """The cache sizes the decode loop runs with, in turn, for a prompt of `length` slots:
  length + 32, + 64, + 128, ... (CACHE_ROOM doubling), the last one length + max_new."""
  spans, room = [], CACHE_ROOM
  while room < max_new:
    spans.append(length + room)
    room *= 2
  return spans + [length + max_new]


def _grow(cache, size):
  """The cache with empty slots appended up to `size`: one copy per size, not per step."""
  grow = lambda c: jnp.pad(c, ((0, 0), (0, size - c.shape[1]), (0, 0)))
  return jax.tree.map(grow, cache)


def _by_row(fn, cache, rows):
  """fn applied to each cache array as [rows, kv_heads, ...] (its rows keep their kv heads
  as rows of their own: Attention.extend), then reshaped back."""
  by_row = lambda c: fn(c.reshape(rows, -1, *c.shape[1:])).reshape(-1, *c.shape[1:])
  return jax.tree.map(by_row, cache)


def _decode_loop(body, carry, length, max_new):
  """Runs body(carry, span) -> carry until step max_new or every row is done, a
  `lax.while_loop` per cache size (_cache_spans). carry: (step t, last logits, cache, _, _,
  done [rows], ...); its cache starts at the first size."""
  for span in _cache_spans(length, max_new):
    carry = (*carry[:2], _grow(carry[2], span), *carry[3:])
    carry = jax.lax.while_loop(lambda c, end=span - length: (c[0] < end) & ~c[5].all(),
                               functools.partial(body, span=span), carry)
  return carry


@_jit(static_argnames=('graphdefs', 'max_new', 'top_k', 'greedy', 'use_top_p', 'constrain',
                       'cache_dtype'))
def _generate(graphdefs, states, tokens, pad, banned, first_banned, is_stop, pad_id, seeds,
              temperature, top_p, repetition_penalty, tables, plan, cstate, min_new, *, max_new,
              top_k, greedy, use_top_p, constrain, cache_dtype):
  prompt_model, model = _models(graphdefs, states)
  n, length = tokens.shape
  rows = jnp.arange(n)
  last, cache = _prefill(prompt_model, tokens, pad, max_new, cache_dtype)
  vocab = last.shape[-1]
  in_prompt = jnp.arange(length)[None, :] >= pad[:, None]
  seen = jnp.zeros((n, vocab), bool).at[rows[:, None], tokens].max(in_prompt)
  # All draws' uniforms at once, a stream per row: random bits inside the loop cost each step
  # two small threefry loops. Step t reads the t-th number of its row's stream whatever
  # max_new is (threefry is counter-based), so a shorter run is a prefix of a longer one.
  # The keys are made here, not by the caller: a vmap outside jit traces anew on every call.
  uniforms = jax.vmap(lambda s: jax.random.uniform(jax.random.key(s), (max_new,)))(seeds)

  def body(carry, span):
    t, last, cache, seen, out, done, stuck, logprob, cstate = carry
    logits = _without_banned(last, banned, first_banned, is_stop, t, min_new)
    logits = penalize_repeats(logits, seen, repetition_penalty)
    if constrain is not None:
      bias = constrain.bias(tables, plan, cstate)
      logits = logits + bias
      newly_stuck = ~done & ~jnp.isfinite(logits).any(-1)
      stuck, done = stuck | newly_stuck, done | newly_stuck
    if greedy:
      token = jnp.argmax(logits, axis=-1)
    else:
      token = sample_tokens(uniforms[:, t], logits, temperature=temperature, top_k=top_k,
                            top_p=top_p, use_top_p=use_top_p)
    token = jnp.where(done, pad_id, token).astype(jnp.int32)
    logprob = logprob + jnp.where(done, 0.0, last[rows, token] - jax.nn.logsumexp(last, -1))
    if constrain is not None:
      cstate = constrain.advance(tables, plan, cstate, token, done)
    out = out.at[:, t].set(token)
    seen = seen.at[rows, token].set(True)
    done = done | is_stop[token]
    last, cache = _decode_step(model, token, pad, length + t, cache, span)
    return t + 1, last, cache, seen, out, done, stuck, logprob, cstate

  out = jnp.full((n, max_new), pad_id, jnp.int32)
  carry = (0, last, cache, seen, out, jnp.zeros(n, bool), jnp.zeros(n, bool),
           jnp.zeros(n, jnp.float32), cstate)
  carry = _decode_loop(body, carry, length, max_new)
  _, _, _, _, out, _, stuck, logprob, cstate = carry
  return out, logprob, stuck, cstate


class Prepared(NamedTuple):
  graphdef: Any
  state: Any
  config: Any
  one_row: Any = None  # () -> (graphdef, state) of the model for decoding one row on a CPU


def _rows_first(graphdef, state):
  """The model with its projections as RowsFirst (Transformer.rows_first): a CPU decodes one
  row 1.13x (Zen 3) and 1.28x to 1.49x (Zen 4) faster with them (A/B at the bench.sample
  shape, the same tokens); its products run 4x slower at two rows or more, so batches and the
  prompt's tokens keep the plain kernels. Built on first use: it is a transposed copy of the
  projections."""
  view = nnx.merge(graphdef, state)
  view.rows_first()
  return nnx.split(view)


def prepare(model, dtype=None):
  """(graphdef, state, config) of a model, for repeated calls: nnx.split walks the whole module
  graph, which costs more than decoding a short poem. A tied model gets its head as a copy of
  the embedding (Transformer.untie_head), and q and kv become one matmul (fuse_qkv). dtype
  (e.g. 'bfloat16'): the model rebuilt to compute and keep its params in that dtype, halving
  the bytes a decode step reads. On a CPU, a prompt decoded alone runs its decode loop with the
  projections' kernels stored transposed (_rows_first). Pass the result wherever a model is
  taken. The model itself is left as it was.
  """
  config = model.config
  view = nnx.merge(*nnx.split(model))  # new modules over the same arrays
  view.untie_head()
  view.fuse_qkv()
  cast = dtype is not None and jnp.dtype(dtype) != jnp.dtype(config.dtype)
  if cast:
    config = dataclasses.replace(config, dtype=jnp.dtype(dtype).name,
                                 param_dtype=jnp.dtype(dtype).name)
    # Projections sum in float32 and return it, as GPU and TPU matmul units do; attention
    # over the cache then runs in float32. With bfloat16 results XLA's CPU backend converted
    # the weights and multiplied in float32: this is 1.3x faster at batch 16 (AVX512-BF16).
    view.set_attributes(dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype),
                        preferred_element_type=jnp.float32, raise_if_not_found=False)
    view.config = config
  graphdef, state = nnx.split(view)
  if cast:
    state = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
                         else x, state)
  one_row = functools.cache(functools.partial(_rows_first, graphdef, state))
  return Prepared(graphdef, state, config, one_row if jax.default_backend() == 'cpu' else None)


def unpack(model):
  """(graphdef, state, config, one_row) of a model or of prepare's result (one_row: None
  for a model not prepared)."""
  if isinstance(model, Prepared):
    return model
  graphdef, state = nnx.split(model)
  return Prepared(graphdef, state, model.config)


def pad_prompts(prompts, pad_id, bucket=PROMPT_BUCKET):
  """Left-pads id lists to one length (a multiple of bucket) -> (tokens [n, P], pad [n])."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError('Every prompt needs at least one token (the bos id).')
  length = -(-max(len(p) for p in prompts) // bucket) * bucket
  tokens = np.full((len(prompts), length), pad_id, np.int32)
  for row, ids in zip(tokens, prompts):
    row[length - len(ids):] = ids
  return tokens, np.asarray([length - len(p) for p in prompts], np.int32)


def _per_row_seeds(seed, rows):
  if np.ndim(seed) == 0:
    return [int(seed) + r for r in range(rows)]
  if len(seed) != rows:
    raise ValueError(f'{len(seed)} seeds for {rows} prompts; give one seed or one per prompt.')
  return [int(s) for s in seed]


def generate(model, prompts, *, max_new_tokens=64, temperature=1.0, top_k=0, top_p=1.0,
             repetition_penalty=1.0, seed=0, stop_ids=(), pad_id=0, banned_ids=(),
             min_new_tokens=0, start_ids=(), start_banned_ids=(), constraint=None,
             cache_dtype=None):
  """Samples up to max_new_tokens after each prompt (a list of token ids per row).

  temperature 0 is greedy. min_new_tokens: the stop ids are banned until this many new tokens
  (1 keeps a poem from being empty). start_banned_ids are banned as the first new token of a
  row whose prompt ends with one of start_ids (no poem starts with a comma after its bos).
  seed: an int (row r draws from seed + r) or one per row, so a row samples the same tokens
  whatever else is in the batch. constraint: a constraints.Constraint built for these rows
  (form, tones, rhyme, acrostic) or None. The model may be sharded: its arrays keep their
  placement.
  """
  _check_lengths(max_new_tokens, min_new_tokens)
  if not 0 < top_p <= 1:
    raise ValueError(f'top_p must be in (0, 1], not {top_p}.')
  if repetition_penalty <= 0:
    raise ValueError(f'repetition_penalty must be positive, not {repetition_penalty}.')
  inputs = _inputs(model, prompts, pad_id, banned_ids, stop_ids, start_ids, start_banned_ids,
                   rows=len(prompts))
  seeds = np.asarray(_per_row_seeds(seed, len(prompts)), np.uint32)
  rule, tables, plan, cstate = _constraint_parts(constraint)
  out, logprob, stuck, cstate = _generate(
      *inputs, seeds, jnp.float32(temperature), jnp.float32(top_p),
      jnp.float32(repetition_penalty), tables, plan, cstate, jnp.int32(min_new_tokens),
      max_new=int(max_new_tokens), top_k=int(top_k), greedy=temperature == 0,
      use_top_p=top_p < 1, constrain=rule, cache_dtype=cache_dtype)
  return _output(out, logprob, stuck, cstate, stop_ids, max_new_tokens)


def _check_lengths(max_new_tokens, min_new_tokens):
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be at least 1, not {max_new_tokens}.')
  if min_new_tokens < 0:
    raise ValueError(f'min_new_tokens must be at least 0, not {min_new_tokens}.')


def _vocab_mask(ids, vocab):
  """bool [vocab]: True at the ids (ids outside the vocabulary can never be drawn)."""
  mask = np.zeros(vocab, bool)
  mask[[i for i in ids if 0 <= i < vocab]] = True
  return mask


def _inputs(model, prompts, pad_id, banned_ids, stop_ids, start_ids, start_banned_ids,
            rows):
  """(graphdefs, states, tokens, pad, banned mask, per-row first-token mask, stop mask, pad id)
  as the jitted loops take them, for a decode loop of `rows` rows. graphdefs and states: one
  model for the prompt and the loop, or two: a single row decodes with the RowsFirst kernels
  (one_row), but its prompt's tokens go through the plain ones, 2.4x faster at 8 tokens."""
  graphdef, state, config, one_row = unpack(model)
  graphdefs, states = (graphdef,), (state,)
  if rows == 1 and one_row is not None:
    graphdefs, states = zip((graphdef, state), one_row())
  vocab = config.vocab_size
  bad = sorted({i for p in prompts for i in p if not 0 <= i < vocab})
  if bad:
    raise ValueError(f'Prompt token ids {bad[:10]} are outside the model vocabulary '
                     f'(0..{vocab - 1}).')
  # A soft prompt's vectors go in front of each prompt, in slots held by placeholder ids.
  soft = state['prompt'].shape[0] if 'prompt' in state else 0
  tokens, pad = pad_prompts([[pad_id] * soft + list(p) for p in prompts], pad_id)
  start_ids = set(start_ids)
  starts = np.asarray([p[-1] in start_ids for p in prompts])
  first_banned = starts[:, None] & _vocab_mask(start_banned_ids, vocab)[None]
  return (graphdefs, states, jnp.asarray(tokens), jnp.asarray(pad),
          jnp.asarray(_vocab_mask(banned_ids, vocab)), jnp.asarray(first_banned),
          jnp.asarray(_vocab_mask(stop_ids, vocab)), jnp.int32(pad_id))


def _constraint_parts(constraint):
  if constraint is None:
    return None, None, None, None
  return constraint.rule, constraint.tables, constraint.plan, constraint.state


def _output(out, logprob, stuck, cstate, stop_ids, max_new_tokens):
  out = np.asarray(out)
  stops = np.isin(out, list(stop_ids)) if stop_ids else np.zeros_like(out, bool)
  lengths = np.where(stops.any(1), stops.argmax(1) + 1, max_new_tokens)
  return Output(out, lengths, np.asarray(logprob), np.asarray(stuck),
                None if cstate is None else jax.tree.map(np.asarray, cstate))


def banned_ids(tokenizer, vocab_size):
  """Ids a poem never contains: pad/bos/unk, control pieces, the style labels and sentinels,
  the vocab's round-up (eos is allowed)."""
  banned = [tokenizer.pad_id, tokenizer.bos_id, tokenizer.unk_id, *tokenizer.label_ids]
  banned += [i for i in range(tokenizer.vocab_size) if tokenizer.sp.is_control(i)
             and i != tokenizer.eos_id]
  banned += list(range(tokenizer.vocab_size, vocab_size))
  return sorted({i for i in banned if i >= 0})


# A line of four characters and its mark. Shorter texts are fragments: 87 of the corpus's
# 338,698 poems (2 to 4 characters).
MIN_POEM_TOKENS = 5


def text_options(tokenizer, vocab_size):
  """generate/beam_search keywords for a poem: stop at eos (not before MIN_POEM_TOKENS), pad
  with pad, ban non-text ids, and punctuation where the text starts (after bos or a label)."""
  return dict(stop_ids=[tokenizer.eos_id], pad_id=tokenizer.pad_id,
              banned_ids=banned_ids(tokenizer, vocab_size), min_new_tokens=MIN_POEM_TOKENS,
              start_ids=tokenizer.start_ids,
              start_banned_ids=tokenizer.punct_start_ids)


def sample(model, tokenizer, prompts, *, max_len=64, temperature=0.8, top_k=40, top_p=1.0,
           seed=0):
  """One poem per prompt (control pieces and/or opening text); returns the generated text."""
  encoded = [[tokenizer.bos_id, *tokenizer.encode(p)] for p in prompts]
  model = unpack(model)
  out = generate(model, encoded, max_new_tokens=max_len, temperature=temperature, top_k=top_k,
                 top_p=top_p, seed=seed, **text_options(tokenizer, model.config.vocab_size))
  return texts(tokenizer, out)


def texts(tokenizer, out):
  """The text of each row of an Output, without its eos."""
  return [tokenizer.decode([i for i in row[:n] if i != tokenizer.eos_id])
          for row, n in zip(out.tokens.tolist(), out.lengths)]


@_jit(static_argnames=('graphdefs', 'max_new', 'beams', 'constrain', 'cache_dtype'))
def _beam_search(graphdefs, states, tokens, pad, banned, first_banned, is_stop, pad_id, tables,
                 plan, cstate, min_new, *, max_new, beams, constrain, cache_dtype):
  prompt_model, model = _models(graphdefs, states)
  n, length = tokens.shape
  rows = n * beams
  last, cache = _prefill(prompt_model, tokens, pad, max_new, cache_dtype)
  repeat = lambda x: jnp.repeat(x, beams, axis=0)
  last, cache, pad, first_banned = (repeat(last), _by_row(repeat, cache, n), repeat(pad),
                                    repeat(first_banned))
  vocab = last.shape[-1]
  is_pad = jnp.arange(vocab) == pad_id

  def body(carry, span):
    t, last, cache, scores, out, done, cstate = carry
    logp = jax.nn.log_softmax(_without_banned(last, banned, first_banned, is_stop, t, min_new))
    if constrain is not None:
      logp = logp + constrain.bias(tables, plan, cstate)
    # A finished beam only extends with pad, at no cost, so its score stays put.
    logp = jnp.where(done[:, None], jnp.where(is_pad, 0.0, -jnp.inf), logp)
    total = (scores.reshape(rows, 1) + logp).reshape(n, beams * vocab)
    scores, flat = jax.lax.top_k(total, beams)  # [n, beams]
    parent = (flat // vocab + jnp.arange(n)[:, None] * beams).reshape(rows)
    token = (flat % vocab).reshape(rows).astype(jnp.int32)
    pick = lambda x: x[parent]
    cache = _by_row(pick, cache, rows)
    out, done, cstate = jax.tree.map(pick, (out, done, cstate))
    if constrain is not None:
      cstate = constrain.advance(tables, plan, cstate, token, done)
    out = out.at[:, t].set(jnp.where(done, pad_id, token))
    done = done | is_stop[token]
    last, cache = _decode_step(model, token, pad, length + t, cache, span)
    return t + 1, last, cache, scores, out, done, cstate

  # Every beam starts as the same prompt: only the first may expand at step 0.
  scores = jnp.tile(jnp.where(jnp.arange(beams) == 0, 0.0, -jnp.inf), (n, 1))
  out = jnp.full((rows, max_new), pad_id, jnp.int32)
  carry = (0, last, cache, scores, out, jnp.zeros(rows, bool), cstate)
  # Once every beam is done, more steps would only append pad at no cost: the loop stops.
  _, _, _, scores, out, _, cstate = _decode_loop(body, carry, length, max_new)
  best = jnp.argmax(scores, axis=-1) + jnp.arange(n) * beams
  return out[best], scores.max(-1), jax.tree.map(lambda x: x[best], cstate)


def beam_search(model, prompts, *, num_beams=4, max_new_tokens=64, stop_ids=(), pad_id=0,
                banned_ids=(), min_new_tokens=0, start_ids=(), start_banned_ids=(),
                constraint=None, cache_dtype=None):
  """The highest log-probability continuation per prompt found by a beam of num_beams.

  Works with constraints (each beam keeps its own state); `Output.logprobs` is the beam's
  score: the model's log-probability plus any soft tone penalties. min_new_tokens, start_ids
  and start_banned_ids: as in `generate`.
  """
  if num_beams < 1:
    raise ValueError(f'num_beams must be at least 1, not {num_beams}.')
  _check_lengths(max_new_tokens, min_new_tokens)
  inputs = _inputs(model, prompts, pad_id, banned_ids, stop_ids, start_ids, start_banned_ids,
                   rows=len(prompts) * num_beams)
  # Each beam keeps its own constraint state: the rows of the constraint, num_beams times.
  rule, tables, plan, cstate = _constraint_parts(
      constraint and constraint.repeat_rows(num_beams))
  out, scores, cstate = _beam_search(
      *inputs, tables, plan, cstate, jnp.int32(min_new_tokens), max_new=int(max_new_tokens),
      beams=int(num_beams), constrain=rule, cache_dtype=cache_dtype)
  return _output(out, scores, ~np.isfinite(np.asarray(scores)), cstate, stop_ids,
                 max_new_tokens)
