"""The optimizer and the jitted, sharded train and eval steps.

    mesh = sharding.make_mesh(sharding.default_config())
    trainer = train.Trainer(model_config, train.default_config(), mesh, seed=0)
    metrics = trainer.step(batch)     # batch: numpy or global arrays [batch_size, seq_len]
    sums = trainer.evaluate(batch)    # summed nats, tokens and Han characters of the targets

    # Fine-tuning: a pretrained base's params, with LoRA/BitFit/prompt params added (peft.py).
    trainer = train.Trainer(model_config, config, mesh, finetune=ft_config, base_params=params)

`nnx.split((model, optimizer))` gives two parts, each placed by the logical-axis rules:
`state`, what training changes (the trainable params, their AdamW moments, the step count and
the dropout RNG: this is what a checkpoint holds), and `frozen`, the base params a fine-tuning
mode leaves alone (empty when every param trains). A step is one `jax.jit` with explicit in/out
shardings and the state donated, so it is updated in place on every device. The loop around it
(data, evaluation, checkpoints, logging) is in poetjax/loop.py.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from poetjax import model as model_lib
from poetjax import peft
from poetjax import sharding


# XLA's CPU backend hands YNNPACK its matmuls by default. YNNPACK takes only row-major
# operands, so XLA wrote a transposed copy for most weight and input gradients and for the
# attention's batched products: 90 copies, 379 MB a step at bench.train's shape. Eigen reads
# them transposed in place: 12 copies, 38 MB.
# Without YNNPACK the train step at bench.train's shape ran 1.03x to 1.08x faster (paired
# medians of six interleaved A/B runs, 9 to 25 repeats). XLA's own kernels are built for
# 512-bit vectors (two AVX2 registers each, so more independent sums in flight): 1.04x to
# 1.11x with YNNPACK on (three A/B runs, median 1.07x), even with it off; the same losses.
# Each reduction runs in one pass: XLA split every long one into a reduce-window and a reduce,
# and the split one could not take its producer, so the loss's exp over [tokens, vocab] was
# written out first (a logsumexp over [2048, 8000] alone: 38 ms split, 4.6 to 9 ms in one pass).
# The step 1.022x and 1.024x faster (paired medians, interleaved A/B, 9 and 13 repeats), losses
# equal to 1e-6; a few reductions down the columns (the norms' scale gradients) got slower.
CPU_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': '',
                        'xla_cpu_prefer_vector_width': 512,
                        'xla_disable_hlo_passes': 'tree_reduction_rewriter'}


def default_config():
  c = ml_collections.ConfigDict()
  c.steps = 1000
  c.learning_rate = 3e-3
  c.warmup_steps = 100
  c.decay = 'cosine'  # or 'linear', 'constant'
  c.end_learning_rate_ratio = 0.1  # final lr as a fraction of the peak
  c.b1 = 0.9
  c.b2 = 0.95
  c.eps = 1e-8
  c.weight_decay = 0.1
  c.decay_embeddings = False  # weight decay on the embedding table too
  c.clip_norm = 1.0  # global gradient norm; 0 = off
  c.grad_accum = 1  # micro-batches per step: batch_size rows are split into this many
  c.z_loss = 1e-4  # weight of log(Z)^2, keeps the softmax normaliser near 1 (PaLM)
  return c


def schedule(config):
  """Linear warmup to the peak, then cosine or linear decay to end_learning_rate_ratio."""
  peak, warmup = config.learning_rate, config.warmup_steps
  end = peak * config.end_learning_rate_ratio
  decay_steps = max(config.steps - warmup, 1)
  if config.decay == 'cosine':
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_learning_rate_ratio)
  elif config.decay == 'linear':
    after = optax.linear_schedule(peak, end, decay_steps)
  elif config.decay == 'constant':
    after = optax.constant_schedule(peak)
  else:
    raise ValueError(f"Unknown decay {config.decay!r}; use 'cosine', 'linear' or 'constant'.")
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params, decay_embeddings=False):
  """True for the params weight decay applies to: matmul kernels (and embeddings if asked)."""
  def decays(path, _):
    names = [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]
    if 'embedding' in names:
      return decay_embeddings
    return 'kernel' in names  # not norm scales, not biases
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config):
  tx = optax.adamw(schedule(config), b1=config.b1, b2=config.b2, eps=config.eps,
                   weight_decay=config.weight_decay,
                   mask=lambda p: decay_mask(p, config.decay_embeddings))
  if config.clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
  return tx


def token_losses(logits, targets):
  """Cross-entropy and log(Z)^2 per token, float32 [batch, length] each."""
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return log_z - target_logit, jnp.square(log_z)


def _forward(model, batch, deterministic):
  return model(batch['inputs'], batch['positions'], batch['segment_ids'],
               deterministic=deterministic)


def _micro_batches(batch, k):
  """[rows, ...] -> [k, rows // k, ...], micro-batch j = rows j, j + k, ...

  Interleaving keeps each device's rows on that device: a contiguous split would put whole
  micro-batches on a few devices.
  """
  def split(x):
    return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, batch)


def create_model(model_config, finetune=None, base_params=None, seed=0):
  """A Transformer, its params replaced by base_params if given, with finetune's adapters."""
  net = model_lib.Transformer(model_config, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  if base_params is not None:
    nnx.update(net, base_params)
  if finetune is not None and finetune.mode not in ('none', 'full'):
    peft.apply(net, finetune)
  return net


class Trainer:
  """Model and optimizer state on a mesh, with the jitted train and eval steps."""

  def __init__(self, model_config, config, mesh, seed=0, *, finetune=None, base_params=None,
               materialize=True):
    """finetune: a peft.default_config() (None: every param trains from a random init).
    base_params: a plain Transformer's nnx.Param state to start from (e.g. a pretrained base).
    materialize=False builds the steps without any state: for ahead-of-time compiles.
    """
    self.model_config = model_config
    self.config = config
    self.mesh = mesh
    self.tx = make_optimizer(config)
    mode = finetune.mode if finetune is not None else 'none'
    self.trainable, self.frozen_filter = peft.trainable(mode), peft.frozen(mode)

    def create(base):
      net = create_model(model_config, finetune, base, seed)
      return net, nnx.Optimizer(net, self.tx, wrt=self.trainable)

    def parts(base):
      return nnx.split(create(base), self.frozen_filter, ...)

    with sharding.use(mesh):
      self.graphdef, abstract_frozen, abstract_state = nnx.eval_shape(lambda: parts(base_params))
      self.frozen_sharding = sharding.state_shardings(abstract_frozen, mesh)
      self.state_sharding = sharding.state_shardings(abstract_state, mesh)
      # Created inside jit with the output sharding: each device builds only its shard (and
      # the random init of params that base_params then replaces is never computed).
      init = jax.jit(lambda base: parts(base)[1:],
                     out_shardings=(self.frozen_sharding, self.state_sharding))
      if materialize:
        self.frozen, self.state = init(base_params)
      else:  # the frozen part is empty unless fine-tuning: then the caller sets both
        self.frozen = None if jax.tree.leaves(abstract_frozen) else abstract_frozen
        self.state = None
    with_sharding = lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
    self.abstract_state = jax.tree.map(with_sharding, abstract_state, self.state_sharding)
    self.abstract_frozen = jax.tree.map(with_sharding, abstract_frozen, self.frozen_sharding)
    self.batch_sharding = sharding.batch_sharding(mesh)
    replicated = jax.NamedSharding(mesh, jax.P())
    options = CPU_COMPILER_OPTIONS if mesh.devices.flat[0].platform == 'cpu' else None
    self._train_step = jax.jit(
        self._train_step_fn,
        in_shardings=(self.state_sharding, self.frozen_sharding, self.batch_sharding),
        out_shardings=(self.state_sharding, replicated), donate_argnums=0,
        compiler_options=options)
    self._eval_step = jax.jit(
        self._eval_step_fn,
        in_shardings=(self.state_sharding, self.frozen_sharding, self.batch_sharding, replicated),
        out_shardings=replicated, compiler_options=options)

  # The pure functions jax.jit compiles.

  def _train_step_fn(self, state, frozen, batch):
    net, optimizer = nnx.merge(self.graphdef, frozen, state)
    # Gradients of the trainable params only: a frozen kernel gets no weight gradient at all.
    graphdef, params, rngs, rest = nnx.split(net, self.trainable, nnx.RngState, ...)
    k = self.config.grad_accum
    total_weight = jnp.maximum(batch['weights'].sum(), 1.0)

    def objective(params, rngs, micro):
      # copy: the RNG counts advance inside grad/remat traces, not in the outer one.
      m = nnx.merge(graphdef, params, rngs, rest, copy=True)
      m.train()  # dropout inside adapters (the blocks' own dropout is told by the call)
      ce, z = token_losses(_forward(m, micro, deterministic=False), micro['targets'])
      w = micro['weights']
      sums = jnp.stack([(ce * w).sum(), (z * w).sum()])
      loss = (sums[0] + self.config.z_loss * sums[1]) / total_weight
      return loss, (sums, nnx.state(m, nnx.RngState))  # advanced dropout RNG

    grad_fn = jax.grad(objective, has_aux=True)

    def accumulate(carry, micro):
      grads, sums, rngs = carry
      g, (s, rngs) = grad_fn(params, rngs, micro)
      return (jax.tree.map(jnp.add, grads, g), sums + s, rngs), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    carry = (zeros, jnp.zeros(2, jnp.float32), rngs)
    if k == 1:
      carry, _ = accumulate(carry, batch)
    else:
      carry, _ = jax.lax.scan(accumulate, carry, _micro_batches(batch, k))
    grads, sums, rngs = carry
    nnx.update(net, rngs)
    grad_norm = optax.tree_utils.tree_norm(grads)
    loss = sums[0] / total_weight
    lr = schedule(self.config)(optimizer.step[...])
    optimizer.update(net, grads)
    new_state = nnx.split((net, optimizer), self.frozen_filter, ...)[2]
    # A non-finite loss or gradient leaves the state as it was; the loop stops on the flag.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {'loss': loss, 'z_loss': sums[1] / total_weight, 'grad_norm': grad_norm,
               'learning_rate': lr, 'tokens': batch['weights'].sum(), 'finite': finite}
    return new_state, metrics

  def _eval_step_fn(self, state, frozen, batch, han_counts):
    net, _ = nnx.merge(self.graphdef, frozen, state)
    ce, _ = token_losses(_forward(net, batch, deterministic=True), batch['targets'])
    w = batch['weights']
    return {'nats': (ce * w).sum(), 'tokens': w.sum(),
            'han_chars': (han_counts[batch['targets']] * w).sum()}

  # Host-side API.

  def lower(self, rows, seq_len):
    """The train step lowered for a [rows, seq_len] batch, from shapes alone (no state needed)."""
    def spec(dtype):
      return jax.ShapeDtypeStruct((rows, seq_len), dtype, sharding=self.batch_sharding)
    batch = {k: spec(jnp.int32) for k in ('inputs', 'targets', 'segment_ids', 'positions')}
    batch['weights'] = spec(jnp.float32)
    with jax.set_mesh(self.mesh):
      return self._train_step.lower(self.abstract_state, self.abstract_frozen, batch)

  def place(self, batch):
    """A process-local numpy batch -> global arrays on the mesh (arrays pass through)."""
    if all(isinstance(x, jax.Array) for x in jax.tree.leaves(batch)):
      return batch
    return sharding.global_batch(batch, self.mesh)

  def check_batch(self, rows):
    divisor = sharding.batch_divisor(self.mesh) * self.config.grad_accum
    if rows % divisor:
      raise ValueError(f'The global batch of {rows} rows does not split into grad_accum='
                       f'{self.config.grad_accum} micro-batches over the '
                       f'{sharding.batch_divisor(self.mesh)} data-parallel devices; make '
                       f'batch_size a multiple of {divisor}.')

  def step(self, batch):
    batch = self.place(batch)
    self.check_batch(batch['inputs'].shape[0])
    with jax.set_mesh(self.mesh):  # the model constrains activations to the mesh's batch axes
      self.state, metrics = self._train_step(self.state, self.frozen, batch)
    return metrics

  def evaluate(self, batch, han_counts):
    with jax.set_mesh(self.mesh):
      return self._eval_step(self.state, self.frozen, self.place(batch), han_counts)

  @property
  def model(self):
    """The model (a view of the current state), e.g. for sampling."""
    return nnx.merge(self.graphdef, self.frozen, self.state)[0]

  @property
  def step_count(self):
    """Optimizer steps taken so far."""
    return int(nnx.merge(self.graphdef, self.frozen, self.state)[1].step[...])
