"""The KV-cache sampler: exactness against full forward passes, batching, seeds, filters, beams."""

import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poetjax import model as model_lib
from poetjax import sampler
from poetjax import sharding
from poetjax import train

PROMPTS = [[1, 5, 9, 11, 3], [1, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]


@pytest.fixture(scope='module')
def net():
  config = model_lib.config_for('tiny', vocab_size=64)
  return model_lib.Transformer(config, rngs=nnx.Rngs(params=0, dropout=1))


@nnx.jit
def _full_forward(net, tokens):
  return net(tokens)


def test_cache_grows_from_32_slots_past_the_prompt_doubling_to_max_len():
  assert sampler._cache_spans(8, 32) == [40]
  assert sampler._cache_spans(16, 40) == [48, 56]
  assert sampler._cache_spans(8, 200) == [40, 72, 136, 208]


def test_greedy_with_cache_equals_argmax_of_full_forward_passes(net):
  # 40 new tokens after a 16-slot prompt: the cache grows once (48 slots, then 56).
  out = sampler.generate(net, PROMPTS, max_new_tokens=40, temperature=0, pad_id=0)
  for prompt, row in zip(PROMPTS, out.tokens):
    seq = list(prompt)
    for _ in range(40):  # the whole sequence again each step; right padding is causal-safe
      logits = _full_forward(net, jnp.asarray([seq + [0] * (64 - len(seq))]))
      seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
    assert seq[len(prompt):] == row.tolist()


def test_logprobs_are_the_models(net):
  out = sampler.generate(net, PROMPTS[:1], max_new_tokens=6, temperature=1.0, seed=1, pad_id=0)
  seq = PROMPTS[0] + out.tokens[0].tolist()
  logp = jax.nn.log_softmax(net(jnp.asarray([seq]))[0])
  want = sum(float(logp[len(PROMPTS[0]) - 1 + i, t]) for i, t in enumerate(out.tokens[0]))
  np.testing.assert_allclose(out.logprobs[0], want, rtol=1e-4)


def test_mixed_length_batch_equals_each_prompt_alone(net):
  kw = dict(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=20, pad_id=0)
  batch = sampler.generate(net, PROMPTS, seed=3, **kw)
  for r, prompt in enumerate(PROMPTS):
    alone = sampler.generate(net, [prompt], seed=[3 + r], **kw)
    np.testing.assert_array_equal(batch.tokens[r], alone.tokens[0])


def test_same_seed_same_tokens_other_seed_other_tokens(net):
  kw = dict(max_new_tokens=16, temperature=1.0, pad_id=0)
  a, b = (sampler.generate(net, PROMPTS, seed=5, **kw) for _ in range(2))
  c = sampler.generate(net, PROMPTS, seed=6, **kw)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert (a.tokens != c.tokens).any()


def test_a_shorter_run_is_a_prefix_of_a_longer_one(net):
  kw = dict(temperature=1.0, top_k=20, seed=2, pad_id=0)
  short = sampler.generate(net, PROMPTS, max_new_tokens=7, **kw)
  long = sampler.generate(net, PROMPTS, max_new_tokens=45, **kw)  # past a cache growth
  np.testing.assert_array_equal(short.tokens, long.tokens[:, :7])


def test_stop_token_ends_a_row_and_pads_after(net):
  out = sampler.generate(net, PROMPTS, max_new_tokens=20, temperature=1.0, seed=0, pad_id=0,
                         stop_ids=[7, 8, 9, 10, 11, 12])
  for row, n in zip(out.tokens, out.lengths):
    if n < 20:
      assert row[n - 1] in (7, 8, 9, 10, 11, 12) and (row[n:] == 0).all()


def test_no_stop_before_min_new_tokens(net):
  first = sampler.generate(net, PROMPTS, max_new_tokens=1, temperature=0, pad_id=0).tokens[:, 0]
  stop = [int(t) for t in set(first.tolist())]  # each row's greedy first token stops it
  for search in (lambda **kw: sampler.generate(net, PROMPTS, temperature=0, **kw),
                 lambda **kw: sampler.beam_search(net, PROMPTS, num_beams=2, **kw)):
    assert (search(max_new_tokens=8, stop_ids=stop, pad_id=0).lengths == 1).all()
    out = search(max_new_tokens=8, stop_ids=stop, pad_id=0, min_new_tokens=3)
    assert (out.lengths >= 3).all() and not np.isin(out.tokens[:, :2], stop).any()
    with pytest.raises(ValueError, match='min_new_tokens must be at least 0'):
      search(min_new_tokens=-1)
    with pytest.raises(ValueError, match='max_new_tokens must be at least 1'):
      search(max_new_tokens=0)


def test_start_banned_ids_only_bar_the_first_token_after_a_start_id(net):
  prompts = PROMPTS + [[1]]  # only the last row ends with the start id (its bos)
  for search in (lambda **kw: sampler.generate(net, prompts, temperature=0, **kw),
                 lambda **kw: sampler.beam_search(net, prompts, num_beams=2, **kw)):
    free = search(max_new_tokens=4, pad_id=0).tokens
    barred = [int(t) for t in set(free[:, 0].tolist())]  # every row's own first token
    out = search(max_new_tokens=4, pad_id=0, start_ids=[1], start_banned_ids=barred).tokens
    np.testing.assert_array_equal(out[:-1], free[:-1])  # rows ending elsewhere: unchanged
    assert out[-1, 0] not in barred


def _reference_keep(x, k, p):
  keep = np.ones_like(x, bool)
  if k and k < x.shape[1]:  # a larger k keeps the whole row
    keep &= x >= np.sort(x, -1)[:, -k][:, None]
  z = np.where(keep, x, -np.inf)
  probs = np.exp(z - z.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  for r in range(len(x)):
    order = np.argsort(-probs[r], kind='stable')
    first = int(np.searchsorted(np.cumsum(probs[r][order]), p - 1e-6)) + 1
    keep[r] &= probs[r] >= probs[r][order][min(first, len(order)) - 1]
  return keep


@pytest.mark.parametrize('k,p', [(0, 0.5), (7, 1.0), (20, 0.8), (1, 0.3), (0, 0.999),
                                 (250, 0.8)])
def test_top_k_top_p_keep_exactly_the_reference_set(k, p):
  rng = np.random.default_rng(k)
  x = (rng.normal(size=(6, 200)) * rng.uniform(0.5, 4, (6, 1))).astype(np.float32)
  x[:3, :40] = np.round(x[:3, :40])  # ties
  got = sampler.filter_logits(jnp.asarray(x), temperature=1.0, top_k=k, top_p=p,
                              use_top_p=p < 1)
  np.testing.assert_array_equal(np.isfinite(np.asarray(got)), _reference_keep(x, k, p))


@pytest.mark.parametrize('k', [1, 5, 12])
def test_top_k_over_the_best_chunks_keeps_the_k_largest_of_the_whole_row(k):
  rng = np.random.default_rng(k)
  x = np.round(rng.normal(size=(5, 203)) * 2).astype(np.float32)  # ties; 203: a partial chunk
  x[1, rng.permutation(203)[:195]] = -np.inf  # fewer finite values than k (for k 12)
  x[2] = -np.inf
  width = -(-203 // sampler.TOP_K_CHUNK)  # chunk j: ids j, j + width, ...
  x[3, ::width] = x[3].max() + 1  # one chunk holds more than k of the largest
  x[4] = 1.0  # all tied with the k-th: kept, the chunks left out included
  assert k * sampler.TOP_K_CHUNK < x.shape[1]  # the chunked path, not the whole row
  got = np.concatenate([  # row by row: the tied rows do not send the others down their path
      sampler.filter_logits(jnp.asarray(row[None]), temperature=1.0, top_k=k, top_p=1.0,
                            use_top_p=False) for row in x])
  keep = _reference_keep(x, k, 1.0) & np.isfinite(x)
  np.testing.assert_array_equal(np.isfinite(np.asarray(got)), keep)


def _peaked_and_flat_rows(vocab=3000):
  rng = np.random.default_rng(3)
  x = (rng.normal(size=(4, vocab)) * 4).astype(np.float32)
  x[2] = rng.normal(size=vocab) * 0.01  # flat: top-p keeps most of the vocabulary
  x[3, rng.permutation(vocab)[:2000]] = -np.inf
  return x


@pytest.mark.parametrize('k,p', [(50, 0.9), (50, 1.0), (5, 0.5), (0, 0.9)])
def test_filters_of_a_large_vocab_keep_the_reference_set(k, p):
  x = _peaked_and_flat_rows()
  assert 51 * sampler.TOP_K_CHUNK < x.shape[1]  # top-k 50: the best chunks' path
  got = sampler.filter_logits(jnp.asarray(x), temperature=1.0, top_k=k, top_p=p,
                              use_top_p=p < 1)
  np.testing.assert_array_equal(np.isfinite(np.asarray(got)), _reference_keep(x, k, p))


@pytest.mark.parametrize('k,p,t', [(0, 0.9, 1.0), (50, 1.0, 1.0), (50, 0.8, 1.0),
                                   (50, 0.8, 1.7), (0, 0.9, 0.5)])
def test_sample_tokens_draws_each_kept_id_by_its_probability(k, p, t):
  x = _peaked_and_flat_rows()[[0, 1]]  # peaked rows: the draw among the best chunks' ids
  kept = _reference_keep(x / t, k, p)
  n = 20_000
  uniforms = jnp.asarray(np.stack([np.arange(n) / n] * 2, 1).astype(np.float32))
  tokens = np.asarray(jax.jit(jax.vmap(lambda u: sampler.sample_tokens(
      u, jnp.asarray(x), temperature=t, top_k=k, top_p=p, use_top_p=p < 1)))(uniforms))
  probs = np.asarray(jax.nn.softmax(jnp.asarray(np.where(kept, x / t, -np.inf))))
  for row in range(2):
    counts = np.bincount(tokens[:, row], minlength=x.shape[1])
    assert kept[row, tokens[:, row]].all()
    assert np.abs(counts - probs[row] * n).max() <= 2


def test_top_k_sampling_compiles_to_xla_top_k_not_a_sort_of_the_row():
  # Sliced, lax.top_k's outputs make XLA sort the whole row instead: 10x slower on a CPU.
  fn = lambda u, x: sampler.sample_tokens(u, x, temperature=1.0, top_k=50, top_p=0.9)
  text = jax.jit(fn).lower(jnp.zeros(4), jnp.zeros((4, 8000))).compile().as_text()
  sorted_rows = re.findall(r'\[4,(\d+)\]\S* sort\(', text)
  assert 'custom_call_target="TopK"' in text and all(int(n) <= 51 for n in sorted_rows)


def test_a_rows_draw_does_not_depend_on_the_path_its_batch_takes():
  # A tie with the k-th logit outside the best chunks sends the batch down the whole-row path.
  rng = np.random.default_rng(0)
  alone = rng.normal(size=(1, 3000)).astype(np.float32)
  tied = np.zeros((1, 3000), np.float32)
  tied[0, :3] = [9, 8, 7]
  n = 200
  uniforms = jnp.asarray(np.arange(n) / n, jnp.float32)
  draw = jax.jit(jax.vmap(lambda u, x: sampler.sample_tokens(
      jnp.full(len(x), u), x, temperature=0.8, top_k=50, top_p=0.9), (0, None)))
  np.testing.assert_array_equal(draw(uniforms, jnp.asarray(alone))[:, 0],
                                draw(uniforms, jnp.asarray(np.concatenate([alone, tied])))[:, 0])


def test_prefix_sums_match_numpy():
  x = np.random.default_rng(0).uniform(size=(3, 300)).astype(np.float32)  # not whole blocks
  got = sampler._exclusive_prefix_sums(jnp.asarray(x))
  np.testing.assert_allclose(got, np.cumsum(x, -1) - x, rtol=1e-5, atol=1e-5)


def test_draw_is_the_inverse_cdf_and_never_picks_a_filtered_token():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 300)).astype(np.float32) * 3
  logits[:, rng.permutation(300)[:200]] = -np.inf  # filtered out, the ends included
  logits[:, [0, -1]] = -np.inf
  logits[1, 150] = logits[1, np.isfinite(logits[1])].min() - 30  # kept, but tiny
  n = 20_000
  uniforms = np.concatenate([np.arange(n) / n, [np.nextafter(1, 0)]]).astype(np.float32)
  tokens = np.asarray(jax.jit(jax.vmap(sampler.draw, (0, None)))(
      jnp.asarray(np.stack([uniforms] * 2, 1)), jnp.asarray(logits)))  # [n + 1, 2]
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
  kept = np.isfinite(logits)
  for row in range(2):
    assert kept[row, tokens[:, row]].all()
    assert tokens[0, row] == np.flatnonzero(kept[row])[0]
    assert tokens[-1, row] == np.flatnonzero(kept[row])[-1]
    counts = np.bincount(tokens[:-1, row], minlength=300)  # evenly spaced u: each token's share
    assert np.abs(counts - probs[row] * n).max() <= 2


def test_beam_search_beats_greedy_and_one_beam_is_greedy(net):
  greedy = sampler.generate(net, PROMPTS, max_new_tokens=10, temperature=0, pad_id=0)
  beams = sampler.beam_search(net, PROMPTS, num_beams=8, max_new_tokens=10, pad_id=0)
  kw = dict(max_new_tokens=40, pad_id=0)  # past a cache growth, as the greedy test above
  one = sampler.beam_search(net, PROMPTS, num_beams=1, **kw)
  assert (beams.logprobs >= greedy.logprobs - 1e-4).all()
  assert (beams.logprobs > greedy.logprobs + 1e-3).any()
  np.testing.assert_array_equal(one.tokens,
                                sampler.generate(net, PROMPTS, temperature=0, **kw).tokens)
  seq = PROMPTS[0] + beams.tokens[0].tolist()  # the score is the model's log-probability
  logp = jax.nn.log_softmax(net(jnp.asarray([seq]))[0])
  want = sum(float(logp[len(PROMPTS[0]) - 1 + i, t]) for i, t in enumerate(beams.tokens[0]))
  np.testing.assert_allclose(beams.logprobs[0], want, rtol=1e-4)


def test_sharded_params_sample_as_one_device():
  config = model_lib.config_for('tiny', vocab_size=64)
  mesh_config = sharding.default_config()
  mesh_config.data, mesh_config.fsdp, mesh_config.tensor = 2, 2, 2
  sharded = train.Trainer(config, train.default_config(),
                          sharding.make_mesh(mesh_config, jax.devices()[:8]), seed=0)
  single = train.Trainer(config, train.default_config(),
                         sharding.make_mesh(sharding.default_config(), jax.devices()[:1]), seed=0)
  kernel = sharded.model.blocks[0].mlp.gate_up.kernel[...]
  assert len(kernel.sharding.device_set) == 8
  a = sampler.generate(sharded.model, PROMPTS, max_new_tokens=8, temperature=0, pad_id=0)
  b = sampler.generate(single.model, PROMPTS, max_new_tokens=8, temperature=0, pad_id=0)
  np.testing.assert_array_equal(a.tokens, b.tokens)


def test_prepare_unties_the_head_and_fuses_qkv_of_a_copy_and_samples_the_same(net):
  assert net.config.tie_embeddings and net.head is None
  prepared = sampler.prepare(net)
  assert net.head is None and net.blocks[0].attn.q is not None  # the model itself is as it was
  view = nnx.merge(prepared.graphdef, prepared.state)
  np.testing.assert_array_equal(view.head.kernel[...], net.embed.embedding[...].T)
  attn, fused = net.blocks[0].attn, view.blocks[0].attn
  assert not hasattr(fused, 'q') and not hasattr(fused, 'kv')
  e = net.config.d_model
  np.testing.assert_array_equal(fused.qkv.kernel[...], np.concatenate(
      [attn.q.kernel[...].reshape(e, -1), attn.kv.kernel[...].reshape(e, -1)], 1))
  kw = dict(max_new_tokens=10, temperature=1.0, top_k=20, seed=2, pad_id=0)
  a, b = sampler.generate(net, PROMPTS, **kw), sampler.generate(prepared, PROMPTS, **kw)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-5)


def test_one_row_decodes_with_its_kernels_rows_first_and_samples_the_same(net):
  prepared = sampler.prepare(net)
  view = nnx.merge(*prepared.one_row())
  assert prepared.one_row() is prepared.one_row()  # built once
  swapped = lambda m: [m for _, m in nnx.iter_modules(m) if isinstance(m, model_lib.RowsFirst)]
  assert len(swapped(view)) == 4 * net.config.num_layers + 1  # qkv, o, gate_up, down; the head
  # The prompt's several tokens go through the plain kernels, the loop's one through RowsFirst.
  prompt_model, loop_model = sampler._models(*sampler._inputs(
      prepared, PROMPTS[:1], 0, (), (), (), (), rows=1)[:2])
  assert not swapped(prompt_model) and len(swapped(loop_model)) == len(swapped(view))
  e = net.config.d_model
  np.testing.assert_array_equal(view.blocks[0].mlp.gate_up.table[...],
                                net.blocks[0].mlp.gate_up.kernel[...].reshape(e, -1).T)
  kw = dict(max_new_tokens=10, temperature=1.0, top_k=20, seed=2, pad_id=0)
  for prompt in PROMPTS[::2]:
    a, b = sampler.generate(net, [prompt], **kw), sampler.generate(prepared, [prompt], **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-5)
    # A beam of one is one row too.
    beam = lambda m: sampler.beam_search(m, [prompt], num_beams=1, max_new_tokens=10)
    a, b = beam(net), beam(prepared)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-5)


def _one_row_decode_loop_hlo(graphdef, state, options=None):
  """The compiled HLO of 16 one-row decode steps of the model, as text."""
  def loop(state, token):
    model = nnx.merge(graphdef, state)
    body = lambda i, cache: model.extend(token, i[None, None], jnp.ones((1, 1, 16), bool),
                                         cache, i)[1]
    return jax.lax.fori_loop(0, 16, body, model.init_cache(1, 16))
  return jax.jit(loop).lower(state, jnp.ones((1, 1), jnp.int32)).compile(options).as_text()


def _f32(shape):
  return 'f32[' + ','.join(map(str, shape)) + ']'


def test_a_decode_loop_updates_the_cache_in_place(net):
  # One row: a cache reshaped for attention made XLA copy every layer's cache 4 times a step.
  text = _one_row_decode_loop_hlo(*nnx.split(net))
  shape = _f32(net.init_cache(1, 16)[0][0].shape)
  bodies = re.findall(r' while\(.*body=%([\w.\-]+)', text)
  copies = [line for body in bodies
            for line in re.search(r'\n%' + re.escape(body) + r' .*?\n}', text, re.S)[0].splitlines()
            if ' copy(' in line and shape in line]
  assert bodies and not copies, copies[:2]


def test_a_bfloat16_one_row_decode_loop_reads_its_tables_in_bfloat16(net):
  # XLA hoisted the float32 convert of each table out of the loop: float32 copies of all the
  # weights per call, read by every step.
  graphdef, state = sampler.prepare(net, 'bfloat16').one_row()
  text = _one_row_decode_loop_hlo(graphdef, state, sampler.cpu_compiler_options(state))
  entry = re.search(r'\nENTRY .*?\n}', text, re.S)[0]
  tables = {_f32(x.shape) for path, x in nnx.to_flat_state(state) if 'table' in path}
  assert len(tables) >= 3 and not [t for t in tables if t in entry], tables


def test_bfloat16_sampling_runs_and_mostly_agrees(net):
  f32 = sampler.generate(net, PROMPTS, max_new_tokens=6, temperature=0, pad_id=0)
  bf16 = sampler.generate(sampler.prepare(net, 'bfloat16'), PROMPTS, max_new_tokens=6,
                          temperature=0, pad_id=0)
  assert (f32.tokens[:, 0] == bf16.tokens[:, 0]).mean() >= 2 / 3


def test_bfloat16_projections_take_bfloat16_and_sum_in_float32(net):
  # A bfloat16 result makes XLA's CPU backend multiply in float32 on converted weights.
  prepared = sampler.prepare(net, 'bfloat16')

  def decode_step(state, tokens):
    model = nnx.merge(prepared.graphdef, state)
    cache = model.init_cache(2, 8, 'bfloat16')
    return model.extend(tokens, jnp.zeros((2, 1), jnp.int32), jnp.ones((2, 1, 8), bool), cache, 0)

  text = jax.jit(decode_step).lower(prepared.state, jnp.ones((2, 1), jnp.int32)).as_text()
  types = re.findall(r'stablehlo.dot_general .*: \((tensor<[^>]*>), (tensor<[^>]*>)\) -> '
                     r'(tensor<[^>]*>)', text)
  projections = [t for t in types if 'bf16' in t[0] + t[1]]
  config = net.config
  assert len(projections) == 4 * config.num_layers + 1  # qkv, o, gate_up, down; the head
  for lhs, rhs, result in projections:
    assert 'bf16' in lhs and 'bf16' in rhs and result.endswith('xf32>'), (lhs, rhs, result)


def test_cpu_decoding_gives_bfloat16_matmuls_to_ynnpack_and_float32_ones_to_eigen(net):
  # With bfloat16 params the Eigen path writes float32 copies of every weight, every step.
  for dtype in ('bfloat16', 'float32'):
    state = sampler.prepare(net, dtype).state
    options = sampler.cpu_compiler_options(state)
    kernel = state['blocks'][0]['mlp']['down']['kernel'][...]
    product = lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32)
    rows = jnp.ones((16, kernel.shape[0]), dtype)
    hlo = jax.jit(product).lower(rows, kernel).compile(compiler_options=options).as_text()
    assert ('"__ynn_fusion"' in hlo) == (dtype == 'bfloat16'), (dtype, options)


def test_a_prefill_computes_the_last_positions_logits_only(net):
  tokens = jnp.asarray([[1, 5, 9, 11], [1, 7, 3, 2]])
  run = lambda **kw: net.extend(tokens, jnp.broadcast_to(jnp.arange(4), (2, 4)),
                                jnp.tril(jnp.ones((4, 8), bool))[None].repeat(2, 0),
                                net.init_cache(2, 8), 0, **kw)
  (every, every_cache), (last, last_cache) = run(), run(last_only=True)
  assert last.shape == (2, 1, net.config.vocab_size)
  np.testing.assert_allclose(last[:, 0], every[:, -1], rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(every_cache), jax.tree.leaves(last_cache)):
    np.testing.assert_array_equal(a, b)


def test_bad_input_is_named(net):
  with pytest.raises(ValueError, match=r'\[99\].*outside the model vocabulary'):
    sampler.generate(net, [[1, 99]], max_new_tokens=2)
  with pytest.raises(ValueError, match='top_p'):
    sampler.generate(net, [[1]], max_new_tokens=2, top_p=0)
  with pytest.raises(ValueError, match='2 seeds for 3 prompts'):
    sampler.generate(net, PROMPTS, max_new_tokens=2, seed=[1, 2])
