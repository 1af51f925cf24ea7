"""Corpus reading, cleaning, conversion, form detection, de-duplication and splits."""

import collections
import json
import shutil
import zipfile

import pytest

from poetjax.data import clean
from poetjax.data import corpus
from poetjax.data import forms
from poetjax.data import sources


@pytest.fixture(scope='module')
def simplified(corpus_dir):
  return corpus.read_corpus(corpus_dir, workers=1)


def test_every_collection_yields_poems(simplified):
  names = {c.name for c in sources.COLLECTIONS}
  assert set(simplified.read) == names
  kept = collections.Counter(p.collection for p in simplified.poems)
  # 唐诗三百首 and the 蒙学 anthologies repeat 全唐诗 poems, but not all of them are in the slice.
  assert all(kept[n] > 0 for n in names), kept
  genres = collections.Counter(p.genre for p in simplified.poems)
  assert {'诗', '词', '曲', '诗经', '楚辞', '蒙学'} <= set(genres)


def test_records_are_complete(simplified):
  for p in simplified.poems:
    assert p.text == ''.join(p.lines)
    assert p.text[-1] in clean.LINE_END and all(l[-1] in clean.LINE_END for l in p.lines)
    assert all(clean.is_han(ch) or ch in clean.PUNCT for ch in p.text)
    assert p.genre != '词' or p.tune, p
    assert p.split in ('train', 'validation', 'test')


def test_traditional_to_simplified(simplified):
  first_tang = next(p for p in simplified.poems if p.collection == '全唐诗')
  assert first_tang.lines[:2] == ('秦川雄帝宅，', '函谷壮皇居。')  # upstream: 函谷壯皇居
  assert first_tang.author == '太宗皇帝' and first_tang.dynasty == '唐'


def test_traditional_track_keeps_ids_and_splits(corpus_dir, simplified):
  trad = corpus.read_corpus(corpus_dir, script='traditional', workers=2)
  assert [(p.id, p.split) for p in trad.poems] == [(p.id, p.split) for p in simplified.poems]
  tang = next(p for p in trad.poems if p.collection == '全唐诗')
  assert tang.lines[1] == '函谷壯皇居。'
  ci = next(p for p in trad.poems if p.collection == '宋词')
  assert '气和玉烛' in next(p for p in simplified.poems if p.id == ci.id).text
  assert ci.text.startswith('氣和玉燭')  # the ci are simplified upstream and go through s2t


def test_ci_and_qu_tunes(simplified):
  ci = [p for p in simplified.poems if p.collection == '宋词']
  assert ci[0].tune == '导引' and ci[0].form == '词'
  assert sources.qu_tune('诈妮子调风月・仙吕/点绛唇') == '点绛唇'
  assert sources.qu_tune('张公艺九世同居・六幺序') == '六幺序'
  assert sources.qu_tune('双调・蟾宫曲题《录鬼簿》') == '蟾宫曲题'
  assert sources.qu_tune('剔银灯') == '剔银灯'
  nalan = [p for p in simplified.poems if p.collection == '纳兰性德' and p.genre == '词']
  assert nalan and all(p.tune for p in nalan)


@pytest.mark.parametrize('text, form', [
    ('白日依山尽，黄河入海流。欲穷千里目，更上一层楼。', '五言绝句'),
    ('朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。', '七言绝句'),
    ('国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。',
     '五言律诗'),
    ('风急天高猿啸哀，渚清沙白鸟飞回。无边落木萧萧下，不尽长江滚滚来。万里悲秋常作客，百年多病独登台。'
     '艰难苦恨繁霜鬓，潦倒新停浊酒杯。', '七言律诗'),
    ('床前明月光，疑是地上霜。举头望明月。', '古体'),
    ('君不见黄河之水天上来，奔流到海不复回。君不见高堂明镜悲白发，朝如青丝暮成雪。', '古体'),
    ('一二三四五，一二三四五。' * 5, '五言排律'),
])
def test_form_detection(text, form):
  assert forms.detect_shi_form(clean.split_lines(text)) == form


def test_cleaning():
  assert clean.clean_text(['秦川雄帝宅（一作宫），函谷壮皇居.', '连甍遥接汉,飞观迥凌虚']) == (
      '秦川雄帝宅，函谷壮皇居。连甍遥接汉，飞观迥凌虚。')
  assert clean.clean_text(['（以上刘瑛整理）。', '春眠不觉晓，处处闻啼鸟。']) == '春眠不觉晓，处处闻啼鸟。'
  assert clean.clean_text(['「君」问归期未有期。']) == '君问归期未有期。'
  for paragraphs, reason in [(['三危山内□世，结此道场。'], 'missing characters'),
                             (['鹪{冥鸟}有短羽。'], 'missing characters'),
                             (['几处炉炭[H，何人坐有。'], 'garbled: unbalanced brackets'),
                             (['abc，def。'], 'empty'),
                             (['春风ABC，又绿江南。'], 'garbled: non-Han characters')]:
    with pytest.raises(clean.Rejected, match=reason):
      clean.clean_text(paragraphs)
  assert clean.clean_text(['鹪{冥鸟}有短羽。'], {'{冥鸟}': '鹩'}) == '鹪鹩有短羽。'


def test_drops_are_counted(simplified):
  assert simplified.dropped['missing characters'] > 0
  total = sum(simplified.read.values())
  assert len(simplified.poems) + sum(simplified.dropped.values()) == total


def test_deduplication_across_titles_and_authors(corpus_dir, tmp_path):
  root = tmp_path / 'corpus'
  shutil.copytree(corpus_dir, root)
  tang = json.loads((root / '全唐诗/poet.tang.0.json').read_text())
  copy = [dict(p, title=p['title'] + '又', author='佚名') for p in tang[:30]]
  # punctuation and script differences do not make a poem new
  copy[0]['paragraphs'] = [l.replace('，', ',') for l in copy[0]['paragraphs']]
  (root / '全唐诗/poet.tang.1000.json').write_text(json.dumps(copy, ensure_ascii=False))
  before = corpus.read_corpus(corpus_dir, workers=1)
  after = corpus.read_corpus(root, workers=1)
  assert len(after.poems) == len(before.poems)
  assert after.dropped['duplicate'] - before.dropped['duplicate'] == sum(
      1 for p in copy if _usable(p))
  assert len({p.id for p in after.poems}) == len(after.poems)


def _usable(raw):
  try:
    clean.clean_text(raw['paragraphs'])
    return True
  except clean.Rejected:
    return False


def test_splits_are_disjoint_stable_and_sized(simplified):
  by_split = collections.defaultdict(set)
  for p in simplified.poems:
    by_split[p.split].add(''.join(filter(clean.is_han, p.text)))
  assert not by_split['train'] & (by_split['validation'] | by_split['test'])
  assert not by_split['validation'] & by_split['test']
  # Fixed hash: these must never move, or old checkpoints would have seen their test poems.
  assert corpus.split_of('白日依山尽黄河入海流欲穷千里目更上一层楼') == 'train'
  assert [corpus.split_of(str(i)) for i in range(2000)].count('validation') == 19


def test_full_corpus_sizes(full_corpus):
  """The acceptance numbers of the data layer on the whole corpus."""
  c = full_corpus
  genres = collections.Counter(p.genre for p in c.poems)
  assert genres['诗'] >= 300_000 and genres['词'] >= 20_000 and genres['曲'] >= 10_000
  tang = collections.Counter(p.form for p in c.poems if p.dynasty == '唐' and p.genre == '诗')
  for form, near in [('五言律诗', 14_500), ('七言绝句', 10_500), ('七言律诗', 8_000),
                     ('五言绝句', 4_000)]:
    assert abs(tang[form] - near) / near < 0.1, (form, tang[form])
  splits = collections.Counter(p.split for p in c.poems)
  assert splits['validation'] >= 2000 and splits['test'] >= 2000
  assert 0.005 < c.dropped['duplicate'] / sum(c.read.values()) < 0.015


def test_zip_archive_reads_the_same(corpus_dir, simplified, tmp_path):
  archive = tmp_path / 'chinese-poetry-master.zip'
  with zipfile.ZipFile(archive, 'w') as z:
    for f in corpus_dir.rglob('*.json'):
      z.write(f, 'chinese-poetry-master/' + str(f.relative_to(corpus_dir)))
  assert corpus.read_corpus(archive, workers=1).poems == simplified.poems


def test_bad_input(corpus_dir, tmp_path):
  with pytest.raises(corpus.CorpusError, match=r'not found at .*nowhere.*git clone'):
    corpus.read_corpus(tmp_path / 'nowhere')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(corpus.CorpusError, match='does not look like the chinese-poetry corpus'):
    corpus.read_corpus(tmp_path / 'empty')
  root = tmp_path / 'broken'
  shutil.copytree(corpus_dir, root)
  (root / '宋词/ci.song.0.json').write_text('[{"author": "x", ')
  with pytest.raises(corpus.CorpusError, match=r'Malformed JSON in corpus file 宋词/ci.song.0.json'):
    corpus.read_corpus(root, workers=1)
  with pytest.raises(corpus.CorpusError, match='Unknown script'):
    corpus.read_corpus(corpus_dir, script='cantonese')
