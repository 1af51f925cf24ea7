"""The poem-writing command's core: form choice, control tokens, candidates and rerank."""

from flax import nnx
import pytest

from poetjax import model as model_lib
from poetjax import sample
from poetjax.data import tokenizer as tokenizer_lib


@pytest.fixture(scope='module')
def tok():
  return tokenizer_lib.load('char')


def test_write_returns_the_best_candidate_per_poem_in_form(tok):
  net = model_lib.Transformer(model_lib.config_for('tiny', vocab_size=13_568),
                              rngs=nnx.Rngs(params=0, dropout=1))
  args = sample.parse(['--workdir', 'unused', '--form', '七绝', '--acrostic', '春夏秋冬',
                       '--num', '2', '--candidates', '3', '--dynasty', '唐'])
  best, everything = sample.write(net, tok, args)
  assert len(best) == 2 and len(everything) == 6
  for poem in best:
    assert poem['format_ok'] and poem['rhyme_ok'] and not poem['stuck']
    lines = poem['marks'].splitlines()
    assert [line[0] for line in lines[0::2]] == list('春夏秋冬')
    assert all(set(m) <= set('平仄中？') and len(m) == 7 for m in lines[1::2])
    assert poem['score'] == max(p['score'] for p in everything
                                if everything.index(p) // 3 == best.index(poem))


def test_bad_requests_name_what_was_wrong(tok):
  with pytest.raises(ValueError, match='浣溪沙'):
    sample.form_templates(sample.parse(['--workdir', 'x', '--tune', '浣溪河']), 1)
  args = sample.parse(['--workdir', 'x', '--form', '七绝', '--author', '李白白'])
  with pytest.raises(ValueError, match="<author:李白>"):
    sample.control_ids(tok, args, ('form', '七言绝句'))
