"""Runs an experiment: python launch.py --config experiments/<name>.py[:arg] --workdir DIR.

Any config field can be set on the command line, e.g. --config.train.steps=200. The resolved
config is written to DIR/config.json; the run trains (resuming from DIR if it holds a
checkpoint), evaluates, saves checkpoints, and prints a few sampled poems at the end. On every
worker of a multi-host TPU VM, run the same command (`gcloud ... ssh --worker=all`).
"""

import glob
import importlib.util
import json
import os
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from poetjax import jit_cache

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the run writes checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])


def _on_tpu_vm_or_cluster():
  """A Cloud TPU VM (its chips are /dev/accel* or /dev/vfio/*) or a coordinator given by env.

  jax.distributed.initialize() then finds the slice's hosts itself (one host works too).
  """
  chips = glob.glob('/dev/accel[0-9]*') + glob.glob('/dev/vfio/[0-9]*')
  return bool(chips) or bool(os.environ.get('JAX_COORDINATOR_ADDRESS'))


def _default_platforms():
  """Off a TPU VM, keeps jax away from libtpu's TPU probe (libtpu is installed for the AOT)."""
  if os.environ.get('JAX_PLATFORMS') or _on_tpu_vm_or_cluster():
    return
  cuda = any(importlib.util.find_spec(p) for p in ('jax_cuda13_plugin', 'jax_cuda12_plugin'))
  jax.config.update('jax_platforms', 'cuda,cpu' if cuda else 'cpu')


def main(argv):
  del argv
  cfg = _CONFIG.value
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax and TFDS log every step at INFO
  _default_platforms()
  jit_cache.enable()
  if cfg.distributed is True or (cfg.distributed == 'auto' and _on_tpu_vm_or_cluster()):
    jax.distributed.initialize()
  # Imported after jax.distributed.initialize(), which must come before any jax computation.
  from poetjax import checkpoint  # pylint: disable=g-import-not-at-top
  from poetjax import loop  # pylint: disable=g-import-not-at-top
  from poetjax.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
  from poetjax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top

  workdir = pathlib.Path(_WORKDIR.value)
  if jax.process_index() == 0:
    print(f'{jax.process_count()} process(es), {jax.device_count()} {jax.devices()[0].platform} '
          f'device(s); workdir {workdir}')
  try:
    trainer, last = loop.train_and_evaluate(cfg, workdir)
  except (corpus_lib.CorpusError, FileNotFoundError, ValueError,
          checkpoint.IncompatibleCheckpointError, checkpoint.UnreadableCheckpointError,
          loop.NonFiniteLossError) as e:
    sys.exit(f'error: {e}')
  # Every process runs the sampler (the params are global arrays); process 0 prints.
  loop.print_samples(trainer, tokenizer_lib.load(cfg.data.tokenizer), cfg)
  if jax.process_index() == 0:
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in last.items()},
                     ensure_ascii=False))


if __name__ == '__main__':
  app.run(main)
