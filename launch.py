"""Runs an experiment: python launch.py --config experiments/<name>.py[:arg] --workdir DIR.

Any config field can be set on the command line, e.g. --config.train.steps=200. The resolved
config is written to DIR/config.json; the run trains (resuming from DIR if it holds a
checkpoint), evaluates, saves checkpoints, and prints a few sampled poems at the end. On every
worker of a multi-host TPU VM, run the same command (`gcloud ... ssh --worker=all`).
"""

import json
import os
import pathlib
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the run writes checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])


def _multi_host():
  """True on a multi-host TPU VM slice or when a jax coordinator is given by environment."""
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return ',' in hosts or bool(os.environ.get('JAX_COORDINATOR_ADDRESS'))


def main(argv):
  del argv
  cfg = _CONFIG.value
  if cfg.distributed is True or (cfg.distributed == 'auto' and _multi_host()):
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
