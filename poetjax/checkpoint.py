"""Checkpoints of the train state, the data iterator and a small JSON dict, with orbax.

    ckpt = checkpoint.Checkpointer(workdir, checkpoint.default_config())
    ckpt.check_compatible({'model': model_config_dict, 'tokenizer': 'char'})
    if ckpt.latest_step() is not None:
      state, step, extra = ckpt.restore(abstract_state, data_iterator)
    with checkpoint.PreemptionGuard() as guard:
      ...  # each step:
      ckpt.save(step, state, data_iterator, extra={'seed': 0}, metrics={'val_loss': 2.1},
                force=guard.should_stop(step))
    ckpt.close()  # waits for async saves

Steps live in workdir/checkpoints/<step>/ as orbax items: state (the arrays, typed PRNG keys
included, which orbax stores as key data plus the impl), data (grain's JSON state, one file per
process) and extra. Arrays restore onto the shardings of `abstract_state`, so a checkpoint
written on one mesh loads onto any other. The latest `keep` steps are kept, plus, with
keep_best, the one with the lowest val_loss. meta.json records the model the steps belong to.
"""

import json
import os
import signal
import threading

from absl import logging
from etils import epath
from flax import nnx
import jax
from jax.experimental import multihost_utils
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

import grain

META_FILE = 'meta.json'


class IncompatibleCheckpointError(ValueError):
  """The workdir holds checkpoints of another model."""


class UnreadableCheckpointError(RuntimeError):
  """A step directory could not be restored (corrupt, incomplete or of another layout)."""


def default_config():
  c = ml_collections.ConfigDict()
  c.every_steps = 1000
  c.keep = 3  # latest steps kept; 0 = all
  c.keep_best = True  # also keep the step with the lowest val_loss
  c.async_save = True  # write in a background thread while training goes on
  return c


def _val_loss(metrics):
  # NaN or missing sorts as worst: BestN keeps the smallest of what it is given.
  loss = float(metrics.get('val_loss', float('inf')))
  return float('inf') if loss != loss else loss


def _json(value):
  """A JSON round trip: fails here (not in a writer thread) and snapshots mutable dicts."""
  to_python = lambda x: x.item() if hasattr(x, 'item') else str(x)
  return json.loads(json.dumps(value or {}, default=to_python))


def _flatten(tree, prefix=''):
  """{'a': {'b': 1}} -> {'a.b': 1}, so a difference is named by its full path."""
  if not isinstance(tree, dict):
    return {prefix: tree}
  return {k: v for key, sub in tree.items()
          for k, v in _flatten(sub, f'{prefix}.{key}' if prefix else str(key)).items()}


class Checkpointer:
  """An orbax CheckpointManager in workdir/checkpoints with this project's policies."""

  def __init__(self, workdir, config):
    self.config = config
    # orbax wants absolute paths; a relative --workdir is taken from the current directory.
    workdir = str(workdir)
    workdir = workdir if '://' in workdir else os.path.abspath(workdir)
    self.directory = epath.Path(workdir) / 'checkpoints'
    preserve = [policies.LatestN(config.keep or None)]
    if config.keep_best:
      # Unlike orbax's default, steps without metrics are left to LatestN, not kept forever.
      preserve.append(policies.BestN(get_metric_fn=_val_loss, reverse=True, n=1,
                                     keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        # Nothing is written until the first save: a refused workdir stays as it was.
        create=False,
        save_root_metadata=False,
        enable_async_checkpointing=config.async_save,
        preservation_policy=policies.AnyPreservationPolicy(preserve),
        # best_fn only makes orbax write each step's metrics, so the best survives restarts.
        best_fn=_val_loss if config.keep_best else None,
        best_mode='min')
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._meta = None

  def check_compatible(self, meta, ignore=()):
    """Raises IncompatibleCheckpointError if the saved steps are of another model.

    Compares meta['model'] and meta['finetune'] (the arrays' shapes and meaning) with the saved
    meta. Reads only. The first save after this call writes `meta` when none is saved.
    ignore: fields allowed to change, e.g. ('model.remat', 'model.dtype'), which leave the
    saved arrays as they are.
    """
    self._meta = _json(meta)
    saved = self.saved_meta()
    if saved is None:
      return
    compared = lambda m: _flatten({k: m[k] for k in ('model', 'finetune') if k in m})
    saved, now = compared(saved), compared(self._meta)
    absent = '<absent>'
    differ = [f'{k}: saved {saved.get(k, absent)!r}, now {now.get(k, absent)!r}'
              for k in sorted(set(saved) | set(now))
              if k not in ignore and saved.get(k, absent) != now.get(k, absent)]
    if differ:
      raise IncompatibleCheckpointError(
          f'The checkpoints in {self.directory} (latest step {self.latest_step()}) are of '
          f'another model; these fields differ:\n  ' + '\n  '.join(differ) +
          '\nUse another --workdir for this model (nothing there was changed).')

  def saved_meta(self):
    """The meta the saved steps were written with, or None before the first save."""
    path = self.directory / META_FILE
    if self.latest_step() is None or not path.exists():
      return None
    return json.loads(path.read_text())

  def latest_step(self):
    return self._manager.latest_step()

  def best_step(self):
    """The kept step with the lowest val_loss (the latest one without keep_best)."""
    return self._manager.best_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step, state, data_iterator=None, extra=None, metrics=None, force=False):
    """Saves at multiples of every_steps, or any step with force; True if it saved.

    metrics, e.g. {'val_loss': 2.3}, rank steps for keep_best; None leaves a step unranked.
    Saving a step twice is a no-op, so a forced save after a scheduled one is safe.
    """
    step = int(step)
    if not (force or step % self.config.every_steps == 0) or step in self.all_steps():
      return False
    self._write_meta()
    items = dict(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(_json(extra)))
    if data_iterator is not None:
      # Grain's handler writes synchronously, so the state is that of this step.
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    # {} rather than None: orbax warns on every unranked save; BestN ranks {} last.
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    return self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                              force=True)

  def _write_meta(self):
    path = self.directory / META_FILE
    if self._meta is None or jax.process_index():
      return
    if path.exists() and self.latest_step() is not None:
      return
    self.directory.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (path.name + '.tmp')
    tmp.write_text(json.dumps(self._meta, indent=2, ensure_ascii=False))
    # replace, not rename: a run killed before its first step was committed leaves a meta.json
    # with no steps, and rename refused to overwrite it, failing the relaunch's first save.
    tmp.replace(path)

  def restore(self, abstract_state, data_iterator=None, step=None):
    """(state, step, extra) of `step` (default the latest); the iterator is set in place.

    abstract_state: a pytree of jax.ShapeDtypeStruct with .sharding, e.g. nnx.eval_shape's
    state with the mesh's shardings; the arrays come back with those, whatever mesh wrote them.
    """
    step = self.latest_step() if step is None else int(step)
    if step not in self.all_steps():
      raise FileNotFoundError(f'No checkpoint of step {step} in {self.directory} (steps: '
                              f'{self.all_steps()}).')
    step_dir = self.directory / str(step)
    items = dict(state=ocp.args.StandardRestore(abstract_state),
                 extra=ocp.args.JsonRestore())
    if data_iterator is not None:
      if (step_dir / 'data').exists():
        items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
      else:
        logging.warning('%s has no data iterator state; the iterator starts afresh.', step_dir)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax and tensorstore raise many types for a bad file
      # The first line only: tensorstore appends its whole spec (the cause keeps it all).
      reason = (str(e).splitlines() or [''])[0][:300]
      raise UnreadableCheckpointError(
          f'Could not restore the checkpoint in {step_dir}: {type(e).__name__}: {reason}\n'
          'It is corrupt, incomplete or of another state layout. Delete that step directory '
          f'to resume from an earlier step ({[s for s in self.all_steps() if s != step]}).'
      ) from e
    return restored.state, step, dict(restored.extra or {})

  def restore_params(self, abstract_params, step):
    """Only the model params in `abstract_params` from a step (no optimizer state is read).

    abstract_params: an nnx.State of jax.ShapeDtypeStruct with .sharding, a subset of the
    model part (the first element) of the saved state, e.g. the Params of a pretrained base
    or the adapters of a fine-tuning run.
    """
    step_dir = self.directory / str(step)
    item = nnx.State({0: abstract_params})
    args = ocp.args.PyTreeRestore(
        item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(state=args))
    except Exception as e:  # orbax and tensorstore raise many types for a bad file
      reason = (str(e).splitlines() or [''])[0][:300]
      raise UnreadableCheckpointError(
          f'Could not restore the params in {step_dir}: {type(e).__name__}: {reason}') from e
    return restored.state[0]

  def saved_shapes(self, step):
    """{'0.blocks.0.attn.q.a': (128, 8), ...}: each saved array's shape, from the metadata."""
    tree = ocp.PyTreeCheckpointHandler().metadata(self.directory / str(step) / 'state')
    leaves = jax.tree.leaves(getattr(tree, 'tree', tree), is_leaf=lambda x: hasattr(x, 'shape'))
    return {leaf.name.removesuffix('.value'): tuple(leaf.shape) for leaf in leaves}

  def wait(self):
    """Blocks until async saves are written (and old steps deleted)."""
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class PreemptionGuard:
  """Turns SIGTERM into `should_stop(step) == True`, so the loop can save and exit cleanly.

  Single process: a handler sets a flag (a second signal acts as if no guard were installed).
  Under jax.distributed, no handler is installed: JAX's preemption service already catches
  SIGTERM (a Python handler would replace its own) and agrees on one step for every host, so
  should_stop must be called at every step on every host. The previous handlers come back on
  exit.
  """

  def __init__(self, signals=(signal.SIGTERM,)):
    self._signals = tuple(signals)
    self._previous = {}
    self._distributed = False
    self._logged = False
    self.received = None  # the signal number once one arrived

  def __enter__(self):
    self._distributed = jax.distributed.is_initialized()
    if self._distributed:
      return self
    if threading.current_thread() is not threading.main_thread():
      logging.warning('PreemptionGuard outside the main thread: signals are not caught.')
      return self
    for sig in self._signals:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.received is not None:
      # Asked twice: stop waiting for the loop and do what the signal did before.
      previous = self._previous.pop(signum, None)
      signal.signal(signum, signal.SIG_DFL if previous is None else previous)
      signal.raise_signal(signum)
      return
    self.received = signum  # only a flag: logging here could deadlock on its own lock

  def should_stop(self, step):
    """True once a signal came (on every host at the same step under jax.distributed)."""
    if self._distributed:
      try:
        return multihost_utils.reached_preemption_sync_point(int(step))
      except RuntimeError:  # the preemption service is off (jax_enable_preemption_service)
        return False
    if self.received is not None and not self._logged:
      self._logged = True
      logging.warning('Received %s at step %d: stopping.', signal.Signals(self.received).name,
                      step)
    return self.received is not None
