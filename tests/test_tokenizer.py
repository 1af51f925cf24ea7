"""The committed tokenizers (tokenizer/*.model) on the real validation split, and their trainer."""

import importlib.util
import re

import pytest

from poetjax import sampler
from poetjax.data import clean
from poetjax.data import control
from poetjax.data import tokenizer
from poetjax.data.poem import Poem

_JINGYESI = '床前明月光，疑是地上霜。举头望明月，低头思故乡。'


@pytest.fixture(scope='module')
def char():
  return tokenizer.load('char')


@pytest.fixture(scope='module')
def subword():
  return tokenizer.load('subword')


@pytest.mark.parametrize('kind', tokenizer.KINDS)
def test_validation_poems_round_trip(full_corpus, kind):
  tok = tokenizer.load(kind)
  texts = [p.text for p in full_corpus.split('validation')]
  assert len(texts) > 1000
  assert [tok.decode(tok.encode(t)) for t in texts] == texts


def test_each_han_character_is_one_id(char):
  ids = char.encode(_JINGYESI)
  assert len(ids) == len(_JINGYESI)
  assert [char.decode([i]) for i in ids] == list(_JINGYESI)
  assert char.count_han(_JINGYESI) == 20


def test_special_ids(char, subword):
  for tok in (char, subword):
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.decode([tok.bos_id, *tok.encode('明月'), tok.eos_id, tok.pad_id]) == '明月'


def test_control_pieces_and_sentinels_are_single_ids(full_corpus, char, subword):
  pieces = control.vocabulary(full_corpus.split('train')) + list(control.SENTINELS)
  for tok in (char, subword):
    assert all(len(tok.encode(p)) == 1 for p in pieces)
    i = tok.control_id('form', '七言绝句')
    assert tok.encode('<form:七言绝句>' + _JINGYESI)[0] == i
    assert tok.control_id('author', '李白') is not None
    assert tok.control_id('author', '没有这个人') is None
    # Exactly these are labels, and the sampler never writes one into a poem.
    assert tok.label_ids == {tok.encode(p)[0] for p in pieces}
    assert tok.label_ids <= set(sampler.banned_ids(tok, tok.vocab_size))
    # A poem starts after bos or a label; the sampler bars punctuation there.
    assert tok.start_ids == {tok.bos_id} | {tok.encode(p)[0] for p in pieces
                                           if p not in control.SENTINELS}
    assert {tok.encode(m)[0] for m in clean.PUNCT} <= tok.punct_start_ids
    assert not tok.punct_start_ids & set(tok.encode(_JINGYESI.replace('，', '').replace('。', '')))


def test_full_width_punctuation_survives(char):
  for mark in clean.PUNCT:
    assert len(char.encode(mark)) == 1
    assert char.decode(char.encode('月' + mark)) == '月' + mark
  assert char.decode(char.encode('月,')) == '月,'  # no NFKC folding either way


def test_unseen_character_round_trips_as_bytes(char):
  # The first CJK Extension B character the model has never seen.
  unseen = next(ch for ch in map(chr, range(0x20000, 0x2A6E0))
                if char.sp.piece_to_id(ch) == char.unk_id)
  ids = char.encode('明' + unseen + '月')
  assert len(ids) == 2 + len(unseen.encode('utf-8'))
  assert all(char.sp.is_byte(i) for i in ids[1:-1])
  assert char.decode(ids) == '明' + unseen + '月'


def test_missing_model_names_path_and_command(tmp_path, monkeypatch):
  monkeypatch.setattr(tokenizer, 'MODEL_DIR', tmp_path)
  with pytest.raises(FileNotFoundError, match='tokenizer/train_tokenizer.py .*--kind char'):
    tokenizer.load('char')
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / 'none.model'))):
    tokenizer.load(str(tmp_path / 'none.model'))


def _trainer():
  path = tokenizer.MODEL_DIR / 'train_tokenizer.py'
  spec = importlib.util.spec_from_file_location('train_tokenizer', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_char_trainer_is_deterministic_and_complete(tmp_path):
  texts = [_JINGYESI, '大江东去，浪淘尽、千古风流人物。', '𠀾日照香炉生紫烟？']
  poems = [Poem(id=str(i), text=t, lines=clean.split_lines(t), title='', author='李白',
                dynasty='唐', genre='诗', form='古体', tune='', collection='', split='train')
           for i, t in enumerate(texts)]
  trainer = _trainer()
  first = trainer.train('char', poems, tmp_path / 'a').read_bytes()
  assert trainer.train('char', poems, tmp_path / 'b').read_bytes() == first
  tok = tokenizer.load(str(tmp_path / 'a' / 'char.model'))
  han = {ch for t in texts for ch in t if clean.is_han(ch)}
  assert all(len(tok.encode(ch)) == 1 for ch in han)
  assert tok.vocab_size == len(set(''.join(texts))) + 4 + 256 + len(trainer.controls(poems))
