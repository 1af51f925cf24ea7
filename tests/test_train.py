"""The train step: sharded equals unsharded, accumulation equals one batch, schedule, safety."""

from flax import nnx
import jax
import numpy as np
import pytest

from poetjax import model
from poetjax import sharding
from poetjax import train

VOCAB, ROWS, T = 128, 8, 16
# float32 on CPU: a different reduction order across devices changes the last bits only.
TOL = dict(rtol=2e-5, atol=2e-6)


def _batch(seed=0, rows=ROWS):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, VOCAB, (rows, T + 1)).astype(np.int32)
  # Two poems per row with a boundary at a random place, some padding at the end.
  cut = rng.integers(3, T - 3, rows)
  pos = np.arange(T)
  segment_ids = np.where(pos[None] < cut[:, None], 1, 2).astype(np.int32)
  segment_ids[:, -2:] = 0
  positions = np.where(segment_ids == 1, pos, pos - cut[:, None]).astype(np.int32)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'segment_ids': segment_ids,
          'positions': np.where(segment_ids == 0, 0, positions).astype(np.int32),
          'weights': (segment_ids > 0).astype(np.float32)}


def _trainer(mesh_sizes=(1, 1, 1), **overrides):
  mesh_config = sharding.default_config()
  mesh_config.data, mesh_config.fsdp, mesh_config.tensor = mesh_sizes
  devices = jax.devices()[:int(np.prod(mesh_sizes))]
  config = train.default_config()
  config.warmup_steps = 1
  config.update(overrides)
  mcfg = model.config_for('tiny', vocab_size=VOCAB)
  return train.Trainer(mcfg, config, sharding.make_mesh(mesh_config, devices), seed=0)


def _params(trainer):
  return jax.device_get(nnx.state(trainer.model, nnx.Param))


def _assert_trees_close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


def test_sharded_step_equals_one_device():
  assert jax.device_count() >= 8, 'tests/conftest.py sets 8 simulated CPU devices'
  one, eight = _trainer(), _trainer((2, 2, 2))
  for step in range(2):
    batch = _batch(step)
    loss_one, loss_eight = float(one.step(batch)['loss']), float(eight.step(batch)['loss'])
    np.testing.assert_allclose(loss_one, loss_eight, **TOL)
  _assert_trees_close(_params(one), _params(eight), **TOL)
  # The rules really shard: embed over fsdp, heads and vocab over tensor.
  net = eight.model
  assert net.embed.embedding[...].sharding.spec == jax.P('tensor', 'fsdp')
  assert net.blocks[0].attn.q.kernel[...].sharding.spec == jax.P('fsdp', 'tensor', None)
  assert net.blocks[0].mlp.down.kernel[...].sharding.spec == jax.P('tensor', 'fsdp')
  shard = net.blocks[0].mlp.down.kernel[...].addressable_shards[0].data
  assert shard.shape == (192 // 2, 64 // 2)
  # The AdamW moments are sharded like their params.
  mu = jax.tree.leaves(nnx.state(nnx.merge(eight.graphdef, eight.frozen, eight.state)[1]),
                       is_leaf=lambda x: hasattr(x, 'sharding') and x.ndim == 2)
  assert any(getattr(x, 'sharding', None) is not None and x.ndim == 2 and
             x.sharding.spec == jax.P('tensor', 'fsdp') for x in mu)


@pytest.mark.parametrize('k', [2, 4])
def test_accumulated_micro_batches_equal_one_batch(k):
  whole, accumulated = _trainer(), _trainer(grad_accum=k)
  batch = _batch(1)
  batch['weights'][0, :5] = 0  # uneven token counts: the loss is per token, not per micro-batch
  np.testing.assert_allclose(float(whole.step(batch)['loss']),
                             float(accumulated.step(batch)['loss']), **TOL)
  _assert_trees_close(_params(whole), _params(accumulated), rtol=1e-4, atol=1e-6)


def test_accumulation_over_sharded_batch():
  whole, accumulated = _trainer((2, 2, 2)), _trainer((2, 2, 2), grad_accum=2)
  batch = _batch(2, rows=16)
  np.testing.assert_allclose(float(whole.step(batch)['loss']),
                             float(accumulated.step(batch)['loss']), **TOL)


def test_loss_falls_on_a_repeated_batch():
  trainer = _trainer()
  batch = _batch(3)
  first = float(trainer.step(batch)['loss'])
  for _ in range(20):
    last = float(trainer.step(batch)['loss'])
  assert last < first - 1.0
  assert trainer.step_count == 21


def test_non_finite_step_leaves_the_state_unchanged():
  trainer = _trainer(learning_rate=1e30, clip_norm=0.0)
  batch = _batch(4)
  finite = [bool(trainer.step(batch)['finite']) for _ in range(4)]
  assert finite[0] and not all(finite)
  before = _params(trainer)
  assert not bool(trainer.step(batch)['finite'])
  _assert_trees_close(before, _params(trainer), rtol=0, atol=0)


def test_schedule_warmup_then_cosine_to_end_ratio():
  config = train.default_config()
  config.update(steps=110, warmup_steps=10, learning_rate=1.0, end_learning_rate_ratio=0.1)
  lr = train.schedule(config)
  assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(0.5)
  assert float(lr(10)) == pytest.approx(1.0)
  assert float(lr(60)) == pytest.approx(0.55, abs=1e-3)
  assert float(lr(110)) == pytest.approx(0.1)


def test_weight_decay_skips_norms_and_embeddings():
  net = model.Transformer(model.config_for('tiny', vocab_size=VOCAB), rngs=nnx.Rngs(0))
  params = nnx.state(net, nnx.Param)
  mask = train.decay_mask(params)
  assert mask['blocks'][0]['attn']['q']['kernel'].get_value()
  assert not mask['blocks'][0]['attn_norm']['scale'].get_value()
  assert not mask['embed']['embedding'].get_value()
  assert train.decay_mask(params, decay_embeddings=True)['embed']['embedding'].get_value()


def test_mesh_that_does_not_fit_names_both_numbers():
  config = sharding.default_config()
  config.data, config.fsdp, config.tensor = 2, 2, 4
  with pytest.raises(ValueError, match='needs 16 devices; there are 8'):
    sharding.make_mesh(config, jax.devices()[:8])
  config.data = -1
  config.fsdp = 3
  with pytest.raises(ValueError, match='multiple of 12 devices; there are 8'):
    sharding.make_mesh(config, jax.devices()[:8])


def test_batch_that_does_not_split_is_an_error():
  trainer = _trainer((4, 2, 1), grad_accum=2)
  with pytest.raises(ValueError, match='multiple of 16'):
    trainer.check_batch(8)


def test_remat_and_dropout_train_and_advance_the_rng():
  mcfg = model.config_for('tiny', vocab_size=VOCAB, remat=True, dropout=0.1)
  mesh = sharding.make_mesh(sharding.default_config(), jax.devices()[:1])
  trainer = train.Trainer(mcfg, train.default_config(), mesh)
  batch = _batch(5)
  losses = [float(trainer.step(batch)['loss']) for _ in range(2)]
  assert np.isfinite(losses).all()
  # Different dropout masks at each step: evaluation (no dropout) differs from training loss.
  evaluated = trainer.evaluate(batch, np.ones(VOCAB, np.float32))
  assert float(evaluated['nats'] / evaluated['tokens']) != pytest.approx(losses[1], rel=1e-6)


def test_cpu_steps_run_matmuls_without_ynnpack_and_reductions_in_one_pass():
  """train.CPU_COMPILER_OPTIONS reach the compiled step: no matmul is handed to YNNPACK, and no
  reduction is split into a reduce-window and a reduce (XLA's tree reduction)."""
  trainer = _trainer()
  with jax.set_mesh(trainer.mesh):
    hlo = trainer._train_step.lower(trainer.state, trainer.frozen,
                                    trainer.place(_batch())).compile().as_text()
  # What the checks below would see, on one small function each, not a second step: a matmul
  # given to YNNPACK, and a long reduction split in two by default.
  x = np.ones((64, 64), np.float32)
  ynn = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT'}
  matmul = jax.jit(lambda a, b: a @ b).lower(x, x).compile(compiler_options=ynn).as_text()
  assert '"__ynn_fusion"' in matmul
  tree = {k: v for k, v in train.CPU_COMPILER_OPTIONS.items() if k != 'xla_disable_hlo_passes'}
  total = jax.jit(lambda a: a.sum()).lower(x).compile(compiler_options=tree).as_text()
  assert ' reduce-window(' in total
  assert '"__ynn_fusion"' not in hlo and ' dot(' in hlo
  assert ' reduce-window(' not in hlo and ' reduce(' in hlo
