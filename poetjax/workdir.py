"""A trained model back from a training workdir, for sampling and evaluation.

    model, tok, config, step = workdir.load('runs/tiny')            # the latest checkpoint
    model, tok, config, step = workdir.load('runs/tiny', 'best')    # the best by validation

The workdir's config.json (written by the training run) rebuilds the model; the checkpoint
restores onto the current devices whatever mesh wrote it (one device by default).
"""

import json
import pathlib

import jax
import ml_collections

from poetjax import checkpoint
from poetjax import loop
from poetjax import sharding
from poetjax import train
from poetjax.data import tokenizer as tokenizer_lib


def load_config(workdir):
  path = pathlib.Path(workdir) / 'config.json'
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: {workdir} is not a training workdir (launch.py '
                            'writes config.json there when a run starts).')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load(workdir, step='latest', mesh=None):
  """(model, tokenizer, config, step) from a workdir's checkpoint ('latest', 'best' or a step)."""
  config = load_config(workdir)
  tok = tokenizer_lib.load(config.data.tokenizer)
  model_config = loop.model_config(config, tok)
  mesh = mesh or sharding.make_mesh(sharding.default_config(), jax.devices()[:1])
  ckpt = checkpoint.Checkpointer(pathlib.Path(workdir), config.checkpoint)
  chosen = ckpt.best_step() if step == 'best' else (
      ckpt.latest_step() if step == 'latest' else int(step))
  if chosen is None:
    raise FileNotFoundError(f'No checkpoint in {pathlib.Path(workdir) / "checkpoints"}: train '
                            f'first (python launch.py --config ... --workdir {workdir}).')
  trainer = train.Trainer(model_config, train.default_config(), mesh, materialize=False)
  trainer.state, chosen, _ = ckpt.restore(trainer.abstract_state, step=chosen)
  ckpt.close()
  return trainer.model, tok, config, chosen
