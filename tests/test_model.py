"""The transformer on the tiny preset, float32: masking, packing, GQA, remat, dtypes, presets."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poetjax import model

VOCAB = 128
B, T = 2, 16


def _config(**overrides):
  return model.config_for('tiny', vocab_size=VOCAB, **overrides)


def _model(seed=0, **overrides):
  return model.Transformer(_config(**overrides), rngs=nnx.Rngs(seed))


@nnx.jit(static_argnames='deterministic')
def _apply(m, *args, deterministic=True):
  return m(*args, deterministic=deterministic)


def _tokens(seed=0, shape=(B, T)):
  return jax.random.randint(jax.random.key(seed), shape, 1, VOCAB)


def test_shapes_and_dtypes():
  m = _model()
  logits = _apply(m, _tokens())
  assert logits.shape == (B, T, VOCAB) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
  params = jax.tree.leaves(nnx.state(m, nnx.Param))
  assert all(p.dtype == jnp.float32 for p in params)


def test_causal():
  m = _model()
  x = _tokens()
  y = x.at[:, 10].set((x[:, 10] + 1) % VOCAB)
  a, b = _apply(m, x), _apply(m, y)
  np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-6)
  assert not np.allclose(a[:, 10:], b[:, 10:])


def _packed_row():
  """One row of three poems (6, 5 and 4 tokens) and one padding token."""
  segment_ids = jnp.array([[1] * 6 + [2] * 5 + [3] * 4 + [0]])
  positions = jnp.array([list(range(6)) + list(range(5)) + list(range(4)) + [0]])
  return _tokens(1, (1, 16)).at[:, -1].set(0), positions, segment_ids


def test_packed_segments_are_independent():
  m = _model()
  x, positions, segment_ids = _packed_row()
  y = x.at[:, 6:11].set((x[:, 6:11] + 7) % VOCAB)  # rewrite the second poem
  a, b = _apply(m, x, positions, segment_ids), _apply(m, y, positions, segment_ids)
  others = np.asarray(segment_ids[0] != 2)
  np.testing.assert_allclose(a[:, others], b[:, others], atol=1e-6)
  assert not np.allclose(a[:, ~others], b[:, ~others])
  assert np.isfinite(a).all()  # the padding token is masked without NaNs


def test_packed_poem_equals_the_poem_alone():
  m = _model()
  x, positions, segment_ids = _packed_row()
  packed = _apply(m, x, positions, segment_ids)[:, 11:15]
  alone = _apply(m, x[:, 11:15])  # default positions start at 0, one segment
  np.testing.assert_allclose(packed, alone, atol=1e-5)


def _reference_attention(attn, x, config):
  """Textbook causal multi-head attention with the same weights, in numpy."""
  x = np.asarray(x, np.float64)
  kv = np.asarray(attn.kv.kernel[...], np.float64)
  q = np.einsum('bte,ehd->bthd', x, np.asarray(attn.q.kernel[...], np.float64))
  k, v = np.einsum('bte,ehd->bthd', x, kv[:, 0]), np.einsum('bte,ehd->bthd', x, kv[:, 1])
  half = config.head_dim // 2
  angle = np.arange(x.shape[1])[:, None] * config.rope_base ** (-np.arange(half) / half)
  sin, cos = np.sin(angle)[None, :, None], np.cos(angle)[None, :, None]

  def rotate(a):
    a1, a2 = np.split(a, 2, axis=-1)
    return np.concatenate([a1 * cos - a2 * sin, a2 * cos + a1 * sin], -1)

  q, k = rotate(q), rotate(k)
  scores = np.einsum('bthd,bshd->bhts', q, k) / np.sqrt(config.head_dim)
  t = x.shape[1]
  scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  out = np.einsum('bhts,bshd->bthd', probs, v)
  return np.einsum('bthd,hde->bte', out, np.asarray(attn.o.kernel[...], np.float64))


def test_multi_head_attention_matches_reference():
  config = _config(num_kv_heads=4)  # num_kv_heads == num_heads: standard MHA
  attn = model.Attention(config, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (B, T, config.d_model))
  positions = jnp.broadcast_to(jnp.arange(T), (B, T))
  sin, cos = model._rope(positions, config.head_dim, config.rope_base, 0, T)
  mask = jnp.ones((B, 1, T, T), bool)
  np.testing.assert_allclose(attn(x, sin, cos, mask), _reference_attention(attn, x, config),
                             atol=1e-4)


def test_einsum_attention_equals_jax_dot_product_attention():
  # GQA (4 query heads on 2 kv heads) under a packing mask: two poems and some padding.
  b, t, heads, kv_heads, d = 2, 12, 4, 2, 16
  q, k, v = (jax.random.normal(jax.random.key(i), (b, t, h, d))
             for i, h in enumerate((heads, kv_heads, kv_heads)))
  segments = jnp.array([[1] * 5 + [2] * 5 + [0] * 2, [1] * 12])
  mask = segments[:, None, :, None] == segments[:, None, None, :]
  ours = model._attention(q, k, v, mask)
  theirs = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True,
                                        implementation='xla')
  np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_every_projection_contracts_its_dims_in_memory_order():
  # jnp.einsum lists contracted dims alphabetically; out of memory order, XLA transposes the
  # kernel and the activations at every call (it did for the attention output, 'bthd,hde').
  for path, proj in nnx.iter_graph(_model()):
    if isinstance(proj, nnx.Einsum):
      dims, kernel = proj.einsum_str.split('->')[0].split(',')
      size = dict(zip(kernel, proj.kernel.shape), b=B, t=T)
      text = jax.jit(proj).lower(jnp.ones([size[d] for d in dims])).as_text()
      contracted = text.split('contracting_dims = [')[1].split(']')[0].split(',')
      assert [int(i) for i in contracted] == sorted(int(i) for i in contracted), path


def test_a_position_beyond_the_rope_bound_reads_nan_not_a_clamped_angle():
  sin, cos = model._rope(jnp.array([[0, 3, 4]]), 16, 10_000.0, 0, 4)
  assert np.isfinite(sin[0, :2]).all() and np.isfinite(cos[0, :2]).all()
  assert np.isnan(sin[0, 2]).all() and np.isnan(cos[0, 2]).all()


def test_grouped_query_equals_multi_head_with_repeated_kv_heads():
  gqa = _model(num_kv_heads=2)  # 4 query heads share 2 key/value heads
  mha = _model(seed=1, num_kv_heads=4)
  nnx.update(mha, nnx.state(gqa, nnx.Param))
  # Query head n reads kv head n // 2, so repeating each kv head twice gives the same model.
  for g, m in zip(gqa.blocks, mha.blocks):
    m.attn.kv.kernel.set_value(jnp.repeat(g.attn.kv.kernel[...], 2, axis=2))
  assert mha.blocks[0].attn.kv.kernel.shape == (64, 2, 4, 16)
  x = _tokens()
  np.testing.assert_allclose(_apply(gqa, x), _apply(mha, x), atol=1e-5)


def test_tied_and_untied_output():
  tied, untied = _model(), _model(tie_embeddings=False)
  assert tied.head is None
  assert model.count_params(untied) - model.count_params(tied) == VOCAB * 64
  x = _tokens()
  assert _apply(untied, x).shape == _apply(tied, x).shape == (B, T, VOCAB)
  # Tied: the logits are the final hidden states against the embedding table.
  tied.embed.embedding[...] = tied.embed.embedding[...].at[5].set(0.0)
  assert np.all(_apply(tied, x)[..., 5] == 0.0)
  # Few rows (decoding) multiply in the other operand order: the same logits.
  many = jnp.tile(x, (model._FEW_ROWS // T + 1, 1))
  assert x.size <= model._FEW_ROWS < many.size
  np.testing.assert_allclose(_apply(tied, x), _apply(tied, many)[:B], rtol=1e-5, atol=1e-5)


def _loss_and_grads(m, x):
  def loss(m):
    logits = m(x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None], -1))
  return nnx.jit(nnx.value_and_grad(loss))(m)


def test_remat_gives_the_same_logits_and_grads():
  x = _tokens()
  plain, remat = _model(), _model(remat=True)
  graphdef, state = nnx.split(remat)
  jaxpr = jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(x))(state)
  assert 'remat2' in {e.primitive.name for e in jaxpr.jaxpr.eqns}  # jax.checkpoint's primitive
  np.testing.assert_allclose(_apply(plain, x), _apply(remat, x), atol=1e-6)
  (l1, g1), (l2, g2) = _loss_and_grads(plain, x), _loss_and_grads(remat, x)
  np.testing.assert_allclose(l1, l2, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g1, g2)


def test_bfloat16_compute_stays_close_to_float32():
  x = _tokens()
  f32, bf16 = _model(), _model(dtype='bfloat16')
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  a, b = _apply(f32, x), _apply(bf16, x)
  assert b.dtype == jnp.float32
  # bfloat16 keeps 8 mantissa bits (~0.4% per rounding); through the two layers the error
  # measured about 1.5% of the largest logit. Allow 3%.
  assert 0 < np.abs(b - a).max() <= 0.03 * np.abs(a).max()


def test_dropout_only_when_not_deterministic():
  x = _tokens()
  m, clean = _model(dropout=0.5), _model()
  np.testing.assert_array_equal(_apply(m, x), _apply(clean, x))
  np.testing.assert_array_equal(_apply(m, x, deterministic=True), _apply(m, x))
  a, b = _apply(m, x, deterministic=False), _apply(m, x, deterministic=False)
  assert not np.allclose(a, _apply(clean, x)) and not np.allclose(a, b)


@pytest.mark.parametrize('preset, low, high', [
    ('small', 15e6, 25e6), ('base', 80e6, 120e6), ('large', 300e6, 400e6)])
def test_preset_param_counts(preset, low, high):
  config = model.config_for(preset)
  abstract = nnx.eval_shape(lambda: model.Transformer(config, rngs=nnx.Rngs(0)))
  assert low <= model.count_params(abstract) <= high


def test_flops_count_the_matmul_params():
  for tie in (True, False):
    config = _config(tie_embeddings=tie)
    m = model.Transformer(config, rngs=nnx.Rngs(0))
    norms = (2 * config.num_layers + 1) * config.d_model
    lookup = VOCAB * config.d_model if not tie else 0  # untied: the table is only a lookup
    assert model.flops_per_token(config, 0) == 6 * (model.count_params(m) - norms - lookup)
  c = _config()
  attention = 12 * c.num_layers * 128 * c.num_heads * c.head_dim
  assert model.flops_per_token(c, 128) - model.flops_per_token(c, 0) == attention


def test_every_param_has_logical_axes():
  m = _model(tie_embeddings=False)
  for path, param in nnx.to_flat_state(nnx.state(m, nnx.Param)):
    axes = param.get_metadata().get('out_sharding')
    assert axes is not None and len(axes) == param.ndim, path
    # None marks a small stacking axis (k|v, gate|up) that is never sharded.
    assert all(a in model.LOGICAL_AXES or a is None for a in axes), (path, axes)


def test_params_are_created_sharded_under_a_mesh():
  mesh = jax.make_mesh((1, 1, 1), ('data', 'fsdp', 'tensor'))
  rules = (('vocab', 'tensor'), ('embed', 'fsdp'), ('mlp', 'tensor'), ('heads', 'tensor'),
           ('kv_heads', 'tensor'), ('head_dim', None))
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    m = _model()
  assert m.embed.embedding[...].sharding.spec == jax.P('tensor', 'fsdp')
  assert m.blocks[0].attn.q.kernel[...].sharding.spec == jax.P('fsdp', 'tensor', None)


def test_config_errors_name_the_problem():
  with pytest.raises(ValueError, match='num_layer.*Did you mean num_layers'):
    model.config_for('tiny', num_layer=3)
  with pytest.raises(ValueError, match='Unknown model preset'):
    model.config_for('huge')
  with pytest.raises(ValueError, match='multiple of num_kv_heads'):
    model.config_for('tiny', num_kv_heads=3)
