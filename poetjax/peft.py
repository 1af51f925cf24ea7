"""Fine-tuning methods on a pretrained Transformer: full, LoRA, BitFit and prompt tuning.

    peft.apply(net, config.finetune, rngs=nnx.Rngs(0))   # in place: wraps layers, adds params
    trainable = peft.trainable(config.finetune.mode)     # an nnx filter: what the optimizer sees
    plain = peft.merge(net)                              # LoRA folded into the base kernels

Modes (`finetune.mode`):
  none    pretraining from scratch (no base);
  full    every param trains, starting from the base;
  lora    a low-rank update beside each matched projection, W x + (alpha / r) B A x, with A
          random and B zero, so step 0 is the base model exactly (Hu et al. 2021);
  bitfit  biases and RMSNorm scales (Ben Zaken et al. 2022). The model has no biases, so a zero
          bias is added after each matched projection: step 0 is again the base exactly;
  prompt  prompt_length learned vectors before every row (Lester et al. 2021), initialised
          from the embeddings of random vocabulary pieces.
Outside the trainable set everything is frozen: no gradient, no optimizer state, and not in the
fine-tuning checkpoint, which holds the trainable arrays, their optimizer state and the RNG.
Targets are regular expressions searched in module paths such as 'blocks.3.attn.q'.
"""

import re

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

MODES = ('none', 'full', 'lora', 'bitfit', 'prompt')
ATTENTION = (r'attn\.(q|kv|o)$',)
ALL_PROJECTIONS = ATTENTION + (r'mlp\.(gate_up|down)$',)


class BiasParam(nnx.Param):
  """A bias that BitFit adds to a bias-free projection."""


class PromptParam(nnx.Param):
  """Prompt tuning's soft prompt, [prompt_length, d_model]."""


def default_config():
  c = ml_collections.ConfigDict()
  c.mode = 'none'
  # A training workdir (its config.json gives the model), or one of its
  # checkpoints/<step> directories. Relative paths are taken from the current directory.
  c.base = ml_collections.config_dict.placeholder(str)
  c.base_step = 'best'  # 'best', 'latest' or a step number; ignored for a checkpoints/<step> path
  # LoRA and BitFit targets. Attention only by default, as Hu et al. found enough; at r=8 that
  # is 0.9% of the small model's params (2.2% with the MLP too: ALL_PROJECTIONS).
  c.targets = ATTENTION
  c.lora_rank = 8
  c.lora_alpha = 16.0
  c.lora_dropout = 0.0
  c.prompt_length = 16
  c.seed = 0  # adapter init and LoRA dropout
  return c


def check_config(config):
  if config.mode not in MODES:
    raise ValueError(f'Unknown finetune.mode {config.mode!r}; use one of {MODES}.')
  if config.mode != 'none' and not config.base:
    raise ValueError(f'finetune.mode={config.mode!r} needs a pretrained base: set '
                     '--config.finetune.base to a training workdir.')
  if config.mode == 'lora' and config.lora_rank < 1:
    raise ValueError(f'finetune.lora_rank must be at least 1, not {config.lora_rank}.')
  if config.mode == 'prompt' and config.prompt_length < 1:
    raise ValueError(f'finetune.prompt_length must be at least 1, not {config.prompt_length}.')


def _is_norm_scale(path, value):
  return isinstance(value, nnx.Param) and path[-1] == 'scale'


def trainable(mode):
  """The nnx filter of the params that train in `mode`."""
  return {
      'none': nnx.Param,
      'full': nnx.Param,
      'lora': nnx.LoRAParam,
      'bitfit': nnx.Any(BiasParam, _is_norm_scale),
      'prompt': PromptParam,
  }[mode]


def frozen(mode):
  """The params that stay as the base has them: every Param outside trainable(mode)."""
  return nnx.All(nnx.Param, nnx.Not(trainable(mode)))


def _einsum_parts(einsum):
  """'bte,ehd->bthd' -> ('bte', 'ehd', 'bthd', {'e': size, ...}, {'e': logical axis, ...})."""
  lhs, out = einsum.einsum_str.replace(' ', '').split('->')
  x, kernel = lhs.split(',')
  shape = dict(zip(kernel, einsum.kernel.shape))
  return x, kernel, out, shape, dict(zip(kernel, _axes(einsum.kernel)))


def _axes(variable):
  """The logical axes of a param (None per dim where it has none)."""
  axes = variable.get_metadata().get('out_sharding')
  return tuple(axes) if axes else (None,) * variable.ndim


def _init_with_axes(init, axes):
  # Under a mesh the new params are created sharded like their base kernels' dims.
  return nnx.with_partitioning(init, axes,
                               eager_sharding=not jax.sharding.get_abstract_mesh().empty)


class LoRA(nnx.Module):
  """base(x) + (alpha / rank) * (x A) B beside an nnx.Einsum of any kernel shape.

  A spans the dims the base contracts, B the dims it produces, each with the base kernel's
  logical axes there (the rank dim is never sharded), so adapters shard like their kernels.
  """

  def __init__(self, base, rank, alpha, dropout, *, rngs):
    x, kernel, out, shape, axes = _einsum_parts(base)
    r = next(c for c in 'rzyxw' if c not in x + kernel + out)
    contracted = ''.join(c for c in kernel if c in x)
    produced = ''.join(c for c in kernel if c not in x)
    kept = ''.join(c for c in x if c not in contracted)
    self.base = base
    self.scale = alpha / rank
    self.down = f'{x},{contracted}{r}->{kept}{r}'
    self.up = f'{kept}{r},{r}{produced}->{out}'
    self.delta = f'{contracted}{r},{r}{produced}->{kernel}'
    a_init = nnx.initializers.variance_scaling(
        1.0, 'fan_in', 'normal', in_axis=tuple(range(len(contracted))), out_axis=-1)
    a_shape = tuple(shape[c] for c in contracted) + (rank,)
    b_shape = (rank,) + tuple(shape[c] for c in produced)
    self.a = nnx.LoRAParam(_init_with_axes(a_init, tuple(axes[c] for c in contracted) + (None,))(
        rngs.params(), a_shape, base.param_dtype))
    self.b = nnx.LoRAParam(_init_with_axes(nnx.initializers.zeros,
                                           (None,) + tuple(axes[c] for c in produced))(
        rngs.params(), b_shape, base.param_dtype))
    # Off outside training: the train step turns dropout on with `module.train()`.
    self.dropout = nnx.Dropout(dropout, deterministic=True, rngs=rngs) if dropout else None

  def __call__(self, x):
    y = self.base(x)
    dtype = self.base.dtype or x.dtype
    h = x if self.dropout is None else self.dropout(x)
    h = jnp.einsum(self.down, h.astype(dtype), self.a[...].astype(dtype))
    return y + (self.scale * jnp.einsum(self.up, h, self.b[...].astype(dtype))).astype(y.dtype)

  def merged(self):
    """The base Einsum with scale * A B added to its kernel (the result of training)."""
    kernel = self.base.kernel
    delta = jnp.einsum(self.delta, self.a[...], self.b[...]) * self.scale
    kernel[...] = (kernel[...] + delta).astype(kernel.dtype)
    return self.base


class Biased(nnx.Module):
  """base(x) + bias: BitFit's bias over the dims an nnx.Einsum produces, zero at first."""

  def __init__(self, base, *, rngs):
    x, kernel, out, shape, axes = _einsum_parts(base)
    produced = ''.join(c for c in kernel if c not in x)
    if not out.endswith(produced):
      raise ValueError(f'BitFit needs the produced dims last in {base.einsum_str!r}.')
    self.base = base
    self.bias = BiasParam(_init_with_axes(nnx.initializers.zeros,
                                          tuple(axes[c] for c in produced))(
        rngs.params(), tuple(shape[c] for c in produced), base.param_dtype))

  def __call__(self, x):
    y = self.base(x)
    return y + self.bias[...].astype(y.dtype)


def module_paths(net):
  """'blocks.0.attn.q' -> the nnx.Einsum there: the modules LoRA and BitFit can target."""
  return {'.'.join(map(str, path)): module for path, module in nnx.iter_graph(net)
          if isinstance(module, nnx.Einsum)}


def matched(net, patterns):
  """The target paths matched by any pattern; an error listing the modules if none is."""
  paths = module_paths(net)
  chosen = [p for p in paths if any(re.search(pattern, p) for pattern in patterns)]
  if not chosen:
    names = sorted({re.sub(r'^blocks\.\d+\.', 'blocks.N.', p) for p in paths})
    raise ValueError(f'finetune.targets {tuple(patterns)} match no module. The model\'s '
                     f'projections are: {", ".join(names)} (N = 0..{net.config.num_layers - 1}).')
  return chosen


def _replace(net, path, make):
  *parents, name = path.split('.')
  owner = net
  for part in parents:
    owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
  setattr(owner, name, make(getattr(owner, name)))


def apply(net, config, *, rngs=None):
  """Adds config.mode's trainable params to `net` in place and returns it."""
  check_config(config)
  rngs = rngs or nnx.Rngs(params=config.seed, dropout=config.seed + 1)
  if config.mode == 'lora':
    for path in matched(net, config.targets):
      _replace(net, path, lambda m: LoRA(m, config.lora_rank, config.lora_alpha,
                                         config.lora_dropout, rngs=rngs))
  elif config.mode == 'bitfit':
    for path in matched(net, config.targets):
      _replace(net, path, lambda m: Biased(m, rngs=rngs))
  elif config.mode == 'prompt':
    table = net.embed.embedding
    ids = jax.random.randint(rngs.params(), (config.prompt_length,), 0, table.shape[0])
    init = lambda *_: jnp.take(jnp.asarray(table[...]), ids, axis=0)
    net.prompt = PromptParam(_init_with_axes(init, (None, _axes(table)[1]))(
        None, None, table.dtype))
  return net


def merge(net):
  """`net` with every LoRA folded into its base kernel (in place): a plain Transformer when
  it holds no other adapter, so sampling costs what the base costs. Equal to the unmerged
  model up to float rounding."""
  for path, module in list(nnx.iter_graph(net)):
    if isinstance(module, LoRA):
      _replace(net, '.'.join(map(str, path)), lambda m: m.merged())
  return net


def count(net, mode):
  """(trainable params, params of the base model) of a model with `mode`'s params added."""
  size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  added = nnx.Any(nnx.LoRAParam, BiasParam, PromptParam)
  return (size(nnx.state(net, trainable(mode))),
          size(nnx.state(net, nnx.All(nnx.Param, nnx.Not(added)))))
