"""Fine-tuning modes: what trains, what stays bit-identical, merging, sharding, bad input."""

import importlib.util
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poetjax import checkpoint
from poetjax import model
from poetjax import peft
from poetjax import sampler
from poetjax import sharding
from poetjax import train
from poetjax import workdir

VOCAB = 128
MODEL = model.config_for('tiny', vocab_size=VOCAB)
ADDED = (nnx.LoRAParam, peft.BiasParam, peft.PromptParam)


def _batch(seed=0, rows=8, length=16):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, VOCAB, (rows, length + 1)).astype(np.int32)
  cut = rng.integers(3, length - 3, rows)  # two poems per row
  pos = np.arange(length)
  segment_ids = np.where(pos[None] < cut[:, None], 1, 2).astype(np.int32)
  positions = np.where(segment_ids == 1, pos, pos - cut[:, None]).astype(np.int32)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'segment_ids': segment_ids,
          'positions': positions, 'weights': np.ones((rows, length), np.float32)}


def _finetune(mode, **overrides):
  c = peft.default_config()
  c.mode, c.base = mode, 'unused'
  c.update(overrides)
  return c


def _mesh(sizes=(1, 1, 1)):
  c = sharding.default_config()
  c.data, c.fsdp, c.tensor = sizes
  return sharding.make_mesh(c, jax.devices()[:int(np.prod(sizes))])


@pytest.fixture(scope='module')
def base():
  """A 'pretrained' tiny model: random params, as a plain Transformer's Param state."""
  net = model.Transformer(MODEL, rngs=nnx.Rngs(params=7, dropout=8))
  return net, jax.device_get(nnx.state(net, nnx.Param))


def _trainer(mode, base_params, mesh=None, **overrides):
  config = train.default_config()
  config.warmup_steps = 0
  config.learning_rate = 1e-2
  return train.Trainer(MODEL, config, mesh or _mesh(), finetune=_finetune(mode, **overrides),
                       base_params=base_params)


def _logits(net, batch):
  return np.asarray(net(batch['inputs'], batch['positions'], batch['segment_ids']))


def _flat(tree):
  return {'.'.join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(tree)}


@pytest.mark.parametrize('mode', ['lora', 'bitfit'])
def test_adapters_at_init_reproduce_the_base_exactly(base, mode):
  net, params = base
  batch = _batch()
  trainer = _trainer(mode, params)
  np.testing.assert_array_equal(_logits(trainer.model, batch), _logits(net, batch))


@pytest.mark.parametrize('mode,trains', [
    ('lora', lambda path: path.endswith(('.a', '.b'))),
    ('bitfit', lambda path: path.endswith(('attn.q.bias', 'attn.kv.bias', 'attn.o.bias',
                                           'norm.scale'))),
    ('prompt', lambda path: path == 'prompt'),
])
def test_a_step_changes_only_the_trainable_params(base, mode, trains):
  _, params = base
  trainer = _trainer(mode, params)
  before = _flat(nnx.state(trainer.model, nnx.Param))
  for seed in range(2):  # LoRA's A moves only once B is nonzero
    metrics = trainer.step(_batch(seed))
  assert bool(metrics['finite'])
  after = _flat(nnx.state(trainer.model, nnx.Param))
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  expected = {k for k in before if trains(k)}
  assert changed == expected, (sorted(changed ^ expected))
  # The optimizer holds moments for the trainable params only.
  moments = [p for p, _ in nnx.to_flat_state(nnx.state(nnx.merge(
      trainer.graphdef, trainer.frozen, trainer.state)[1].opt_state))]
  assert moments and all(trains('.'.join(map(str, p[p.index('mu') + 1:])))
                         for p in moments if 'mu' in p)


def test_lora_counts_and_checkpoint_hold_adapters_only(base, tmp_path):
  _, params = base
  trainer = _trainer('lora', params, lora_rank=4)
  trained, total = peft.count(trainer.model, 'lora')
  assert total == model.count_params(model.Transformer(MODEL, rngs=nnx.Rngs(0)))
  c = MODEL  # rank 4 beside q, kv and o (the default targets): A [in, 4] and B [4, out] each
  per_layer = 4 * (c.d_model + c.num_heads * c.head_dim) + 4 * (c.d_model + 2 * c.num_kv_heads *
              c.head_dim) + 4 * (c.num_heads * c.head_dim + c.d_model)
  assert trained == c.num_layers * per_layer
  ckpt = checkpoint.Checkpointer(tmp_path, checkpoint.default_config())
  ckpt.save(1, trainer.state, force=True)
  ckpt.wait()
  saved = ckpt.saved_shapes(1)
  arrays = [k for k in saved if k.startswith('0.') and 'rngs' not in k]
  assert arrays and all(k.endswith(('.a', '.b')) for k in arrays), arrays
  assert not any('kernel' in k or 'embedding' in k or 'scale' in k for k in saved)
  ckpt.close()


def test_merged_lora_equals_unmerged(base):
  _, params = base
  trainer = _trainer('lora', params)
  for seed in range(3):
    trainer.step(_batch(seed))
  batch = _batch(9)
  unmerged = _logits(trainer.model, batch)
  merged_net = peft.merge(trainer.model)
  assert not any(isinstance(m, peft.LoRA) for _, m in nnx.iter_graph(merged_net))
  # float32: folding B A into W reorders the sums, so the last bits differ.
  np.testing.assert_allclose(_logits(merged_net, batch), unmerged, rtol=1e-5, atol=1e-5)
  assert np.abs(unmerged - _logits(model.Transformer(MODEL, rngs=nnx.Rngs(0)), batch)).max() > 0


def test_sharded_lora_step_equals_one_device(base):
  _, params = base
  one = _trainer('lora', params, lora_dropout=0.0)
  eight = _trainer('lora', params, mesh=_mesh((2, 2, 2)))
  for seed in range(2):
    m1, m8 = one.step(_batch(seed)), eight.step(_batch(seed))
    np.testing.assert_allclose(m8['loss'], m1['loss'], rtol=2e-5)
  a = _flat(nnx.state(one.model, nnx.LoRAParam))
  b = _flat(nnx.state(eight.model, nnx.LoRAParam))
  for k in a:
    np.testing.assert_allclose(b[k], a[k], rtol=2e-4, atol=2e-6, err_msg=k)
  # Adapters are sharded like their base kernels: A over the kernel's input axes.
  q = eight.model.blocks[0].attn.q
  assert q.a[...].sharding.spec[0] == q.base.kernel[...].sharding.spec[0] == 'fsdp'
  assert q.b[...].sharding.spec[1] == q.base.kernel[...].sharding.spec[1] == 'tensor'


def test_lora_dropout_trains_and_is_off_outside_training(base):
  _, params = base
  trainer = _trainer('lora', params, lora_dropout=0.5)
  batch = _batch()
  assert np.array_equal(_logits(trainer.model, batch), _logits(trainer.model, batch))
  assert bool(trainer.step(batch)['finite'])


def test_soft_prompt_sampling_equals_full_forward_argmax(base):
  _, params = base
  trainer = _trainer('prompt', params, prompt_length=5)
  for seed in range(2):
    trainer.step(_batch(seed))
  net = trainer.model
  prompts = [[1, 5, 9], [2, 3, 4, 6, 8, 10, 12]]
  out = sampler.generate(net, prompts, max_new_tokens=6, temperature=0.0)
  # Greedy: each new token is the argmax of a full forward pass over everything before it.
  for row, prompt in enumerate(prompts):
    ids = list(prompt) + out.tokens[row].tolist()
    logits = net(jnp.asarray([ids]))[0, len(prompt) - 1:-1]
    assert jnp.argmax(logits, -1).tolist() == out.tokens[row].tolist(), row


def test_target_that_matches_nothing_lists_the_modules():
  net = model.Transformer(MODEL, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'match no module.*blocks\.N\.attn\.q.*blocks\.N\.mlp\.down'):
    peft.apply(net, _finetune('lora', targets=('attn.query',)))


def test_missing_base_says_where_it_looked(tmp_path):
  with pytest.raises(FileNotFoundError, match=f'{tmp_path}/nowhere.*config.json'):
    workdir.resolve_base(_finetune('lora', base=str(tmp_path / 'nowhere')))
  with pytest.raises(ValueError, match='needs a pretrained base'):
    workdir.resolve_base(_finetune('lora', base=None))


def test_adapter_on_a_base_of_another_shape_names_both_shapes(base, tmp_path):
  _, params = base
  trainer = _trainer('lora', params, lora_rank=4)
  with checkpoint.Checkpointer(tmp_path, checkpoint.default_config()) as ckpt:
    ckpt.save(1, trainer.state, force=True)
    ckpt.wait()
    wider = model.config_for('tiny', vocab_size=VOCAB, d_model=96)
    other = train.create_model(wider, _finetune('lora', lora_rank=4))
    expected = nnx.state(other, nnx.LoRAParam)
    with pytest.raises(workdir.AdapterMismatchError,
                       match=r'attn\.q\.a: the adapter has \[64, 4\], this base needs \[96, 4\]'):
      workdir.check_adapter_fits(ckpt, 1, expected, 'adapter', 'base')


@pytest.mark.parametrize('name,arg,filters', [
    ('lora_poet', 'author=杜甫', {'author': '杜甫'}),
    ('lora_poet', None, {'author': '李白'}),
    ('lora_song_ci', None, {'dynasty': '宋', 'genre': '词'}),
    ('lora_form', '五言律诗', {'form': '五言律诗'}),
])
def test_fine_tuning_experiments_name_their_subset_and_base(name, arg, filters):
  path = pathlib.Path(__file__).resolve().parents[1] / 'experiments' / f'{name}.py'
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  assert config.finetune.mode == 'lora' and config.finetune.base == 'runs/tiny'
  assert config.data.pipeline.filters.to_dict() == filters
  peft.check_config(config.finetune)
