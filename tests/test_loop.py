"""The training loop end to end on a corpus slice: resume after a kill, NaN stop, bad input."""

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
from ml_collections import config_dict
import numpy as np
import pytest

from poetjax import checkpoint
from poetjax import loop
from poetjax import sharding
from poetjax import train
from poetjax import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
N = 16  # steps before the kill; the runs go to 2N

CONFIG = '''
from poetjax import configs


def get_config(arg=None):
  c = configs.base('tiny')
  c.data.corpus_dir = {corpus_dir!r}
  c.data.data_dir = {data_dir!r}
  c.data.pipeline.seq_len = 32
  c.data.pipeline.batch_size = 8
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
  c.train.steps = {steps}
  c.train.warmup_steps = 4
  c.loop.log_every = 1
  c.loop.eval_every = {n}
  c.loop.eval_batches = 2
  c.loop.unigram_batches = 2
  c.loop.peak_flops = 1e9
  c.checkpoint.every_steps = 4
  c.sample.max_len = 16
  return c
'''


@pytest.fixture(scope='module')
def config_file(corpus_dir, tmp_path_factory):
  tmp = tmp_path_factory.mktemp('loop')
  path = tmp / 'tiny_test.py'
  path.write_text(CONFIG.format(corpus_dir=str(corpus_dir), data_dir=str(tmp / 'data'),
                                steps=2 * N, n=N))
  return path


def _load(path, **overrides):
  spec = importlib.util.spec_from_file_location('tiny_test_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def _losses(workdir):
  """step -> metrics, the last record of each step (a resumed run re-logs some steps)."""
  records = {}
  for line in (workdir / 'metrics.jsonl').read_text().splitlines():
    record = json.loads(line)
    records.setdefault(record['step'], {}).update(record)
  return records


def _launch(config_file, workdir, *flags):
  return subprocess.Popen(
      [sys.executable, 'launch.py', f'--config={config_file}', f'--workdir={workdir}', *flags],
      cwd=REPO, env={**os.environ, 'PYTHONPATH': str(REPO)}, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def test_killed_and_resumed_run_equals_a_straight_run(config_file, tmp_path):
  straight = tmp_path / 'straight'
  trainer, last = loop.train_and_evaluate(_load(config_file), straight)
  assert last['step'] == 2 * N
  assert last['val/bits_per_char'] < last['unigram_bits_per_char'] + 1.0
  assert set(_losses(straight)[2 * N]) >= {'loss', 'val/loss', 'val/bits_per_char', 'mfu'}
  assert list((straight / 'tensorboard').glob('events.out.tfevents.*'))

  # A second run is killed (SIGKILL: no chance to save) once it has passed step N.
  resumed = tmp_path / 'resumed'
  proc = _launch(config_file, resumed)
  while proc.poll() is None:
    metrics = resumed / 'metrics.jsonl'
    if metrics.exists() and max(_losses(resumed), default=0) >= N:
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.01)
  proc.wait()
  saved = checkpoint.Checkpointer(resumed, _load(config_file).checkpoint).latest_step()
  assert proc.returncode == -signal.SIGKILL and saved < 2 * N, (proc.returncode, saved)
  loop.train_and_evaluate(_load(config_file), resumed)
  a, b = _losses(straight), _losses(resumed)
  for step in range(1, 2 * N + 1):
    np.testing.assert_allclose(b[step]['loss'], a[step]['loss'], rtol=1e-6, err_msg=step)
  np.testing.assert_allclose(b[2 * N]['val/loss'], a[2 * N]['val/loss'], rtol=1e-6)

  # Trained on 8 devices, restored onto 1: the same validation loss.
  config = _load(config_file)
  one = sharding.make_mesh(_one_device_mesh_config(), jax.devices()[:1])
  single = train.Trainer(trainer.model_config, config.train, one, materialize=False)
  ckpt = checkpoint.Checkpointer(straight, config.checkpoint)
  single.state, step, _ = ckpt.restore(single.abstract_state)
  assert step == 2 * N
  leaf = jax.tree.leaves(single.state)[0]
  assert leaf.sharding.mesh.devices.size == 1
  evaluator = loop.Evaluator(*loop.prepare_data(config.data)[1:], _tok(config), config,
                             trainer.model_config.vocab_size)
  np.testing.assert_allclose(evaluator(single)['val/loss'], a[2 * N]['val/loss'], rtol=1e-5)


def _one_device_mesh_config():
  c = sharding.default_config()
  c.data = 1
  return c


def _tok(config):
  from poetjax.data import tokenizer  # pylint: disable=g-import-not-at-top
  return tokenizer.load(config.data.tokenizer)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(config_file, tmp_path):
  config = _load(config_file, **{'train.learning_rate': 1e30, 'train.warmup_steps': 0,
                                 'checkpoint.every_steps': 1})
  with pytest.raises(loop.NonFiniteLossError, match='Non-finite loss.*last good checkpoint'):
    loop.train_and_evaluate(config, tmp_path)
  ckpt = checkpoint.Checkpointer(tmp_path, config.checkpoint)
  step = ckpt.latest_step()
  assert step is not None
  trainer = train.Trainer(workdir_lib.model_config(config, _tok(config)), config.train,
                          sharding.make_mesh(config.mesh), materialize=False)
  state, _, _ = ckpt.restore(trainer.abstract_state)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state)
             if jax.dtypes.issubdtype(x.dtype, np.floating))


def test_bad_config_key_and_incompatible_workdir(config_file, tmp_path):
  proc = _launch(config_file, tmp_path / 'typo', '--config.train.step=5')
  _, err = proc.communicate(timeout=120)
  assert proc.returncode != 0 and 'Did you mean "steps"' in err

  loop.train_and_evaluate(_load(config_file, **{'train.steps': 4}), tmp_path / 'run')
  before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / 'run').rglob('*'))
  proc = _launch(config_file, tmp_path / 'run', '--config.model.num_layers=3')
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 1 and 'num_layers' in err, err[-2000:]
  assert sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / 'run').rglob('*')) == before


def test_lora_run_from_a_pretraining_workdir(config_file, tmp_path):
  base, tuned = tmp_path / 'base', tmp_path / 'tuned'
  loop.train_and_evaluate(_load(config_file, **{'train.steps': 4}), base)
  lora = {'finetune.mode': 'lora', 'finetune.base': str(base), 'finetune.base_step': 'latest',
          'finetune.lora_rank': 2, 'model.d_model': 999,  # the model comes from the base
          'data.pipeline.filters': {'dynasty': '唐'}, 'train.steps': 4, 'loop.eval_every': 4}
  _, last = loop.train_and_evaluate(_load(config_file, **lora), tuned)
  assert last['step'] == 4 and np.isfinite(last['val/bits_per_char'])
  shapes = checkpoint.Checkpointer(tuned, _load(config_file).checkpoint).saved_shapes(4)
  assert not any('kernel' in k or 'embedding' in k for k in shapes)

  # The base trains on; resuming the fine-tuning keeps the base step it started from.
  loop.train_and_evaluate(_load(config_file, **{'train.steps': 8}), base)
  loop.train_and_evaluate(_load(config_file, **{**lora, 'train.steps': 8}), tuned)
  meta = json.loads((tuned / 'checkpoints' / checkpoint.META_FILE).read_text())
  assert meta['finetune']['base_step'] == 4 and meta['model']['d_model'] == 64

  # A base named by one of its checkpoint directories: that step, whatever base_step says.
  named = config_dict.ConfigDict({'mode': 'lora', 'base': str(base / 'checkpoints' / '4'),
                                  'base_step': 'latest'})
  assert workdir_lib.resolve_base(named) == (str(base), 4)

  net, _, config, step = workdir_lib.load(tuned)
  merged, _, _, _ = workdir_lib.load(tuned, merge=True)
  plain, _, _, _ = workdir_lib.load(base, step=4)
  ids = jax.numpy.asarray([[1, 40, 41, 42, 43]])
  np.testing.assert_allclose(merged(ids), net(ids), rtol=1e-5, atol=1e-5)
  assert step == 8 and config.finetune.mode == 'lora'
  assert np.abs(np.asarray(net(ids)) - np.asarray(plain(ids))).max() > 1e-4
