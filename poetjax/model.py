"""A flax.nnx decoder-only transformer: RoPE, RMSNorm pre-norm, SwiGLU, grouped-query attention.

    config = model.config_for('small', vocab_size=tok.vocab_size, dtype='bfloat16')
    net = model.Transformer(config, rngs=nnx.Rngs(params=0, dropout=1))
    logits = net(batch['inputs'], batch['positions'], batch['segment_ids'])  # f32 [b, t, vocab]

Packed rows are handled by the inputs, not by the model's state: `positions` restart at 0 in
each poem (RoPE sees every poem from its start) and attention is causal within a segment.

Every param carries logical axis names (`LOGICAL_AXES`) for the sharding rules. Without a
mesh the params are plain arrays; under `jax.set_mesh(mesh)` and `nnx.logical_axis_rules(...)`
they are created already sharded (Flax's eager sharding).
"""

import dataclasses
import difflib
import math
from typing import Optional

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from poetjax import sharding

# Logical axes of the params. The sharding module maps them onto the mesh axes
# ('data', 'fsdp', 'tensor'); activations are left to XLA's sharding propagation.
LOGICAL_AXES = ('vocab', 'embed', 'mlp', 'heads', 'kv_heads', 'head_dim')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes and numerics of a Transformer. dtypes are names so the config stays JSON-able."""
  # The char tokenizer's 13,449 pieces rounded up to a multiple of 128 (whole matmul tiles).
  vocab_size: int = 13_568
  d_model: int = 384
  num_layers: int = 8
  num_heads: int = 6
  num_kv_heads: Optional[int] = None  # None = num_heads; fewer = grouped-query attention
  head_dim: Optional[int] = None  # None = d_model // num_heads
  mlp_dim: int = 1024
  dropout: float = 0.0
  tie_embeddings: bool = True
  rope_base: float = 10_000.0
  param_dtype: str = 'float32'
  dtype: str = 'float32'  # compute dtype: 'bfloat16' on GPU and TPU
  # None: the einsum attention below (fastest on a CPU); 'xla' or 'cudnn':
  # jax.nn.dot_product_attention with that implementation ('cudnn' on a GPU).
  attention_impl: Optional[str] = None
  remat: bool = False  # recompute each block in the backward pass to save activation memory
  norm_eps: float = 1e-6

  def __post_init__(self):
    # Frozen, so the derived defaults are set through object.__setattr__.
    if self.num_kv_heads is None:
      object.__setattr__(self, 'num_kv_heads', self.num_heads)
    if self.head_dim is None:
      object.__setattr__(self, 'head_dim', self.d_model // self.num_heads)
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f'num_heads ({self.num_heads}) must be a multiple of num_kv_heads '
                       f'({self.num_kv_heads}).')
    if self.head_dim % 2:
      raise ValueError(f'head_dim ({self.head_dim}) must be even for RoPE.')


PRESETS = {
    'tiny': ModelConfig(d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=192),
    'small': ModelConfig(),  # 19.4M params with the default vocab: trainable on a CPU
    'base': ModelConfig(d_model=768, num_layers=12, num_heads=12, mlp_dim=2048),  # 95.4M: one GPU
    'large': ModelConfig(d_model=1024, num_layers=24, num_heads=16, num_kv_heads=8,
                         mlp_dim=3584),  # 354M, a TPU slice; GQA halves the sampler's KV cache
}


def config_for(preset, **overrides):
  """PRESETS[preset] with some fields replaced; unknown names fail with close matches."""
  if preset not in PRESETS:
    raise ValueError(f'Unknown model preset {preset!r}; use one of {sorted(PRESETS)}.')
  fields = [f.name for f in dataclasses.fields(ModelConfig)]
  for name in overrides:
    if name not in fields:
      close = difflib.get_close_matches(name, fields, n=3)
      hint = f' Did you mean {" or ".join(close)}?' if close else ''
      raise ValueError(f'Unknown model config field {name!r}.{hint}')
  return dataclasses.replace(PRESETS[preset], **overrides)


def _dtypes(config):
  return dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))


def _partitioned(init, axes):
  """`init` for a param whose dims are named by `axes` (logical names, None = never sharded)."""
  # Flax's eager sharding needs a mesh; without one the params only keep their names.
  return nnx.with_partitioning(init, axes,
                               eager_sharding=not jax.sharding.get_abstract_mesh().empty)


def _dense_init(axes, in_axis, out_axis, scale=1.0):
  """Truncated-normal fan-in init of a kernel."""
  init = nnx.initializers.variance_scaling(scale, 'fan_in', 'truncated_normal',
                                           in_axis=in_axis, out_axis=out_axis)
  return _partitioned(init, axes)


def _einsum_of(spec, kernel, **kwargs):
  """An nnx.Einsum whose kernel is `kernel`: a rearranged copy of other params, for decoding.
  nnx.data, because an attribute first set to None (the tied head) is otherwise static."""
  return nnx.data(nnx.Einsum(spec, kernel.shape, rngs=nnx.Rngs(0), **kwargs,
                             kernel_init=lambda key, shape, dtype: kernel.astype(dtype)))


def _plain(projection):
  """Whether a projection is a bare nnx.Einsum on one device (not wrapped by LoRA or BitFit,
  not split over devices): the decoding rewrites below leave the others as they are."""
  return (type(projection) is nnx.Einsum
          and len(projection.kernel[...].sharding.device_set) == 1)


class RowsFirst(nnx.Module):
  """A projection 't<in>,<in><out>->t<out>' with its kernel stored as [out, in], for decoding
  one row on a CPU: XLA then fuses the vector-matrix product into a loop that reads each
  output's weights as one contiguous row, where the [in, out] kernel goes to Eigen's gemv
  (1.2x to 1.6x faster on this model's products at batch 1, by host; 3x to 4x slower at 2 to
  4 rows, so only for one).
  """

  def __init__(self, projection):
    lhs, rest = projection.einsum_str.split(',')
    rhs, out = rest.split('->')
    n_in = len(lhs) - 1
    if rhs[:n_in] != lhs[1:] or out != lhs[0] + rhs[n_in:]:
      raise ValueError(f'RowsFirst takes t<in>,<in><out>->t<out>, not {projection.einsum_str}')
    kernel = projection.kernel[...]
    self.out_shape = kernel.shape[n_in:]
    self.table = nnx.Param(kernel.reshape(math.prod(kernel.shape[:n_in]), -1).T)
    self.dtype = projection.dtype
    self.preferred_element_type = projection.preferred_element_type

  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    if self.dtype is not None:
      x = x.astype(self.dtype)
    table = self.table[...]
    if table.dtype != jnp.float32:
      # A CPU multiplies a narrower table in float32. Left alone, XLA hoists that convert of
      # the loop-invariant table out of the decode loop: every call wrote float32 copies of
      # all the weights and every step read them. Tied to x, the convert stays in the loop,
      # fused into the product, which reads the table as it lies: 1.58x the new tokens/s in
      # bfloat16 at batch 1.
      table, x = jax.lax.optimization_barrier((table, x))
    y = jnp.dot(x, table.T, preferred_element_type=self.preferred_element_type)
    return y.reshape(-1, *self.out_shape)


def _rope(positions, head_dim, base, first, stop):
  """sin and cos, f32 [b, t, 1, head_dim // 2], shared by every layer.

  The positions lie in first..stop-1 (the caller knows the bound), and sin and cos are read
  from a table of those rows built in numpy at trace time. A constant cannot be fused and
  recomputed: from positions XLA evaluates sin and cos again inside every layer's rotation,
  forward and backward (with `_attention`, the table made a CPU train step 5% faster). A
  position outside the bound reads NaN, so a wrong bound fails loudly, not a wrong rotation.
  """
  half = head_dim // 2
  angle = np.arange(first, stop)[:, None] * base ** (-np.arange(half) / half)
  return tuple(jnp.take(jnp.asarray(table, jnp.float32), positions - first, axis=0,
                        mode='fill', fill_value=jnp.nan)[:, :, None]
               for table in (np.sin(angle), np.cos(angle)))


def _rotate(x, sin, cos):
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def _per_token(projection, x):
  """projection applied to x [b, t, ...] as one [b * t, ...] array, reshaped back.

  The projections' einsums take the tokens as one dim: with b and t as two, the kernel's
  gradient contracts both and XLA's CPU backend copied the activations to do so (a CPU train
  step is 4% faster this way).
  """
  y = projection(x.reshape(-1, *x.shape[2:]))
  return y.reshape(*x.shape[:2], *y.shape[1:])


def _unstack(x, axis):
  """The two halves of a fused projection's output along its size-2 `axis`.

  lax.split's gradient is one concatenate; indexing's is a zero-padded copy per half plus an
  add (on a CPU that cut the kernels' time per train step by 14%).
  """
  return [jnp.squeeze(part, axis) for part in jax.lax.split(x, (1, 1), axis=axis)]


def _attention(q, k, v, mask):
  """Causal softmax attention within `mask`: q [b, t, heads, d], k and v [b, t, kv_heads, d].

  mask: bool [b, 1, t, t], the packing mask (the causal one is added here). Written out
  rather than through jax.nn.dot_product_attention because scaling q instead of the logits
  and one mask for causality and segments make the CPU train step faster (with the RoPE
  table, 5%). Query head n reads kv head n // (heads // kv_heads), as in that function.
  """
  b, t, heads, d = q.shape
  kv_heads = k.shape[2]
  q = (q * (1 / math.sqrt(d))).reshape(b, t, kv_heads, heads // kv_heads, d)
  logits = jnp.einsum('btkgd,bskd->bkgts', q, k, preferred_element_type=jnp.float32)
  keep = (mask & jnp.tril(jnp.ones((t, t), bool)))[:, :, None]  # [b, 1, 1, t, t]
  probs = jax.nn.softmax(jnp.where(keep, logits, -jnp.inf), axis=-1).astype(v.dtype)
  return jnp.einsum('bkgts,bskd->btkgd', probs, v).reshape(b, t, heads, d)


class Attention(nnx.Module):
  """Multi-head attention; grouped-query when num_kv_heads < num_heads."""

  def __init__(self, config, *, rngs):
    c = config
    kw = dict(**_dtypes(c), rngs=rngs)
    self.q = nnx.Einsum('te,ehd->thd', (c.d_model, c.num_heads, c.head_dim),
                        kernel_init=_dense_init(('embed', 'heads', 'head_dim'), 0, (1, 2)), **kw)
    # k and v in one matmul: [embed, 2, kv_heads, head_dim], the 2 never sharded.
    self.kv = nnx.Einsum('te,ekhd->tkhd', (c.d_model, 2, c.num_kv_heads, c.head_dim),
                         kernel_init=_dense_init(('embed', None, 'kv_heads', 'head_dim'),
                                                 0, (1, 2, 3)), **kw)
    # Residual-branch outputs start smaller so the stream's variance does not grow with depth.
    # Head dim 'i', not 'd': jnp.einsum orders the contracted dims alphabetically, and (d, h)
    # made XLA transpose this kernel and the activations at every call.
    self.o = nnx.Einsum('thi,hie->te', (c.num_heads, c.head_dim, c.d_model),
                        kernel_init=_dense_init(('heads', 'head_dim', 'embed'), (0, 1), 2,
                                                scale=1 / (2 * c.num_layers)), **kw)
    self.impl = c.attention_impl

  def _qkv(self, x, sin, cos):
    fused = getattr(self, 'qkv', None)
    if fused is None:
      q, kv = _per_token(self.q, x), _per_token(self.kv, x)
    else:  # one [d_model, (heads + 2 * kv_heads) * head_dim] matmul (fuse_qkv)
      q, kv = jnp.split(_per_token(fused, x), (math.prod(self.shapes[0]),), -1)
      q, kv = (y.reshape(*x.shape[:2], *shape) for y, shape in zip((q, kv), self.shapes))
    k, v = _unstack(kv, axis=2)
    return _rotate(q, sin, cos), _rotate(k, sin, cos), v

  def fuse_qkv(self):
    """For decoding (sampler.prepare): q and kv become one matmul, one pass over the input
    instead of two (1.06x the new tokens/s at batch 1 on a CPU). Left as they are when LoRA or
    BitFit wraps them or they are split over devices."""
    q, kv = self.q, self.kv
    if not (_plain(q) and _plain(kv)):
      return
    table = jnp.concatenate([m.kernel[...].reshape(m.kernel.shape[0], -1) for m in (q, kv)], 1)
    self.shapes = (q.kernel.shape[1:], kv.kernel.shape[1:])  # [heads, d], [2, kv_heads, d]
    self.qkv = _einsum_of('te,ef->tf', table, dtype=q.dtype, param_dtype=q.param_dtype)
    del self.q, self.kv

  def __call__(self, x, sin, cos, mask):
    q, k, v = self._qkv(x, sin, cos)
    if self.impl is None:
      return _per_token(self.o, _attention(q, k, v, mask))
    return _per_token(self.o, jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True,
                                                           implementation=self.impl))

  def extend(self, x, sin, cos, key_mask, cache, index):
    """Attention of x's t positions over the cache after writing their k, v at `index`.

    cache: (k, v), each [b * kv_heads, max_len, head_dim], a row's kv heads in turn: heads
    before positions, so that the per-step attention reads the cache as it lies (no transpose
    of the whole cache per token), and batch and heads as one dim, the one batch dim of the
    attention's products. With two, at batch 1 XLA reshaped the updated cache for them and
    copied each layer's cache four times a step (without: 1.06x to 1.09x the new tokens/s).
    key_mask: bool [b, t, max_len].
    """
    b, t, _ = x.shape
    q, k, v = self._qkv(x, sin, cos)
    rows, _, head_dim = cache[0].shape
    kv_heads = rows // b
    k_cache, v_cache = (
        jax.lax.dynamic_update_slice_in_dim(
            c, new.swapaxes(1, 2).reshape(rows, t, head_dim).astype(c.dtype), index, axis=1)
        for c, new in zip(cache, (k, v)))
    group = q.shape[2] // kv_heads
    # Query rows ordered (position, head-in-group) under each kv head.
    q = q.reshape(b, t, kv_heads, group, head_dim).transpose(0, 2, 1, 3, 4)
    q = q.reshape(rows, t * group, head_dim)
    logits = jnp.einsum('rqd,rsd->rqs', q, k_cache.astype(q.dtype),
                        preferred_element_type=jnp.float32) / math.sqrt(head_dim)
    mask = jnp.repeat(jnp.repeat(key_mask, group, axis=1), kv_heads, axis=0)  # like logits
    probs = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1).astype(q.dtype)
    out = jnp.einsum('rqs,rsd->rqd', probs, v_cache.astype(q.dtype))
    out = out.reshape(b, kv_heads, t, group, head_dim).transpose(0, 2, 1, 3, 4)
    return _per_token(self.o, out.reshape(b, t, kv_heads * group, head_dim)), (k_cache, v_cache)


class Mlp(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x)), gate and up in one matmul."""

  def __init__(self, config, *, rngs):
    c = config
    kw = dict(**_dtypes(c), rngs=rngs)
    self.gate_up = nnx.Einsum('te,ekm->tkm', (c.d_model, 2, c.mlp_dim),
                              kernel_init=_dense_init(('embed', None, 'mlp'), 0, (1, 2)), **kw)
    self.down = nnx.Einsum('tm,me->te', (c.mlp_dim, c.d_model),
                           kernel_init=_dense_init(('mlp', 'embed'), 0, 1,
                                                   scale=1 / (2 * c.num_layers)), **kw)

  def __call__(self, x):
    gate, up = _unstack(_per_token(self.gate_up, x), axis=2)
    return _per_token(self.down, jax.nn.silu(gate) * up)


def _norm(config, rngs):
  return nnx.RMSNorm(config.d_model, epsilon=config.norm_eps, **_dtypes(config),
                     scale_init=_partitioned(nnx.initializers.ones, ('embed',)),
                     rngs=rngs)


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, config, *, rngs):
    self.attn_norm = _norm(config, rngs)
    self.attn = Attention(config, rngs=rngs)
    self.mlp_norm = _norm(config, rngs)
    self.mlp = Mlp(config, rngs=rngs)
    self.dropout = nnx.Dropout(config.dropout, rngs=rngs)

  def __call__(self, x, sin, cos, mask, deterministic):
    h = self.attn(self.attn_norm(x), sin, cos, mask)
    x = x + self.dropout(h, deterministic=deterministic)
    h = self.mlp(self.mlp_norm(x))
    return x + self.dropout(h, deterministic=deterministic)

  def extend(self, x, sin, cos, key_mask, cache, index):
    h, cache = self.attn.extend(self.attn_norm(x), sin, cos, key_mask, cache, index)
    x = x + h
    return x + self.mlp(self.mlp_norm(x)), cache


# Up to this many rows, the tied output head multiplies table @ x^T rather than x @ table^T:
# on a CPU 1.5x faster at 16 rows (decoding a model not passed through sampler.prepare, which
# unties the head), even at 128, slower from 256 (training).
_FEW_ROWS = 128

_PROMPT_SEGMENT = -1  # the soft prompt's segment id: every segment attends to it


def _split_rows(x):
  """Keeps the residual stream split by batch rows over the mesh (when there is one).

  Without it XLA follows the FSDP-sharded weights and splits the embed dimension instead,
  keeping every row on every fsdp device: 3.5x the activation memory on a TPU FSDP mesh.
  """
  mesh = jax.sharding.get_abstract_mesh()
  axes = tuple(a for a in sharding.BATCH if not mesh.empty and a in mesh.axis_names)
  return jax.lax.with_sharding_constraint(x, jax.P(axes)) if axes else x


def _run_block(block, x, sin, cos, mask, deterministic):
  return _split_rows(block(x, sin, cos, mask, deterministic))


_run_block_remat = nnx.remat(_run_block, static_argnums=5)


class Transformer(nnx.Module):
  """Decoder-only transformer; `__call__` returns float32 logits [batch, length, vocab]."""

  def __init__(self, config, *, rngs):
    self.config = c = config
    # Small init keeps the first loss near log(vocab) when the embedding is the output head.
    self.embed = nnx.Embed(c.vocab_size, c.d_model, **_dtypes(c), rngs=rngs,
                           embedding_init=_partitioned(nnx.initializers.normal(0.02),
                                                       ('vocab', 'embed')))
    self.dropout = nnx.Dropout(c.dropout, rngs=rngs)
    self.blocks = nnx.List([Block(c, rngs=rngs) for _ in range(c.num_layers)])
    self.final_norm = _norm(c, rngs)
    self.head = None if c.tie_embeddings else nnx.Einsum(
        'te,ev->tv', (c.d_model, c.vocab_size), **_dtypes(c), rngs=rngs,
        kernel_init=_partitioned(nnx.initializers.normal(0.02), ('embed', 'vocab')),
        preferred_element_type=jnp.float32)
    self.prompt = nnx.data(None)  # prompt tuning's soft prompt [length, d_model] (poetjax/peft.py)

  def __call__(self, inputs, positions=None, segment_ids=None, *, deterministic=True):
    """inputs: int [b, t]; positions: int [b, t] in 0..t-1, restarting in each packed poem
    (None: 0..t-1); segment_ids: int [b, t], 0 for padding (None: one poem per row)."""
    c = self.config
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    if segment_ids is None:
      segment_ids = jnp.ones_like(inputs)
    x = self.embed(inputs)
    prompt = 0 if self.prompt is None else self.prompt.shape[0]
    if prompt:
      x, positions, segment_ids = self._prepend_prompt(x, positions, segment_ids)
    # Positions restart at 0 in each packed poem (the soft prompt's lie before 0).
    sin, cos = _rope(positions, c.head_dim, c.rope_base, -prompt, inputs.shape[1])
    # Causal (added by the attention call) AND same segment. Padding (segment 0) attends to
    # earlier padding and itself, so no row is fully masked and no NaN can appear.
    mask = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    if prompt:  # every poem of a packed row sees the soft prompt
      mask = mask | (segment_ids == _PROMPT_SEGMENT)[:, None, None, :]
    run = _run_block_remat if c.remat else _run_block
    x = _split_rows(self.dropout(x, deterministic=deterministic))
    for block in self.blocks:
      x = run(block, x, sin, cos, mask, deterministic)
    return self._logits(x[:, prompt:])

  def _prepend_prompt(self, x, positions, segment_ids):
    """The soft prompt before each row, at positions -length..-1.

    RoPE sees relative positions only, so every poem in a packed row (positions restart at 0)
    sees the prompt just before its own start, as the sampler places it.
    """
    b, n = x.shape[0], self.prompt.shape[0]
    prompt = jnp.broadcast_to(self.prompt[...].astype(x.dtype), (b, n, x.shape[2]))
    own = lambda part, value: jnp.concatenate(
        [jnp.broadcast_to(value, (b, n)).astype(part.dtype), part], axis=1)
    return (jnp.concatenate([prompt, x], axis=1), own(positions, jnp.arange(n) - n),
            own(segment_ids, _PROMPT_SEGMENT))

  def _logits(self, x):
    x = self.final_norm(x)
    if self.head is not None:
      return _per_token(self.head, x)
    # Accumulate and return in f32 even under bf16 compute: the loss needs f32 logits.
    table = self.embed.embedding[...].astype(x.dtype)
    if x.shape[0] * x.shape[1] <= _FEW_ROWS:  # decoding: the table as the left operand
      return _per_token(lambda x: jnp.einsum('ve,te->vt', table, x,
                                             preferred_element_type=jnp.float32).T, x)
    return _per_token(lambda x: jnp.einsum('te,ve->tv', x, table,
                                           preferred_element_type=jnp.float32), x)

  def fuse_qkv(self):
    """Each block's q and kv projections as one matmul (Attention.fuse_qkv), for decoding."""
    for block in self.blocks:
      block.attn.fuse_qkv()

  def rows_first(self):
    """Each plain projection and the output head as a RowsFirst: for decoding one row on a
    CPU (sampler.prepare). Call after untie_head and fuse_qkv."""
    owners = [(b.attn, ('qkv', 'q', 'kv', 'o')) for b in self.blocks]
    owners += [(b.mlp, ('gate_up', 'down')) for b in self.blocks] + [(self, ('head',))]
    for owner, names in owners:
      for name in names:
        if _plain(getattr(owner, name, None)):
          setattr(owner, name, nnx.data(RowsFirst(getattr(owner, name))))

  def untie_head(self):
    """Gives a tied model an output head of its own: the embedding, transposed to [d_model,
    vocab]. For decoding (sampler.prepare): a CPU multiplies few rows by it faster than by the
    table's transpose (at batch 16, 0.9 vs 1.2 ms a step here). Training keeps the tie."""
    if self.head is None:
      self.head = _einsum_of('te,ev->tv', self.embed.embedding[...].T, **_dtypes(self.config),
                             preferred_element_type=jnp.float32)

  def init_cache(self, batch, max_len, dtype=None):
    """An empty KV cache: per block (k, v), each [batch * kv_heads, max_len, head_dim]."""
    c = self.config
    shape = (batch * c.num_kv_heads, max_len, c.head_dim)
    dtype = dtype or c.dtype
    return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(c.num_layers)]

  def extend(self, inputs, positions, key_mask, cache, index, prompt_start=None,
             last_only=False):
    """Runs t new tokens per row against the cache (prefill: t = prompt; decode: t = 1).

    inputs, positions: int [b, t]; their k, v are written at cache positions index..index+t-1.
    key_mask: bool [b, t, max_len], which cache positions each new token attends to (the
    caller's: it knows each row's padding). prompt_start: int [b], where each row's soft
    prompt goes (the ids there are placeholders), for a model with one. Returns f32 logits
    [b, t, vocab] ([b, 1, vocab], the last position's, with last_only: a prefill needs no
    others, and at 16 rows of 8 tokens the whole head took 1.5% of 64 decode steps) and the
    cache.
    """
    # Each row's positions count from its first token, and the cache holds them all.
    sin, cos = _rope(positions, self.config.head_dim, self.config.rope_base, 0,
                     cache[0][0].shape[1])
    x = self.embed(inputs)
    if self.prompt is not None and prompt_start is not None:
      n = self.prompt.shape[0]
      offset = jnp.arange(inputs.shape[1])[None, :] - prompt_start[:, None]
      soft = self.prompt[...].astype(x.dtype)[jnp.clip(offset, 0, n - 1)]
      x = jnp.where(((offset >= 0) & (offset < n))[..., None], soft, x)
    new_cache = []
    for block, layer_cache in zip(self.blocks, cache):
      x, layer_cache = block.extend(x, sin, cos, key_mask, layer_cache, index)
      new_cache.append(layer_cache)
    return self._logits(x[:, -1:] if last_only else x), new_cache


def count_params(model):
  """Number of trainable parameters; works on an `nnx.eval_shape` model too."""
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def flops_per_token(config, seq_len):
  """Training FLOPs per token, the PaLM convention (Chowdhery et al. 2022, appendix B).

  6 * N + 12 * num_layers * seq_len * num_heads * head_dim, where N counts the matmul
  params (attention, MLP and the output head, counted once when tied; the embedding lookup
  and the norms are not matmuls), 6 = 2 FLOPs per multiply-add times forward plus twice
  that backward, and the attention term (q.k and p.v) is not halved for the causal mask.
  """
  c = config
  attn = c.d_model * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
  mlp = 3 * c.d_model * c.mlp_dim
  n = c.num_layers * (attn + mlp) + c.d_model * c.vocab_size
  return 6 * n + 12 * c.num_layers * seq_len * c.num_heads * c.head_dim
