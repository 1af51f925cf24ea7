"""Reads the upstream chinese-poetry layout (a directory or its zip archive) into Poems.

    corpus = read_corpus('/path/to/chinese-poetry')   # simplified by default
    corpus.poems, corpus.dropped, corpus.read

Every poem is cleaned (poetjax.data.clean), converted to one script with OpenCC, de-duplicated
on its Han characters (first seen wins, in the order of collections.COLLECTIONS), and given a
split from a hash of those characters, so the split is the same on every run, machine and script.
"""

import collections
import concurrent.futures
import dataclasses
import fnmatch
import functools
import hashlib
import json
import multiprocessing
import os
import pathlib
import re
import zipfile

import opencc

from poetjax.data import clean
from poetjax.data import sources as colls
from poetjax.data import forms
from poetjax.data.poem import Poem

ENV_VAR = 'CHINESE_POETRY_DIR'
UPSTREAM_URL = 'https://github.com/chinese-poetry/chinese-poetry'
ARCHIVE_URL = UPSTREAM_URL + '/archive/refs/heads/master.zip'
SCRIPTS = ('simplified', 'traditional')
# Per mille of poems in validation and in test: about 3,300 poems each on the full corpus.
HELD_OUT_PER_MILLE = 10
_HOW_TO_GET = (f'Get the corpus with `git clone --depth 1 {UPSTREAM_URL}` (or download '
               f'{ARCHIVE_URL}) and pass its path, or set {ENV_VAR}.')


class CorpusError(ValueError):
  """The corpus path or one of its files is not what the reader needs."""


@dataclasses.dataclass
class Corpus:
  poems: list                 # de-duplicated Poems, in reading order
  read: collections.Counter   # raw records read per collection
  dropped: collections.Counter  # reason -> records not used

  def split(self, name):
    return [p for p in self.poems if p.split == name]


def default_corpus_dir():
  """The corpus path from $CHINESE_POETRY_DIR, with a message that says how to set it."""
  path = os.environ.get(ENV_VAR)
  if not path:
    raise CorpusError(f'No corpus path given and ${ENV_VAR} is not set. {_HOW_TO_GET}')
  return path


class _Tree:
  """Files of the corpus, from a directory or a zip archive (GitHub's has a top folder)."""

  def __init__(self, root):
    self.root = str(root)
    path = pathlib.Path(root)
    if not path.exists():
      raise CorpusError(f'chinese-poetry corpus not found at {path}. {_HOW_TO_GET}')
    if path.is_file():
      if not zipfile.is_zipfile(path):
        raise CorpusError(f'{path} is neither a directory nor a zip archive of the corpus. '
                          f'{_HOW_TO_GET}')
      self._zip = zipfile.ZipFile(path)
      names = [n for n in self._zip.namelist() if not n.endswith('/')]
      prefix = next((n[:n.index('全唐诗/')] for n in names if '全唐诗/' in n), '')
      self._files = {n[len(prefix):]: n for n in names if n.startswith(prefix)}
    else:
      self._zip = None
      self._files = {str(p.relative_to(path)): str(p) for p in path.rglob('*.json')}
    if not any(f.split('/')[0] in _TOP_FOLDERS for f in self._files):
      raise CorpusError(f'{path} does not look like the chinese-poetry corpus: none of '
                        f'{", ".join(sorted(_TOP_FOLDERS))} is in it. {_HOW_TO_GET}')

  def glob(self, pattern):
    return sorted((f for f in self._files if fnmatch.fnmatchcase(f, pattern)), key=_natural)

  def load(self, relpath):
    try:
      if self._zip:
        raw = self._zip.read(self._files[relpath])
      else:
        raw = pathlib.Path(self._files[relpath]).read_bytes()
      return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise CorpusError(f'Malformed JSON in corpus file {relpath} (under {self.root}): {e}. '
                        'Restore the file from the upstream repository.') from e


_TOP_FOLDERS = {c.pattern.split('/')[0] for c in colls.COLLECTIONS}


def _natural(name):
  # poet.tang.2000.json after poet.tang.1000.json, not after poet.tang.10000.json
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


@functools.cache
def _converter(config):
  return opencc.OpenCC(config)


def _composites(tree):
  """{部件} spellings that upstream resolves to one Unicode character."""
  if not tree.glob(colls.COMPOSITES):
    return {}
  table = tree.load(colls.COMPOSITES)
  return {k: v[0]['font'] for k, v in table.items() if len(v) == 1}


def _read_file(root, index, relpath, script):
  """Reads one file of one collection: (records, dropped) with records ready for de-dup."""
  tree = _tree(root)
  coll = colls.COLLECTIONS[index]
  composites = _composites_of(root)
  to_simple = _converter('t2s') if coll.script == 'traditional' else None
  to_script = _converter('s2t') if script == 'traditional' and coll.script == 'simplified' else None
  if script == 'simplified' and to_simple:
    to_script = to_simple
  out, dropped, read = [], collections.Counter(), 0
  for rec in coll.records(tree.load(relpath)):
    read += 1
    if 'skip' in rec:
      dropped[rec['skip']] += 1
      continue
    try:
      text = clean.clean_text(rec['paragraphs'], composites)
    except clean.Rejected as e:
      dropped[str(e)] += 1
      continue
    simple = to_simple.convert(text) if to_simple else text
    key = ''.join(filter(clean.is_han, simple))
    fields = [clean.clean_field(rec.get(k, '')) for k in ('title', 'author', 'tune')]
    if to_script:
      text = to_script.convert(text)
      fields = [to_script.convert(f) for f in fields]
    out.append((key, text, *fields, rec.get('dynasty') or coll.dynasty,
                rec.get('genre') or coll.genre))
  return out, dropped, read


@functools.cache
def _tree(root):
  return _Tree(root)


@functools.cache
def _composites_of(root):
  return _composites(_tree(root))


def split_of(key):
  """train / validation / test from a stable hash of the poem's Han characters."""
  bucket = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 1000
  if bucket < HELD_OUT_PER_MILLE:
    return 'validation'
  if bucket < 2 * HELD_OUT_PER_MILLE:
    return 'test'
  return 'train'


def _form(genre, lines):
  if genre == '诗':
    return forms.detect_shi_form(lines)
  return genre


def read_corpus(root=None, script='simplified', workers=None):
  """Reads, cleans, converts and de-duplicates the corpus at `root` (dir or zip)."""
  if script not in SCRIPTS:
    raise CorpusError(f'Unknown script {script!r}: use one of {", ".join(SCRIPTS)}.')
  root = str(root or default_corpus_dir())
  tree = _tree(root)
  jobs = [(root, i, f, script) for i, c in enumerate(colls.COLLECTIONS) for f in tree.glob(c.pattern)]
  workers = workers or min(len(jobs), os.cpu_count() or 1)
  if workers > 1:
    # 'spawn': the parent may already run JAX threads, which fork would copy half-started.
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context('spawn')) as pool:
      results = list(pool.map(_read_file, *zip(*jobs), chunksize=4))
  else:
    results = [_read_file(*job) for job in jobs]
  poems, seen = [], set()
  read, dropped = collections.Counter(), collections.Counter()
  for (_, index, _, _), (records, file_dropped, file_read) in zip(jobs, results):
    name = colls.COLLECTIONS[index].name
    read[name] += file_read
    dropped.update(file_dropped)
    for key, text, title, author, tune, dynasty, genre in records:
      if key in seen:
        dropped['duplicate'] += 1
        continue
      seen.add(key)
      lines = clean.split_lines(text)
      poems.append(Poem(id=hashlib.sha1(key.encode()).hexdigest()[:16], text=text, lines=lines,
                        title=title, author=author, dynasty=dynasty, genre=genre,
                        form=_form(genre, lines), tune=tune, collection=name,
                        split=split_of(key)))
  return Corpus(poems=poems, read=read, dropped=dropped)
