"""Ahead-of-time compile of the train step for a TPU topology, on a machine without a TPU.

    python -m poetjax.aot --config experiments/base_tpu.py --topology v5e:2x4
    python -m poetjax.aot --config experiments/large_tpu_multihost.py --topology v5e:4x8

The real train step (the Trainer's jitted step with its shardings and donated state) is lowered
from abstract shapes for the global batch and compiled by libtpu's compiler for the topology's
devices: nothing is allocated, and a multi-host topology compiles in one process. Prints the
per-device memory XLA plans (arguments, outputs, aliased donations, temporaries, code) against
the chip's HBM as a table, then one JSON line (bytes); exits with status 1 when the step does
not fit. Topologies are GENERATION:CHIP_BOUNDS, 2-D for v5e and v6e, 3-D for v4 and v5p:
v5e:2x2, v5e:2x4 (v5litepod-8, one host), v5e:4x4 (4 hosts), v4:2x2x1, v4:2x2x2 (2 hosts),
v5p:2x2x1, v6e:2x4. Needs the libtpu wheel that matches jax (requirements.txt). Any config
field can be overridden, e.g. --config.mesh.fsdp=8 --config.model.remat=True.

Expected for base_tpu (about 75 s each on 2 idle cores): on v5e:2x4, mesh data=2 fsdp=4
tensor=1, 11.45 GiB of 16 GiB per chip (11.0 GiB of it activations and other temporaries),
train state 0.27 GiB of 1.07 GiB per chip, 4.95 TFLOP per chip per step; on v5e:4x4 (4 hosts),
mesh data=4 fsdp=4 tensor=1, 6.10 GiB per chip, 2.48 TFLOP.
"""

import dataclasses
import json
import math
import os
import sys
import time

from absl import app
from absl import flags
import jax
from jax.experimental import topologies
from ml_collections import config_flags

from poetjax import model as model_lib
from poetjax import sharding
from poetjax import train

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  hbm_gib: int
  accelerator: str  # Cloud TPU type prefix: v5litepod-8 is 8 v5e chips, v4-8 is 4 v4 chips
  megacore: bool  # two TensorCores as one jax device (v4, v5p); v4-N and v5p-N count cores
  host_chips: int  # chips on one host; larger slices have 2x2x1 chips per host


CHIPS = {
    'v4': Chip(32, 'v4', True, 4),
    'v5e': Chip(16, 'v5litepod', False, 8),
    'v5p': Chip(95, 'v5p', True, 4),
    'v6e': Chip(32, 'v6e', False, 8),
}


def parse_topology(name):
  """'v5e:2x4' -> (CHIPS['v5e'], (2, 4, 1))."""
  generation, _, bounds = name.partition(':')
  if generation not in CHIPS:
    raise ValueError(f'Unknown TPU generation in topology {name!r}; use one of '
                     f'{sorted(CHIPS)}, e.g. v5e:2x4 or v4:2x2x2.')
  chip = CHIPS[generation]
  rank = 3 if chip.megacore else 2
  try:
    dims = tuple(int(b) for b in bounds.split('x'))
  except ValueError:
    dims = ()
  if len(dims) != rank or min(dims) < 1:
    raise ValueError(f'Topology {name!r}: {generation} takes {rank}-D chip bounds, e.g. '
                     f'{generation}:{"x".join(["2"] * rank)}.')
  return chip, (dims + (1,))[:3]


def topology_devices(name):
  """The compile-only devices of TPU topology `name`, its Chip and its Cloud TPU type."""
  chip, bounds = parse_topology(name)
  chips = math.prod(bounds)
  accelerator = f'{chip.accelerator}-{chips * (2 if chip.megacore else 1)}'
  # Without these libtpu looks for a TPU VM's metadata and prints warnings; the topology does
  # not depend on them. Nothing runs on a chip, so several processes may load libtpu at once.
  os.environ.setdefault('TPU_ACCELERATOR_TYPE', accelerator)
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  try:
    topology = topologies.get_topology_desc(
        platform='tpu', topology_name=name,
        chip_config_name='megacore' if chip.megacore else 'default',
        chips_per_host_bounds=bounds if chips <= chip.host_chips else (2, 2, 1), num_slices=1)
  except jax.errors.JaxRuntimeError as e:  # a layout libtpu does not know
    raise ValueError(f'Topology {name!r}: {e}') from e
  except RuntimeError as e:
    if 'not installed' not in str(e):
      raise
    raise ValueError('libtpu is not installed: pip install -r requirements.txt (its version '
                     'must match jax).') from e
  return topology.devices, chip, accelerator


def compile_step(cfg, devices):
  """The train step of experiment config `cfg` for `devices`: (trainer, compiled, seconds)."""
  mesh = sharding.make_mesh(cfg.mesh, devices=devices)
  trainer = train.Trainer(model_lib.ModelConfig(**cfg.model), cfg.train, mesh, cfg.seed,
                          materialize=False)
  rows = cfg.data.pipeline.batch_size
  trainer.check_batch(rows)
  start = time.perf_counter()
  compiled = trainer.lower(rows, cfg.data.pipeline.seq_len).compile()
  return trainer, compiled, time.perf_counter() - start


def state_bytes(abstract_state, shardings):
  """Bytes of the train state in all and on one device, under `shardings`."""
  total = per_device = 0
  for a, s in zip(jax.tree.leaves(abstract_state), jax.tree.leaves(shardings)):
    total += math.prod(a.shape) * a.dtype.itemsize
    per_device += math.prod(s.shard_shape(a.shape)) * a.dtype.itemsize
  return total, per_device


def run(cfg, name):
  """Compiles the train step of `cfg` for topology `name`: (summary, trainer, compiled).

  The summary: topology, hosts, devices, mesh, per-device memory in bytes against HBM, FLOPs.
  """
  devices, chip, accelerator = topology_devices(name)
  trainer, compiled, compile_s = compile_step(cfg, devices)
  m = compiled.memory_analysis()
  memory = {'arguments': m.argument_size_in_bytes, 'outputs': m.output_size_in_bytes,
            'aliases': m.alias_size_in_bytes, 'temps': m.temp_size_in_bytes,
            'code': m.generated_code_size_in_bytes}
  # The donated state's outputs reuse its argument buffers; the program itself sits in HBM too.
  memory['total'] = (memory['arguments'] + memory['outputs'] - memory['aliases']
                     + memory['temps'] + memory['code'])
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}  # a list in older jax
  # The state as the executable takes it: input shardings of (state, batch), no kwargs.
  state_total, state_device = state_bytes(trainer.abstract_state,
                                          compiled.input_shardings[0][0])
  rows, seq_len = cfg.data.pipeline.batch_size, cfg.data.pipeline.seq_len
  # 6N + attention (PaLM), what MFU counts; XLA's count adds the elementwise work.
  model_flops = model_lib.flops_per_token(trainer.model_config, seq_len) * rows * seq_len
  hbm = chip.hbm_gib * GIB
  summary = {
      'topology': name, 'accelerator': accelerator, 'device_kind': devices[0].device_kind,
      'hosts': len({d.process_index for d in devices}), 'devices': len(devices),
      'mesh': dict(trainer.mesh.shape), 'batch': [rows, seq_len],
      'compile_s': round(compile_s, 1), 'memory': memory, 'hbm': hbm,
      'hbm_fraction': round(memory['total'] / hbm, 4), 'fits': memory['total'] <= hbm,
      'state_bytes': state_total, 'state_bytes_per_device': state_device,
      'flops_per_device': cost.get('flops'),
      'model_flops_per_device': model_flops / len(devices),
  }
  return summary, trainer, compiled


def print_report(s):
  mesh = ' '.join(f'{k}={v}' for k, v in s['mesh'].items())
  print(f'{s["topology"]} ({s["accelerator"]}, {s["device_kind"]}): {s["hosts"]} host(s), '
        f'{s["devices"]} devices, mesh {mesh}, batch {s["batch"][0]} x {s["batch"][1]}, '
        f'compiled in {s["compile_s"]} s')
  gib = lambda b: f'{b / GIB:.3f} GiB'
  rows = [(k, gib(s['memory'][k]), '') for k in ('arguments', 'outputs', 'aliases', 'temps',
                                                  'code')]
  rows.append(('total', gib(s['memory']['total']),
               f'{s["hbm_fraction"]:.1%} of {s["hbm"] // GIB} GiB HBM'))
  rows.append(('train state', gib(s['state_bytes_per_device']),
               f'of {gib(s["state_bytes"])} in all'))
  if s['flops_per_device']:
    rows.append(('FLOPs per step', f'{s["flops_per_device"] / 1e12:.3f} T',
                 f'model (6N + attention): {s["model_flops_per_device"] / 1e12:.3f} T'))
  print(f'{"per device":<16}{"":>12}')
  for name, value, note in rows:
    print(f'{name:<16}{value:>12}  {note}'.rstrip())
  print(json.dumps(s))


def _advice(cfg):
  remat = '' if cfg.model.remat else ', recompute activations (--config.model.remat=True)'
  return (f'Shard the state further (--config.mesh.fsdp){remat}, or split the batch into '
          'micro-batches (--config.train.grad_accum).')


def main(argv):
  del argv
  # The TPU devices here are compile-only; the default backend stays the CPU.
  if jax.config.jax_platforms is None:
    jax.config.update('jax_platforms', 'cpu')
  cfg, name = flags.FLAGS.config, flags.FLAGS.topology
  try:
    summary, _, _ = run(cfg, name)
  except ValueError as e:
    sys.exit(f'error: {e}')
  except jax.errors.JaxRuntimeError as e:
    # libtpu refuses some programs over the HBM it can use (15.75 GiB of a v5e's 16); others
    # compile and fail the check on the summary below.
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    sys.exit(f'error: the train step does not fit in the HBM of {name} '
             f'({parse_topology(name)[0].hbm_gib} GiB per chip): {str(e).splitlines()[0]}\n'
             f'{_advice(cfg)}')
  print_report(summary)
  if not summary['fits']:
    sys.exit(f'error: the train step does not fit: it needs '
             f'{summary["memory"]["total"] / GIB:.2f} GiB per device, more than the '
             f'{summary["hbm"] // GIB} GiB of HBM of a {summary["device_kind"]} chip.\n'
             f'{_advice(cfg)}')


if __name__ == '__main__':
  # Defined here, not on import: run() is also a library call (tests, other tools).
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.DEFINE_string('topology', None, 'TPU topology, e.g. v5e:2x4, v5e:4x4, v4:2x2x2.')
  flags.mark_flags_as_required(['config', 'topology'])
  app.run(main)
