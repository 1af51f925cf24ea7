"""The Grain input pipeline on a handful of real poems and the committed char tokenizer."""

import grain
import numpy as np
import pytest
from etils import epath

from poetjax.data import pipeline
from poetjax.data import tokenizer

SEQ_LEN = 48
PAD = 0  # the tokenizer's pad id, which is also what padded rows hold
# (text, author, dynasty, genre, form, tune). The 律诗, the 词 and 将进酒 are longer than
# SEQ_LEN + 1 ids, so they must come out in several windows.
_POEMS = [
    ('床前明月光，疑是地上霜。举头望明月，低头思故乡。', '李白', '唐', '诗', '五言绝句', ''),
    ('白日依山尽，黄河入海流。欲穷千里目，更上一层楼。', '王之涣', '唐', '诗', '五言绝句', ''),
    ('春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。', '孟浩然', '唐', '诗', '五言绝句', ''),
    ('红豆生南国，春来发几枝。愿君多采撷，此物最相思。', '王维', '唐', '诗', '五言绝句', ''),
    ('朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。', '李白', '唐', '诗',
     '七言绝句', ''),
    ('葡萄美酒夜光杯，欲饮琵琶马上催。醉卧沙场君莫笑，古来征战几人回。', '王翰', '唐', '诗',
     '七言绝句', ''),
    ('月落乌啼霜满天，江枫渔火对愁眠。姑苏城外寒山寺，夜半钟声到客船。', '张继', '唐', '诗',
     '七言绝句', ''),
    ('横看成岭侧成峰，远近高低各不同。不识庐山真面目，只缘身在此山中。', '苏轼', '宋', '诗',
     '七言绝句', ''),
    ('国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，'
     '浑欲不胜簪。', '杜甫', '唐', '诗', '五言律诗', ''),
    ('常记溪亭日暮，沉醉不知归路。兴尽晚回舟，误入藕花深处。争渡，争渡，惊起一滩鸥鹭。',
     '李清照', '宋', '词', '词', '如梦令'),
    ('明月几时有？把酒问青天。不知天上宫阙，今夕是何年。我欲乘风归去，又恐琼楼玉宇，高处不胜寒。'
     '起舞弄清影，何似在人间。转朱阁，低绮户，照无眠。不应有恨，何事长向别时圆？人有悲欢离合，'
     '月有阴晴圆缺，此事古难全。但愿人长久，千里共婵娟。', '苏轼', '宋', '词', '词', '水调歌头'),
    ('君不见黄河之水天上来，奔流到海不复回。君不见高堂明镜悲白发，朝如青丝暮成雪。人生得意须尽欢，'
     '莫使金樽空对月。天生我材必有用，千金散尽还复来。烹羊宰牛且为乐，会须一饮三百杯。岑夫子，'
     '丹丘生，将进酒，杯莫停。与君歌一曲，请君为我倾耳听。钟鼓馔玉不足贵，但愿长醉不复醒。'
     '古来圣贤皆寂寞，惟有饮者留其名。陈王昔时宴平乐，斗酒十千恣欢谑。主人何为言少钱，'
     '径须沽取对君酌。五花马，千金裘，呼儿将出换美酒，与尔同销万古愁。', '李白', '唐', '诗',
     '古体', ''),
]
SOURCE = [dict(id=str(i), text=text, lines='', title='', author=author, dynasty=dynasty,
               genre=genre, form=form, tune=tune, collection='test')
          for i, (text, author, dynasty, genre, form, tune) in enumerate(_POEMS)]


@pytest.fixture(scope='module')
def tok():
  return tokenizer.load('char')


def _config(**overrides):
  c = pipeline.default_config()
  c.seq_len = SEQ_LEN
  c.batch_size = 4
  c.control_dropout = 0.0
  c.shuffle = False
  c.num_epochs = 1
  c.read_block = 5  # several read blocks per epoch, one of them crossing into the next
  c.update(overrides)
  return c


def _ids(tok, example, controls=True):
  labels = [tok.control_id(f, example[f]) for f in pipeline.default_config().control_fields
            if controls and example[f]]
  return [tok.bos_id, *(i for i in labels if i is not None), *tok.encode(example['text']),
          tok.eos_id]


def _windows(ids):
  # SEQ_LEN + 1 ids each (inputs plus the last target), consecutive windows sharing one id.
  return [tuple(ids[s:s + SEQ_LEN + 1]) for s in range(0, len(ids) - 1, SEQ_LEN)]


def _segments(batch):
  """Each packed segment as its ids (inputs plus the last target), checking the row layout."""
  out = []
  for inputs, targets, seg, pos, w in zip(*(batch[k] for k in (
      'inputs', 'targets', 'segment_ids', 'positions', 'weights'))):
    n = int(np.count_nonzero(seg))
    # Segments fill the front of the row in order 1, 2, ...; padding is segment 0 behind them.
    assert (seg[n:] == 0).all() and (w[n:] == 0).all() and (inputs[n:] == PAD).all()
    assert (w[:n] == 1).all()
    assert (np.diff(seg[:n]) >= 0).all() and (seg[:n].max(initial=0) == len(set(seg[:n])))
    for s in np.unique(seg[:n]):
      mask = seg == s
      assert (pos[mask] == np.arange(mask.sum())).all()
      x, y = inputs[mask], targets[mask]
      # Targets are the inputs shifted by one within the segment, never across it.
      assert (y[:-1] == x[1:]).all()
      out.append((*x.tolist(), int(y[-1])))
  return out


def _epoch(tok, config, **kwargs):
  batches = list(pipeline.make_iterator(SOURCE, tok, config, **kwargs))
  for b in batches:
    assert set(b) == {'inputs', 'targets', 'segment_ids', 'positions', 'weights'}
    assert all(v.shape == (config.batch_size // kwargs.get('shard_count', 1), SEQ_LEN)
               for v in b.values())
    assert all(v.dtype == np.int32 for k, v in b.items() if k != 'weights')
    assert b['weights'].dtype == np.float32
  return [s for b in batches for s in _segments(b)]


def test_pad_is_zero(tok):
  assert tok.pad_id == PAD


@pytest.mark.parametrize('dropout', [0.0, 1.0])
def test_one_epoch_is_every_poem_chunked_with_or_without_labels(tok, dropout):
  segments = _epoch(tok, _config(control_dropout=dropout))
  expected = [w for e in SOURCE for w in _windows(_ids(tok, e, controls=dropout == 0))]
  assert sorted(segments) == sorted(expected)
  assert sum(len(_windows(_ids(tok, e))) > 1 for e in SOURCE) >= 3  # long poems were cut
  labels = {tok.control_id(f, e[f]) for e in SOURCE for f in ('dynasty', 'form')}
  assert None not in labels
  seen = {i for s in segments for i in s}
  assert labels <= seen if dropout == 0 else not labels & seen


def test_filters_select_matching_poems(tok):
  filters = {'form': ['七言绝句', '五言绝句'], 'dynasty': '唐'}
  chosen = [i for i, e in enumerate(SOURCE)
            if e['form'] in filters['form'] and e['dynasty'] == '唐']
  assert pipeline.select(SOURCE, filters).tolist() == chosen
  segments = _epoch(tok, _config(filters=filters))
  assert sorted(segments) == sorted(w for i in chosen for w in _windows(_ids(tok, SOURCE[i])))


def test_unknown_filter_value_names_close_match(tok):
  with pytest.raises(ValueError, match=r"form='七言绝'.*'七言绝句'"):
    pipeline.make_iterator(SOURCE, tok, _config(filters={'form': '七言绝'}))
  with pytest.raises(ValueError, match='colour'):
    pipeline.select(SOURCE, {'colour': '红'})
  with pytest.raises(ValueError, match='together'):
    pipeline.select(SOURCE, {'form': '词', 'dynasty': '唐'})


def test_two_shards_are_disjoint_and_cover(tok):
  owner = {w: i for i, e in enumerate(SOURCE) for w in _windows(_ids(tok, e))}
  shards = [_epoch(tok, _config(), shard_index=k, shard_count=2) for k in range(2)]
  poems = [{owner[w] for w in s} for s in shards]
  assert not poems[0] & poems[1]
  assert poems[0] | poems[1] == set(range(len(SOURCE)))
  assert sorted(shards[0] + shards[1]) == sorted(owner)
  with pytest.raises(ValueError, match='divisible'):
    pipeline.make_iterator(SOURCE, tok, _config(batch_size=3), shard_index=0, shard_count=2)


def _train_config(seed=0):
  return _config(shuffle=True, num_epochs=None, control_dropout=0.5, seed=seed)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  return len(a) == len(b) and all(
      x.keys() == y.keys() and all((x[k] == y[k]).all() for k in x) for x, y in zip(a, b))


def test_same_seed_same_batches(tok):
  a, b, c = (_take(pipeline.make_iterator(SOURCE, tok, _train_config(seed)), 8)
             for seed in (0, 0, 1))
  assert _same(a, b)
  assert not _same(a, c)
  # Reading in other blocks changes nothing: label dropout follows (seed, record, epoch).
  other_blocks = _train_config()
  other_blocks.read_block = 7
  assert _same(a, _take(pipeline.make_iterator(SOURCE, tok, other_blocks), 8))


def test_resume_from_checkpoint_yields_the_same_batches(tok, tmp_path):
  it = pipeline.make_iterator(SOURCE, tok, _train_config())
  _take(it, 5)  # several epochs of SOURCE, so the resume point is past an epoch boundary
  # The handler orbax uses for grain iterators (JSON of get_state(), one file per process).
  handler = grain.checkpoint.CheckpointHandler()
  handler.save(epath.Path(tmp_path), args=grain.checkpoint.CheckpointSave(it))
  expected = _take(it, 6)
  fresh = pipeline.make_iterator(SOURCE, tok, _train_config())
  handler.restore(epath.Path(tmp_path), args=grain.checkpoint.CheckpointRestore(fresh))
  assert _same(_take(fresh, 6), expected)


def test_worker_processes_deliver_the_same_poems(tok):
  it = pipeline.make_iterator(SOURCE, tok, _config(worker_count=2))
  segments = [s for b in it for s in _segments(b)]
  it.close()
  assert sorted(segments) == sorted(_epoch(tok, _config()))
