"""Ahead-of-time compiles of the real train step for TPU topologies, with libtpu, on the CPU.

Every compile runs in a process of its own, so libtpu never loads into the pytest workers that
run the other tests. The config is experiments/base_tpu.py (batch 256 x 256, mesh data x fsdp=4)
with one layer: on 2 cores that compiles in 30 to 60 s, all 12 layers in 75 s to 3 minutes
depending on the load, so the full compile is left to the command in poetjax/aot.py. The
multi-host and command-line tests also shrink the widths and the batch, which they do not test.
"""

import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import pytest

from poetjax import aot
from poetjax import sharding

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE = str(ROOT / 'experiments' / 'base_tpu.py')
# Compile time grows with the widths and the batch as well as with depth.
SMALL = {'model.d_model': 128, 'model.num_heads': 4, 'model.num_kv_heads': 2,
         'model.head_dim': 32, 'model.mlp_dim': 256, 'model.vocab_size': 1024,
         'data.pipeline.batch_size': 32}

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                  reason='libtpu is not installed (Linux x86-64 only)')

# Compiles BASE with overrides for a topology; prints the summary, the topology's device ids,
# the mesh's, and every state leaf's shape and compiled input shard shape.
_COMPILE = """
import importlib.util, json, sys
import jax
jax.config.update('jax_platforms', 'cpu')
from poetjax import aot
spec = importlib.util.spec_from_file_location('experiment', sys.argv[1])
experiment = importlib.util.module_from_spec(spec)
spec.loader.exec_module(experiment)
cfg = experiment.get_config()
for key, value in json.loads(sys.argv[3]).items():
  *parents, leaf = key.split('.')
  node = cfg
  for p in parents:
    node = node[p]
  node[leaf] = value
summary, trainer, compiled = aot.run(cfg, sys.argv[2])
state = jax.tree_util.tree_flatten_with_path(trainer.abstract_state)[0]
shardings = jax.tree.leaves(compiled.input_shardings[0][0])
print(json.dumps({
    'summary': summary,
    'topology_ids': sorted(d.id for d in aot.topology_devices(sys.argv[2])[0]),
    'mesh_ids': sorted(d.id for d in trainer.mesh.devices.flat),
    'leaves': {jax.tree_util.keystr(p): [a.shape, s.shard_shape(a.shape)]
               for (p, a), s in zip(state, shardings)}}))
"""

# Logical axes of the params (poetjax/model.py), by the end of their path in the state.
LOGICAL_AXES = {
    "['embed']['embedding'].value": ('vocab', 'embed'),
    "['attn']['q']['kernel'].value": ('embed', 'heads', 'head_dim'),
    "['attn']['kv']['kernel'].value": ('embed', None, 'kv_heads', 'head_dim'),
    "['attn']['o']['kernel'].value": ('heads', 'head_dim', 'embed'),
    "['mlp']['gate_up']['kernel'].value": ('embed', None, 'mlp'),
    "['mlp']['down']['kernel'].value": ('mlp', 'embed'),
    "['scale'].value": ('embed',),
}


def _compile(topology, overrides):
  proc = subprocess.run([sys.executable, '-c', _COMPILE, BASE, topology, json.dumps(overrides)],
                        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.splitlines()[-1])


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'poetjax.aot', '--config', BASE, *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600, check=False)


def _expected_shard(shape, axes, mesh):
  """The shard shape RULES give a param with logical `axes` on a mesh of axis sizes `mesh`."""
  spec = tuple(sharding.logical_to_spec(axes)) + (None,) * len(shape)
  out = []
  for size, entry in zip(shape, spec):
    names = () if entry is None else (entry,) if isinstance(entry, str) else entry
    out.append(size // math.prod(mesh[n] for n in names))
  return out


def _check(result, hosts, devices, mesh, layers):
  s = result['summary']
  assert (s['hosts'], s['devices'], s['mesh']) == (hosts, devices, mesh)
  assert result['mesh_ids'] == result['topology_ids'] and len(result['mesh_ids']) == devices
  # Every param, and its AdamW moments, is split as the rules say.
  checked = 0
  for path, (shape, shard) in result['leaves'].items():
    suffix = [k for k in LOGICAL_AXES if path.endswith(k)]
    if suffix:
      assert shard == _expected_shard(shape, LOGICAL_AXES[suffix[0]], mesh), path
      assert math.prod(shard) < math.prod(shape), path
      checked += 1
  assert checked == 3 * (2 + 7 * layers)  # params, mu and nu: 7 per block, embedding, norm
  m = s['memory']
  assert all(m[k] > 0 for k in ('arguments', 'outputs', 'aliases', 'code'))
  assert 0 <= m['arguments'] - m['aliases'] < 2**20  # all but the batch is donated and reused
  assert 0 < m['total'] < s['hbm'] and s['fits']
  assert s['flops_per_device'] > s['model_flops_per_device'] > 0


@needs_libtpu
def test_single_host_v5e_2x4():
  """v5litepod-8: one host, 8 chips; the base config's mesh is data=2 x fsdp=4."""
  result = _compile('v5e:2x4', {'model.num_layers': 1})
  _check(result, hosts=1, devices=8, mesh={'data': 2, 'fsdp': 4, 'tensor': 1}, layers=1)
  s = result['summary']
  assert s['state_bytes_per_device'] == pytest.approx(s['state_bytes'] / 4, rel=1e-3)
  # 32 rows of 256 tokens per chip: at least their float32 logits, 0.4 GiB.
  assert 32 * 256 * 13_568 * 4 < s['memory']['temps'] < s['hbm']


@needs_libtpu
def test_multi_host_v5e_4x4_with_tensor_parallel():
  """v5litepod-16: 4 hosts of 4 chips, compiled in one process; heads, MLP and vocab split 2 ways."""
  result = _compile('v5e:4x4', {**SMALL, 'model.num_layers': 2, 'mesh.tensor': 2})
  _check(result, hosts=4, devices=16, mesh={'data': 2, 'fsdp': 4, 'tensor': 2}, layers=2)
  s = result['summary']
  # Norm scales have no tensor-parallel axis: a quarter of them per chip, not an eighth.
  assert s['state_bytes_per_device'] == pytest.approx(s['state_bytes'] / 8, rel=1e-2)


@needs_libtpu
def test_cli_table_and_json():
  flags = [f'--config.{k}={v}' for k, v in SMALL.items()]
  proc = _cli('--topology', 'v4:2x2x1', '--config.mesh.fsdp=2', '--config.model.num_layers=1',
              *flags)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert lines[0].startswith('v4:2x2x1 (v4-8, TPU v4): 1 host(s), 4 devices, mesh data=2 fsdp=2')
  assert any(line.startswith('total') and 'of 32 GiB HBM' in line for line in lines)
  summary = json.loads(lines[-1])
  assert summary['accelerator'] == 'v4-8' and summary['fits']


@needs_libtpu
def test_cli_fails_when_it_does_not_fit():
  # 1024 rows of 256 tokens per chip: the float32 logits alone are 13 GiB.
  proc = _cli('--topology', 'v5e:2x2', '--config.model.num_layers=1',
              '--config.data.pipeline.batch_size=4096')
  assert proc.returncode == 1
  # libtpu refuses it while compiling, or it compiles and fails the check on the summary.
  assert 'error: the train step does not fit' in proc.stderr
  assert '16 GiB' in proc.stderr and '--config.model.remat' in proc.stderr


@pytest.mark.parametrize('name, bounds', [('v5e:2x4', (2, 4, 1)), ('v4:2x2x2', (2, 2, 2)),
                                          ('v6e:4x4', (4, 4, 1))])
def test_parse_topology(name, bounds):
  assert aot.parse_topology(name)[1] == bounds


@pytest.mark.parametrize('name', ['v5e:2x2x1', 'v4:2x2', 'v7:2x2', 'v5e', 'v5e:2xa'])
def test_parse_topology_rejects(name):
  with pytest.raises(ValueError, match='Topology|generation'):
    aot.parse_topology(name)
