"""Shared fixtures: small slices of the real corpus, written in the upstream layout."""

import fcntl
import json
import os
import pathlib
import pickle
import shutil
import tempfile

# Eight simulated CPU devices for the sharded tests; XLA reads this before jax starts.
os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', ''), '--xla_force_host_platform_device_count=8']).strip()
# libtpu is installed (for the AOT compiles): keep tests and their subprocesses off its TPU probe.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# A directory per test run, shared by the xdist workers (started after this runs in the
# controller, they inherit it) and their subprocesses; removed at the end of the run. It holds
# JAX's compilation cache (many tests compile the same tiny train step or sampler: a hit loads
# it) and the whole corpus read once (see full_corpus).
_OWN_RUN_DIR = 'POETJAX_TEST_RUN_DIR' not in os.environ
if _OWN_RUN_DIR:
  os.environ['POETJAX_TEST_RUN_DIR'] = tempfile.mkdtemp(prefix='poetjax-test-')
RUN_DIR = pathlib.Path(os.environ['POETJAX_TEST_RUN_DIR'])
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(RUN_DIR / 'jit'))

import pytest  # pylint: disable=g-import-not-at-top

from poetjax.data import corpus
from poetjax.data import sources

SHARED = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'chinese-poetry'
CORPUS_DIR = pathlib.Path(os.environ.get('CHINESE_POETRY_DIR', SHARED))
# Rhyme and tone tables used as oracles (平水韵, 词林正韵): beside the corpus unless set.
RHYME_DIR = pathlib.Path(
    os.environ.get('CHINESE_WORD_RHYME_DIR', CORPUS_DIR.parent / 'chinese-word-rhyme'))
SLICE = 200  # records per file: every collection and reader is exercised in about a second


@pytest.fixture(scope='session')
def full_corpus_dir():
  if not (CORPUS_DIR / '全唐诗').is_dir():
    pytest.fail(f'chinese-poetry corpus not found at {CORPUS_DIR}: set CHINESE_POETRY_DIR.')
  return CORPUS_DIR


@pytest.fixture(scope='session')
def full_corpus(full_corpus_dir):
  """The whole corpus: the first worker to ask reads it (about 40 s on 2 cores) and pickles it
  for the others, which wait on the lock and load it."""
  saved = RUN_DIR / 'full_corpus.pickle'
  with open(RUN_DIR / 'full_corpus.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if saved.exists():
      return pickle.loads(saved.read_bytes())
    read = corpus.read_corpus(full_corpus_dir)
    saved.write_bytes(pickle.dumps(read))
    return read


@pytest.fixture(scope='session')
def rhyme_dir():
  if not (RHYME_DIR / 'Pingshui_Rhyme.json').is_file():
    pytest.skip(f'chinese-word-rhyme tables not found at {RHYME_DIR}: set CHINESE_WORD_RHYME_DIR '
                'to a checkout of the chinese-word-rhyme tables to run the cross-checks.')
  return RHYME_DIR


def write_slice(src, dst, per_file=SLICE):
  """The first file of every collection, cut to `per_file` records, in the upstream layout."""
  patterns = [c.pattern for c in sources.COLLECTIONS] + [sources.COMPOSITES]
  for pattern in patterns:
    for path in sorted(src.glob(pattern))[:1]:
      data = json.loads(path.read_text(encoding='utf-8'))
      if isinstance(data, list):
        data = data[:per_file]
      out = dst / path.relative_to(src)
      out.parent.mkdir(parents=True, exist_ok=True)
      out.write_text(json.dumps(data, ensure_ascii=False), encoding='utf-8')
  return dst


@pytest.fixture(scope='session')
def corpus_dir(full_corpus_dir, tmp_path_factory):
  return write_slice(full_corpus_dir, tmp_path_factory.mktemp('chinese-poetry'))


def pytest_unconfigure(config):
  del config
  if _OWN_RUN_DIR:  # the controller (xdist workers inherit the directory), or a plain run
    shutil.rmtree(RUN_DIR, ignore_errors=True)
