"""The evaluation: bits per character on known distributions, and the command end to end on
runs trained on a corpus slice (files written, same seed same report, bad input)."""

import json

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poetjax import configs
from poetjax import evaluate
from poetjax import likelihood
from poetjax import loop
from poetjax import model as model_lib
from poetjax import workdir as workdir_lib
from poetjax.data import tokenizer as tokenizer_lib

POEMS = [  # the second is longer than the windows below
    {'text': '白日依山尽，黄河入海流。', 'dynasty': '唐', 'form': '五言绝句', 'tune': '',
     'author': '王之涣'},
    {'text': '床前明月光，疑是地上霜。举头望明月，低头思故乡。床前明月光，疑是地上霜。',
     'dynasty': '唐', 'form': '古体', 'tune': '', 'author': '李白'},
    {'text': '春眠不觉晓。', 'dynasty': '', 'form': '', 'tune': '', 'author': '没有这个人'},
]
VOCAB = 13568


@pytest.fixture(scope='module')
def tok():
  return tokenizer_lib.load('char')


def _model(seed=0):
  return model_lib.Transformer(model_lib.config_for('tiny', vocab_size=VOCAB),
                               rngs=nnx.Rngs(seed))


def test_windows_score_every_target_once_with_context():
  ids = list(range(23))
  seen = []
  for inputs, targets, weights in likelihood.windows(ids, first=3, seq_len=8):
    assert len(inputs) == len(targets) <= 8
    scored = [t for t, w in zip(targets, weights) if w]
    # A target scored in a later window has half a window of context before it.
    assert all(targets.index(t) >= 4 or inputs[0] == 0 for t in scored)
    seen += scored
  assert seen == ids[3:]


@pytest.mark.parametrize('labels', [False, True])
def test_uniform_model_gives_log2_vocab_bits_per_target(tok, labels):
  net = _model()
  nnx.update(net, jax.tree.map(jnp.zeros_like, nnx.state(net, nnx.Param)))  # logits all 0
  scores = likelihood.score(net, tok, POEMS, seq_len=16, labels=labels)
  targets = [len(tok.encode(p['text'])) + 1 for p in POEMS]  # the text and eos, no labels
  assert scores.tokens.tolist() == targets
  np.testing.assert_allclose(scores.nats, np.asarray(targets) * np.log(VOCAB), rtol=1e-5)
  han = sum(tok.count_han(p['text']) for p in POEMS)
  assert likelihood.summary(scores)['bits_per_char'] == pytest.approx(
      sum(targets) * np.log2(VOCAB) / han, rel=1e-5)


def test_packed_poems_score_as_each_alone(tok):
  net = _model(seed=1)
  together = likelihood.score(net, tok, POEMS, seq_len=16, labels=True, batch_rows=2)
  for i, poem in enumerate(POEMS):
    alone = likelihood.score(net, tok, [poem], seq_len=16, labels=True)
    np.testing.assert_allclose(together.nats[i], alone.nats[0], rtol=2e-5)
  assert likelihood.summary(together, [True, False, False])['loss'] == pytest.approx(
      together.nats[0] / together.tokens[0])


# ---- the command on trained runs

def _config(corpus_dir, data_dir, **overrides):
  c = configs.base('tiny')
  c.data.corpus_dir, c.data.data_dir = str(corpus_dir), str(data_dir)
  c.data.pipeline.seq_len, c.data.pipeline.batch_size = 32, 8
  c.train.steps, c.train.warmup_steps = 8, 2
  c.loop.log_every, c.loop.eval_every, c.loop.eval_batches = 4, 8, 2
  c.loop.unigram_batches, c.loop.peak_flops = 2, 1e9
  c.checkpoint.every_steps = 8
  c.update_from_flattened_dict(overrides)
  return c


@pytest.fixture(scope='module')
def runs(corpus_dir, tmp_path_factory):
  tmp = tmp_path_factory.mktemp('eval')
  data = tmp / 'data'
  loop.train_and_evaluate(_config(corpus_dir, data), tmp / 'base')
  loop.train_and_evaluate(_config(corpus_dir, data, **{'model.d_model': 32, 'train.steps': 2}),
                          tmp / 'narrow')
  loop.train_and_evaluate(_config(corpus_dir, data, **{
      'finetune.mode': 'lora', 'finetune.base': str(tmp / 'narrow'), 'finetune.lora_rank': 2,
      'train.steps': 2}), tmp / 'lora')
  return tmp


def _evaluate(runs, out, *flags):
  evaluate.main(['--workdir', str(runs / 'base'), '--out', str(out), '--samples', '4',
                 '--tunes', '1', '--style_samples', '2', '--continuations', '4',
                 '--cache_dir', str(runs / 'cache'), '--quiet', *flags])


def test_report_is_written_and_the_same_for_the_same_seed(runs):
  _evaluate(runs, runs / 'a')
  _evaluate(runs, runs / 'b')  # the n-gram baselines now come from the cache
  a, b = (json.loads((runs / d / 'report.json').read_text()) for d in 'ab')
  assert a.pop('timing_s').keys() == set(evaluate.SECTIONS)
  b.pop('timing_s')
  assert a == b
  assert (runs / 'a' / 'samples.jsonl').read_text() == (runs / 'b' / 'samples.jsonl').read_text()
  for name in ('report.md', 'curves.png', 'lm.png', 'generation.png', 'samples.png'):
    assert (runs / 'a' / name).stat().st_size > 0

  overall = a['lm']['overall']
  assert set(overall) == {'model', 'model + labels', 'KN-3', 'KN-4', 'KN-5', 'unigram'}
  assert a['lm']['groups']['all']['model'] == overall['model']['bits_per_char']
  assert overall['KN-5']['bits_per_char'] < overall['unigram']['bits_per_char']
  constrained = [r for r in a['generation']['rows'] if r['source'] == 'model constrained']
  assert [r['n'] for r in constrained] == [4] * 5 + [20]  # 4 forms, 1 tune, then all pooled
  assert all(r['format'] == 1.0 for r in constrained)
  assert set(a['style']) == {'dynasty', 'genre', 'author'}
  assert a['continuation']['n'] + a['continuation']['skipped_unknown_characters'] > 0
  md = (runs / 'a' / 'report.md').read_text()
  assert '| KN-5 |' in md and '![lm.png](lm.png)' in md


def test_compare_puts_runs_in_one_table(runs):
  evaluate.main(['--workdir', str(runs / 'base'), '--compare', str(runs / 'narrow'),
                 '--out', str(runs / 'cmp'), '--skip', 'generation,style,continuation',
                 '--cache_dir', str(runs / 'cache'), '--quiet'])
  table = json.loads((runs / 'cmp' / 'comparison.json').read_text())
  assert list(table) == ['base', 'narrow']
  assert all(t['bits/char model'] > 0 for t in table.values())
  assert (runs / 'cmp' / 'comparison.png').stat().st_size > 0
  assert (runs / 'cmp' / 'narrow' / 'report.json').is_file()


def test_bad_input_ends_with_one_clear_message(runs, tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'config.json').write_text((runs / 'base' / 'config.json').read_text())
  with pytest.raises(SystemExit, match='No checkpoint in .*train there first'):
    evaluate.main(['--workdir', str(empty), '--quiet'])
  with pytest.raises(SystemExit, match='No prepared dataset .*python -m poetjax.data build'):
    evaluate.main(['--workdir', str(runs / 'base'), '--data_dir', str(tmp_path), '--quiet'])
  with pytest.raises(SystemExit, match='does not fit the base'):
    evaluate.main(['--workdir', str(runs / 'base'), '--adapter', str(runs / 'lora'), '--quiet',
                   '--out', str(tmp_path / 'x')])


def test_a_run_trained_with_cudnn_attention_loads_without_a_gpu():
  config = model_lib.config_for('tiny', attention_impl='cudnn')
  assert workdir_lib.runnable_here(config).attention_impl is None  # the tests run on the CPU
