"""Device mesh, logical-axis rules, and placement of params and batches.

    mesh = sharding.make_mesh(config.mesh)            # axes ('data', 'fsdp', 'tensor')
    with sharding.use(mesh):                          # params are created already sharded
      model = Transformer(...)
    batch = sharding.global_batch(local_batch, mesh)  # process-local numpy -> global jax.Array

Params name their dimensions with logical axes (model.LOGICAL_AXES); RULES maps each onto mesh
axes, MaxText-style, so pure data parallel, FSDP, tensor parallel and mixes differ only in the
mesh shape: data=-1 is data parallel, fsdp=N shards params and optimizer state N ways, tensor=N
splits heads, MLP and vocab N ways. An axis of size 1 shards nothing, so one rule table serves all.
"""

import contextlib
import math

from flax import nnx
import jax
import ml_collections
import numpy as np

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH = ('data', 'fsdp')  # the batch is split over every axis that does not split the model

RULES = (
    ('batch', BATCH),
    ('length', None),
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('head_dim', None),
)


def default_config():
  c = ml_collections.ConfigDict()
  c.data = -1  # -1: the devices left over by the other axes
  c.fsdp = 1
  c.tensor = 1
  return c


def mesh_shape(config, device_count):
  """The (data, fsdp, tensor) sizes for device_count devices; at most one may be -1."""
  sizes = [int(config[a]) for a in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'Mesh {dict(zip(MESH_AXES, sizes))}: sizes must be positive, with at most '
                     'one -1 (the devices left over).')
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if device_count % fixed:
      raise ValueError(f'Mesh {dict(zip(MESH_AXES, sizes))} needs a multiple of {fixed} devices; '
                       f'there are {device_count}.')
    sizes[sizes.index(-1)] = device_count // fixed
  elif fixed != device_count:
    raise ValueError(f'Mesh {dict(zip(MESH_AXES, sizes))} needs {fixed} devices; there are '
                     f'{device_count}. Set one axis to -1 to use them all.')
  return tuple(sizes)


def make_mesh(config, devices=None):
  """A jax Mesh over `devices` (default: all, on every host) with axes MESH_AXES.

  Axes are Auto: params, optimizer state and batches are placed by the rules, and XLA
  propagates shardings through the activations in between.
  """
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=devices)


@contextlib.contextmanager
def use(mesh):
  """Makes `mesh` and RULES current: modules created inside get sharded params."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(RULES):
    yield


def logical_to_spec(axes):
  """A PartitionSpec from logical axis names, e.g. ('batch', 'length') -> P(('data','fsdp'))."""
  table = dict(RULES)
  return jax.P(*(table[a] if a is not None else None for a in axes))


def batch_sharding(mesh):
  """Batches are [batch, length]: rows split over data and fsdp, length kept whole."""
  return jax.NamedSharding(mesh, logical_to_spec(('batch', 'length')))


def state_shardings(abstract_state, mesh):
  """NamedShardings of an (abstract) nnx state, from each variable's logical axes."""
  with nnx.logical_axis_rules(RULES):
    return nnx.get_named_sharding(abstract_state, mesh)


def batch_divisor(mesh):
  """Global batch rows must be a multiple of this (the devices that split the batch)."""
  return math.prod(mesh.shape[a] for a in BATCH)


def global_batch(local_batch, mesh):
  """Process-local numpy arrays [local_rows, ...] -> global jax.Arrays sharded by batch rows.

  Each process holds the rows of its own data shard (the pipeline shards by process), so the
  global batch is the processes' rows concatenated in process order.
  """
  sharding = batch_sharding(mesh)

  def place(x):
    x = np.asarray(x)
    shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
    return jax.make_array_from_process_local_data(sharding, x, shape)

  return jax.tree.map(place, local_batch)
