"""Checkpoints: exact round trips, the keep policy, other meshes, SIGTERM, refusals, corruption."""

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from poetjax import checkpoint
from poetjax import model
from poetjax import sharding
from poetjax.data import pipeline
from poetjax.data import tokenizer

from test_pipeline import SOURCE  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB = 128


def _config(**overrides):
  c = checkpoint.default_config()
  c.every_steps = 1
  c.update(overrides)
  return c


def _create(seed=0):
  net = model.Transformer(model.config_for('tiny', vocab_size=VOCAB),
                          rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  return net, nnx.Optimizer(net, optax.adamw(1e-3), wrt=nnx.Param)


def _state(seed=0):
  """nnx.state((model, optimizer)) of the tiny model, every leaf filled with random values.

  Structure, shapes, dtypes and the typed RNG keys are the real ones; numpy supplies the values
  because compiling the model's init costs seconds on a CPU.
  """
  rng = np.random.default_rng(seed)

  def fill(a):
    if _is_key(a):
      return jax.random.wrap_key_data(rng.integers(0, 2**32, (*a.shape, 2), dtype=np.uint32))
    if jnp.issubdtype(a.dtype, jnp.floating):
      return jnp.asarray(rng.standard_normal(a.shape), a.dtype)
    return jnp.asarray(rng.integers(1, 100, a.shape), a.dtype)

  return jax.tree.map(fill, nnx.state(nnx.eval_shape(_create)))


def _is_key(x):
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _host(tree):
  """numpy copies of every leaf, typed PRNG keys as their key data."""
  return jax.tree.map(lambda x: np.array(jax.random.key_data(x) if _is_key(x) else x), tree)


def _assert_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, _host(a), _host(b))


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _iterator():
  c = pipeline.default_config()
  c.seq_len, c.batch_size, c.read_block = 48, 4, 5  # several epochs of SOURCE in a few batches
  return pipeline.make_iterator(SOURCE, tokenizer.load('char'), c)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same_batches(a, b):
  return len(a) == len(b) and all(
      x.keys() == y.keys() and all((x[k] == y[k]).all() for k in x) for x, y in zip(a, b))


def test_round_trip_restores_params_optimizer_rng_and_data(tmp_path):
  state = _state()
  assert any(_is_key(x) for x in jax.tree.leaves(state))  # the dropout RNG's typed keys
  saved = _host(state)
  it = _iterator()
  _take(it, 3)
  ckpt = checkpoint.Checkpointer(tmp_path, _config(async_save=True))
  assert ckpt.save(3, state, it, extra={'seed': 7, 'best_val_loss': np.float32(2.5)})
  expected = _take(it, 4)  # the iterator moves on while the async save may still be writing
  # The train step donates the state: the save must not read the buffers after it returned.
  bump = lambda s: jax.tree.map(lambda x: x if _is_key(x) else x + 1, s)
  jax.jit(bump, donate_argnums=0)(state)
  ckpt.close()

  ckpt = checkpoint.Checkpointer(tmp_path, _config())  # as a relaunch would
  assert ckpt.latest_step() == 3
  fresh_it = _iterator()
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: _create(seed=1)))
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(
      a.shape, a.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])), abstract)
  restored, step, extra = ckpt.restore(abstract, fresh_it)
  assert step == 3
  assert extra == {'seed': 7, 'best_val_loss': 2.5}
  assert isinstance(restored, nnx.State)
  _assert_equal(restored, saved)
  keys = [x for x in jax.tree.leaves(restored) if _is_key(x)]
  assert keys and all(str(k.dtype) == str(jax.random.key(0).dtype) for k in keys)
  assert _same_batches(_take(fresh_it, 4), expected)
  assert not _same_batches(_take(_iterator(), 4), expected)  # it really was restored
  # The restored state drops into a model of the same config.
  _, opt = nnx.merge(graphdef, restored)
  assert opt.step[...] == saved[1]['step'][...]
  ckpt.close()


def test_keeps_latest_and_best_by_val_loss(tmp_path):
  state = {'w': jnp.zeros(4)}
  ckpt = checkpoint.Checkpointer(tmp_path, _config(keep=2, keep_best=True, async_save=False))
  losses = {1: 3.0, 2: 2.0, 3: 2.5, 4: None, 5: float('nan'), 6: None}
  for step, loss in losses.items():
    assert ckpt.save(step, state, metrics=loss and {'val_loss': loss})
  assert ckpt.all_steps() == [2, 5, 6]
  assert ckpt.best_step() == 2
  ckpt.close()
  # A relaunch reads the metrics back: step 2 stays the best through unranked saves.
  ckpt = checkpoint.Checkpointer(tmp_path, _config(keep=2, keep_best=True, async_save=False))
  assert ckpt.save(7, state)
  assert ckpt.all_steps() == [2, 6, 7]
  assert ckpt.save(8, state, metrics={'val_loss': 1.0})
  assert ckpt.all_steps() == [7, 8] and ckpt.best_step() == 8
  ckpt.close()
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.is_dir()) == [7, 8]

  ckpt = checkpoint.Checkpointer(tmp_path / 'b', _config(every_steps=2, keep=0, keep_best=False))
  assert not ckpt.save(3, state)
  assert ckpt.save(4, state) and ckpt.save(5, state, force=True)
  assert not ckpt.save(5, state, force=True)  # already saved: a no-op, not an error
  ckpt.close()
  assert ckpt.all_steps() == [4, 5]


def _mesh(sizes):
  c = sharding.default_config()
  c.data, c.fsdp, c.tensor = sizes
  return sharding.make_mesh(c, jax.devices()[:int(np.prod(sizes))])


def _placed(state, mesh):
  shardings = sharding.state_shardings(state, mesh)
  return jax.device_put(state, shardings), shardings


def test_restores_onto_another_mesh(tmp_path):
  assert jax.device_count() >= 8, 'tests/conftest.py sets 8 simulated CPU devices'
  state = _state()
  saved = _host(state)
  meshes = {'eight': _mesh((2, 2, 2)), 'one': _mesh((1, 1, 1))}
  for src, dst in [('eight', 'one'), ('one', 'eight')]:
    placed, _ = _placed(state, meshes[src])
    ckpt = checkpoint.Checkpointer(tmp_path / src, _config())
    ckpt.save(1, placed)
    ckpt.wait()
    target, shardings = _placed(state, meshes[dst])
    restored, _, _ = ckpt.restore(_abstract(target))
    ckpt.close()
    _assert_equal(restored, saved)
    assert jax.tree.leaves(jax.tree.map(lambda x: x.sharding, restored)) == jax.tree.leaves(
        shardings)
  sharded = _placed(state, meshes['eight'])[0]
  assert sharded[0]['embed']['embedding'][...].sharding.spec == jax.P('tensor', 'fsdp')


_PREEMPTED_SCRIPT = """
import signal, sys, time
import jax, jax.numpy as jnp
from poetjax import checkpoint

config = checkpoint.default_config()
config.every_steps = 5  # regular async saves may be in flight when the signal comes
ckpt = checkpoint.Checkpointer(sys.argv[1], config)
state = {'w': jnp.zeros((256, 256)), 'key': jax.random.key(0)}
with checkpoint.PreemptionGuard() as guard:
  step = 0
  while True:
    step += 1
    state = {'w': state['w'] + 1, 'key': jax.random.split(state['key'])[0]}
    if step == 3:
      print('ready', flush=True)
    stop = guard.should_stop(step)
    ckpt.save(step, state, extra={'stopped': stop}, force=stop)
    if stop:
      break
    time.sleep(0.01)
ckpt.wait()
ckpt.close()
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
print('saved', step, flush=True)
"""


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  script = tmp_path / 'train.py'
  script.write_text(textwrap.dedent(_PREEMPTED_SCRIPT))
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu', XLA_FLAGS='')
  proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / 'work')], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == 'ready', proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode == 0, err
  step = int(out.split()[-1])
  ckpt = checkpoint.Checkpointer(tmp_path / 'work', _config())
  assert ckpt.latest_step() == step
  key = jax.random.key(0)
  for _ in range(step):
    key = jax.random.split(key)[0]
  restored, _, extra = ckpt.restore(_abstract({'w': jnp.zeros((256, 256)), 'key': key}))
  assert extra == {'stopped': True}
  assert (np.asarray(restored['w']) == step).all()
  _assert_equal(restored['key'], key)
  ckpt.close()


def test_guard_flags_a_signal_and_restores_the_previous_handler():
  seen = []
  previous = signal.signal(signal.SIGTERM, lambda *_: seen.append(1))
  try:
    with checkpoint.PreemptionGuard() as guard:
      assert not guard.should_stop(1)
      signal.raise_signal(signal.SIGTERM)
      assert guard.should_stop(2)
    assert not seen
    signal.raise_signal(signal.SIGTERM)  # the earlier handler is back
    assert seen == [1]
  finally:
    signal.signal(signal.SIGTERM, previous)


def _listing(root):
  return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
          for p in sorted(root.rglob('*'))}


def test_other_model_is_refused_without_touching_the_workdir(tmp_path):
  fresh = tmp_path / 'fresh'
  ckpt = checkpoint.Checkpointer(fresh, _config())
  ckpt.check_compatible({'model': {'d_model': 64}})
  assert ckpt.latest_step() is None and not fresh.exists()  # nothing written before a save

  model_a = dataclasses.asdict(model.config_for('tiny', vocab_size=VOCAB))
  model_b = dict(model_a, num_layers=3, d_model=96)
  ckpt = checkpoint.Checkpointer(tmp_path, _config())
  ckpt.check_compatible({'model': model_a, 'tokenizer': 'char'})
  ckpt.save(1, {'w': jnp.ones(3)})
  ckpt.close()
  before = _listing(tmp_path)
  ckpt = checkpoint.Checkpointer(tmp_path, _config())
  with pytest.raises(checkpoint.IncompatibleCheckpointError,
                     match=r"(?s)d_model: saved 64, now 96.*num_layers: saved 2, now 3.*--workdir"):
    ckpt.check_compatible({'model': model_b, 'tokenizer': 'char'})
  ckpt.close()
  assert issubclass(checkpoint.IncompatibleCheckpointError, ValueError)
  assert _listing(tmp_path) == before
  ckpt = checkpoint.Checkpointer(tmp_path, _config())
  ckpt.check_compatible({'model': model_a, 'tokenizer': 'char'})  # the same model resumes
  # Fields that leave the saved arrays alone may be let through.
  ckpt.check_compatible({'model': dict(model_a, remat=True)}, ignore=('model.remat',))
  ckpt.close()


def test_meta_left_by_a_run_killed_before_its_first_step_is_replaced(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, _config(async_save=False))
  ckpt.check_compatible({'model': {'d_model': 64}})
  ckpt._write_meta()  # what a kill between the meta and the first committed step leaves
  ckpt.close()
  ckpt = checkpoint.Checkpointer(tmp_path, _config(async_save=False))
  ckpt.check_compatible({'model': {'d_model': 96}})  # no saved step: any model may start
  assert ckpt.save(1, {'w': jnp.ones(3)})
  assert ckpt.saved_meta() == {'model': {'d_model': 96}}
  ckpt.close()


def test_corrupt_checkpoint_names_the_step_dir(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, _config(async_save=False))
  state = {'w': jnp.arange(4096.0)}
  ckpt.save(1, state)
  ckpt.save(2, state)
  ckpt.close()
  # The largest file holds the array data; cut it in half.
  data = max((p for p in (tmp_path / 'checkpoints' / '2').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
  ckpt = checkpoint.Checkpointer(tmp_path, _config())
  step_dir = str(tmp_path / 'checkpoints' / '2')
  with pytest.raises(checkpoint.UnreadableCheckpointError, match=step_dir):
    ckpt.restore(_abstract(state))
  restored, step, _ = ckpt.restore(_abstract(state), step=1)  # an earlier step still loads
  assert step == 1
  _assert_equal(restored, state)
  ckpt.close()


def test_relative_workdir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = checkpoint.default_config()
  config.async_save = False
  state = {'w': jnp.arange(4.0)}
  with checkpoint.Checkpointer('runs/relative', config) as ckpt:
    assert ckpt.save(1, state, force=True)
  restored, step, _ = checkpoint.Checkpointer('runs/relative', config).restore(
      jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state))
  assert step == 1 and (tmp_path / 'runs/relative/checkpoints/1').is_dir()
  np.testing.assert_array_equal(restored['w'], state['w'])
