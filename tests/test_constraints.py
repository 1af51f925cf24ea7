"""Form constraints: the mask never admits a violating token; constrained poems keep their form."""

import functools
from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from poetjax import checker
from poetjax import constraints
from poetjax import model as model_lib
from poetjax import prosody as prosody_lib
from poetjax import sampler
from poetjax import templates
from poetjax.data import tokenizer as tokenizer_lib

VOCAB = 13_568


@pytest.fixture(scope='module')
def tok():
  return tokenizer_lib.load('char')


@pytest.fixture(scope='module')
def net():
  config = model_lib.config_for('tiny', vocab_size=VOCAB)
  return model_lib.Transformer(config, rngs=nnx.Rngs(params=0, dropout=1))


@functools.cache
def _pieces(tok):
  return [tok.sp.id_to_piece(i) for i in range(tok.vocab_size)]


def _violations(tok, cons, template, state, allowed, row):
  """Allowed ids that break a rule, judged from the pieces' text (not the mask's tables)."""
  prosody = prosody_lib.load()
  line, pos = int(state['line'][row]), int(state['pos'][row])
  bad = []
  for i in np.flatnonzero(allowed):
    if line == len(template.lines):
      bad += [] if i == tok.eos_id else [i]
      continue
    spec = template.lines[line]
    piece = _pieces(tok)[i]
    if pos == spec.length:
      bad += [] if piece == spec.end else [i]
      continue
    if not all(ch for ch in piece) or len(piece) > spec.length - pos or not all(
        '\u4e00' <= ch <= '\u9fff' or ord(ch) > 0x3400 for ch in piece):
      bad.append(i)
      continue
    for j, ch in enumerate(piece):
      want = constraints.TONE_CODE[spec.tones[pos + j]]
      if want and not prosody.tone(ch) & want:
        bad.append(i)
        break
    else:
      rhyme_set = spec.rhyme_set or int(spec.rhyme)
      group = int(state['group'][row, max(rhyme_set - 1, 0)])
      if pos + len(piece) == spec.length and rhyme_set and group >= 0:
        shi = cons.classes[0] in prosody.group_names
        names = prosody.ping_groups(piece[-1]) if shi else prosody.bu(piece[-1])
        if cons.classes[group] not in names:
          bad.append(i)
  return bad


@pytest.mark.parametrize('kind,form', [('char', '七言律诗'), ('subword', '五言绝句'),
                                       ('char', '菩萨蛮')])
def test_mask_never_admits_a_violating_token(kind, form):
  tok = tokenizer_lib.load(kind)
  template = templates.lookup(form)
  system = 'cilin' if '言' not in form else 'pingshui'
  rows = 12
  cons = constraints.build(tok, template, rows, vocab_size=tok.vocab_size, rhyme_system=system)
  rng = np.random.default_rng(0)
  lines = rng.integers(0, len(template.lines) + 1, rows)
  lengths = np.asarray([template.lines[min(l, len(template.lines) - 1)].length for l in lines])
  state = {'line': jnp.asarray(lines, jnp.int32),
           'pos': jnp.asarray(rng.integers(0, lengths + 1), jnp.int32),
           'group': jnp.asarray(rng.integers(-1, len(cons.classes), cons.state['group'].shape),
                                jnp.int32)}
  allowed = np.isfinite(np.asarray(cons.rule.bias(cons.tables, cons.plan, state)))
  for row in range(rows):
    assert allowed[row].any(), f'row {row}: nothing allowed'
    assert _violations(tok, cons, template, state, allowed[row], row) == []


@pytest.mark.parametrize('form', ['五言绝句', '七言律诗', '西江月', '菩萨蛮'])
def test_constrained_samples_keep_form_rhyme_tones_and_acrostic(tok, net, form):
  tune = '言' not in form
  template = templates.ci(form) if tune else templates.shi(form, start='平起')
  heads = '春夏秋冬风花雪月'[:len(template.lines)]
  rows = 6
  cons = constraints.build(tok, template, rows, vocab_size=VOCAB, acrostic=heads,
                           rhyme_system='cilin' if tune else 'pingshui')
  out = sampler.generate(net, [[tok.bos_id]] * rows, max_new_tokens=template.num_chars + 12,
                         temperature=1.0, seed=0, constraint=cons,
                         **sampler.text_options(tok, VOCAB))
  assert not out.stuck.any()
  for row, n in zip(out.tokens, out.lengths):
    assert row[n - 1] == tok.eos_id
    text = tok.decode(row[:n - 1])
    report = checker.check(text, template)
    assert report.format_ok and report.rhyme_ok, text
    if not tune:  # the acrostic heads override the tone at position 1
      assert all(all(line.tone_ok_positions[1:]) for line in report.lines), text
    assert ''.join(line.text[0] for line in report.lines) == heads


def test_beam_search_keeps_the_form(tok, net):
  template = templates.shi('五言绝句', start='仄起')
  cons = constraints.build(tok, template, 2, vocab_size=VOCAB, first_line='白日依山尽')
  out = sampler.beam_search(net, [[tok.bos_id]] * 2, num_beams=3, max_new_tokens=26,
                            constraint=cons, **sampler.text_options(tok, VOCAB))
  for row, n in zip(out.tokens, out.lengths):
    text = tok.decode(row[:n - 1])
    assert text.startswith('白日依山尽，') and checker.check(text, template).format_ok


def test_unsatisfiable_constraints_stop_with_the_position(tok, net):
  template = templates.shi('五言绝句', start='平起')
  cons = constraints.build(tok, template, 1, vocab_size=VOCAB)
  cons.plan['tone'] = cons.plan['tone'].at[0, 1, 2].set(4)  # a tone no character has
  out = sampler.generate(net, [[tok.bos_id]], max_new_tokens=40, temperature=1.0,
                         stop_ids=[tok.eos_id], pad_id=tok.pad_id, constraint=cons)
  assert out.stuck[0]
  message = constraints.explain(cons, out.constraint_state, 0, template)
  assert 'line 2, character 3' in message


def test_bad_requests_are_named(tok):
  template = templates.lookup('五绝')
  with pytest.raises(ValueError, match='5 characters.*4 lines'):
    constraints.build(tok, template, 1, vocab_size=VOCAB, acrostic='春夏秋冬雪')
  with pytest.raises(ValueError, match='has 4 characters.*wants 5'):
    constraints.build(tok, template, 1, vocab_size=VOCAB, first_line='白日依山')
  with pytest.raises(ValueError, match='not a Han character'):
    constraints.build(tok, template, 1, vocab_size=VOCAB, acrostic='春a')
  with pytest.raises(ValueError, match='Unknown rhyme class'):
    constraints.build(tok, template, 1, vocab_size=VOCAB, rhyme='一冬冬')
  with pytest.raises(ValueError, match='七言绝句'):
    templates.lookup('七言决句')
  with pytest.raises(ValueError, match='浣溪沙'):
    templates.lookup('浣溪河')


def test_keywords_are_favoured(tok, net):
  template = templates.shi('五言绝句', start='平起')
  texts = []
  for boost in (0.0, 30.0):
    cons = constraints.build(tok, template, 4, vocab_size=VOCAB, keywords=['月'],
                             keyword_boost=boost)
    out = sampler.generate(net, [[tok.bos_id]] * 4, max_new_tokens=26, temperature=1.0, seed=0,
                           constraint=cons, **sampler.text_options(tok, VOCAB))
    texts.append([tok.decode(r[:n - 1]) for r, n in zip(out.tokens, out.lengths)])
  assert sum(t.count('月') for t in texts[1]) > sum(t.count('月') for t in texts[0]) + 4
  assert all(checker.check(t, template).format_ok for t in texts[1])
