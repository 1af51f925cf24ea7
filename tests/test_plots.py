"""The evaluation's figures: written, readable PNGs, the same bytes for the same inputs, Chinese
set in a font that has it, and missing sections skipped."""

import json
import warnings

from matplotlib import image
import pytest

from poetjax import plots

REPORT = {
    'run': {'name': 'tiny', 'step': 600},
    'lm': {'overall': {'model': {'bits_per_char': 10.3, 'loss': 6.0, 'perplexity': 405.0},
                       'KN-5': {'bits_per_char': 8.9, 'loss': None, 'perplexity': None},
                       'unigram': {'bits_per_char': 11.6, 'loss': None, 'perplexity': None}},
           'groups': {'all': {'poems': 3529, 'model': 10.3, 'KN-5': 8.9, 'unigram': 11.6},
                      'form 七言绝句': {'poems': 870, 'model': 10.0, 'KN-5': None, 'unigram': 11.3}}},
    'generation': {'rows': [
        {'form': 'all', 'source': source, 'n': 200, 'format': f, 'rhyme': f, 'alternation_246': f,
         'tone_accuracy': f, 'distinct_2': 0.9, 'self_bleu': 12.0, 'copied_lines': float('nan')}
        for source, f in (('model', 0.2), ('model constrained', 1.0), ('human', 0.95))]},
    'samples': [{'form': '五言绝句', 'source': 'model constrained',
                 'text': '白日依山尽，黄河入海流。欲穷千里目，更上一层楼。'},
                {'form': '浣溪沙', 'source': 'model', 'text': 'abc not a poem'}],
}


@pytest.fixture
def workdir(tmp_path):
  records = [{'step': 0, 'val/unigram_bits_per_char': 11.8}, {'step': 20, 'loss': 8.2},
             {'step': 40, 'loss': 7.0}, {'step': 40, 'loss': 6.5},  # a resumed run's repeat
             {'step': 40, 'val/bits_per_char': 10.7}]
  path = tmp_path / 'run'
  path.mkdir()
  (path / 'metrics.jsonl').write_text('\n'.join(map(json.dumps, records)) + '\n')
  return path


def test_metrics_keep_the_last_record_of_a_step(workdir):
  series = plots.read_metrics(workdir)
  assert series['loss'] == ([20, 40], [8.2, 6.5])
  assert plots.read_metrics(workdir / 'none') == {}


def test_figures_are_written_and_the_same_twice(workdir, tmp_path):
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # e.g. 'Glyph ... missing from font'
    names = plots.write_all(REPORT, {'tiny': workdir}, tmp_path / 'a')
    again = plots.write_all(REPORT, {'tiny': workdir}, tmp_path / 'b')
  assert names == again == ['curves.png', 'lm.png', 'generation.png', 'samples.png']
  for name in names:
    data = (tmp_path / 'a' / name).read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    assert data == (tmp_path / 'b' / name).read_bytes()
    pixels = image.imread(tmp_path / 'a' / name)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
  assert 'DejaVu' not in plots.cjk_family()


def test_characters_the_font_lacks_are_marked():
  assert plots.drawable('白日𩆧a') == '白日〓a'  # U+291A7, of CJK Extension B


def test_missing_sections_are_skipped(tmp_path):
  names = plots.write_all({'run': {'name': 'x'}}, {'x': tmp_path / 'none'}, tmp_path / 'out')
  assert names == []
  assert plots.compare({'x': {'run': {}}}, {}, tmp_path / 'c.png') is None
  path = plots.compare({'tiny': REPORT, 'other': {'lm': None}}, {}, tmp_path / 'c.png')
  assert image.imread(path).shape[0] > 100
