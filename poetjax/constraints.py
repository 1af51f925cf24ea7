"""Form constraints for the sampler: a logit mask from a small state machine, inside jit.

    template = templates.lookup('七言绝句')
    c = constraints.build(tok, template, rows=4, vocab_size=model.config.vocab_size,
                          acrostic='春夏秋冬')
    out = sampler.generate(model, prompts, constraint=c, ...)

The state per row is (line, position in the line, the rhyme class of each rhyme set). At each step the mask admits
only: Han tokens that fit the rest of the line (a subword piece of k characters needs k free
positions), with the 平仄 each position asks for (hard, or a `tone_weight` penalty), the
rhyme class of the line's rhyme set at its end (fixed by the set's first line unless `rhyme`
names one for the main set),
the forced characters (acrostic heads, a given first line); the line's punctuation once the
line is full; eos after the last line. A forced character overrides the tone rule at its
position: the user asked for it. A character missing from the tone tables only fills '*'
positions, so a hard-constrained poem is right by the tables, not by luck. Rhyme classes are 平水韵 groups for shi and 词林正韵 部 for ci.
"""

import dataclasses
import difflib
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from poetjax import prosody as prosody_lib
from poetjax.data import clean

MAX_PIECE = 4  # longest Han piece considered; longer pieces are never allowed inside a form
TONE_CODE = {'*': 0, 'P': prosody_lib.PING, 'Z': prosody_lib.ZE}


def rhyme_classes(prosody, system, tone):
  """Rhyme class names: 平水韵 groups of `tone` (shi), or 词林正韵 部 of any tone ('cilin':
  a 词牌's tones are in its template, and some tunes rhyme 平 with 仄 of one 部)."""
  if system == 'pingshui':
    return tuple(g for g in prosody.group_names if prosody.group_tone(g) == tone)
  if system == 'cilin':
    return tuple(dict.fromkeys(b for g in prosody.group_names for b in prosody.cilin_all(g)))
  raise ValueError(f"Unknown rhyme system {system!r}; use 'pingshui' or 'cilin'.")


def _char_classes(prosody, char, system, tone, index):
  if system == 'cilin':
    return [index[b] for b in prosody.bu(char) if b in index]
  return [index[g] for g in prosody.ping_groups(char) if g in index] if tone == prosody_lib.PING \
      else [index[g] for g in prosody.groups(char) if g in index]


@functools.lru_cache(maxsize=8)
def _tables(tokenizer, vocab_size, system, tone):
  """Per-token arrays: its Han characters, their tones, and the rhyme classes of the last one."""
  prosody = prosody_lib.load()
  classes = rhyme_classes(prosody, system, tone)
  index = {c: i for i, c in enumerate(classes)}
  sp = tokenizer.sp
  chars = np.zeros((vocab_size, MAX_PIECE), np.int32)
  tones = np.zeros((vocab_size, MAX_PIECE), np.int32)
  length = np.zeros(vocab_size, np.int32)
  rhymes = np.zeros((vocab_size, len(classes)), bool)
  for i in range(tokenizer.vocab_size):
    if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i):
      continue
    piece = sp.id_to_piece(i)
    if not 0 < len(piece) <= MAX_PIECE or clean.count_han(piece) != len(piece):
      continue
    length[i] = len(piece)
    for j, ch in enumerate(piece):
      chars[i, j] = ord(ch)
      tones[i, j] = prosody.tone(ch)  # 0 for a character the tables lack: fits '*' only
    rhymes[i, _char_classes(prosody, piece[-1], system, tone, index)] = True
  k = max(1, int(length.max()))  # 1 for the char tokenizer: the per-step mask stays [n, V]
  return classes, {'chars': chars[:, :k], 'tones': tones[:, :k], 'length': length,
                   'rhymes': rhymes}


def _piece_id(tokenizer, piece, what):
  i = tokenizer.sp.piece_to_id(piece)
  if i == tokenizer.unk_id:
    raise ValueError(f'The tokenizer has no piece for {what} {piece!r}.')
  return i


def _per_row(value, rows, what):
  """One value for every row, or a list with one per row."""
  if value is None or isinstance(value, str):
    return [value] * rows
  value = list(value)
  if len(value) != rows:
    raise ValueError(f'{what} has {len(value)} entries for {rows} rows; give one per row.')
  return value


def build(tokenizer, template, rows, *, vocab_size, tones='strict', tone_weight=float('inf'),
          rhyme=None, acrostic=None, first_line=None, keywords=(), keyword_boost=2.0,
          rhyme_system='pingshui'):
  """The Constraint for `rows` poems of `template` (templates.Template), or of one template
  per row (variants of one form: the same line lengths, other 平仄 or rhyme lines).

  tones: 'strict' (the template's 平仄), 'off' (lengths, punctuation and rhyme only); for
  一三五不论 pass a loose template. tone_weight: inf = hard, else the logit penalty of a
  wrong tone. rhyme: a rhyme class name to use, None = fixed by the first rhyming line,
  'off' = no rhyme rule. acrostic / first_line: a string for all rows or one per row.
  """
  if tones not in ('strict', 'off'):
    raise ValueError(f"tones must be 'strict' or 'off' (a loose template gives 一三五不论), "
                     f'not {tones!r}.')
  per_row = list(template) if isinstance(template, (list, tuple)) else [template] * rows
  if len(per_row) != rows:
    raise ValueError(f'{len(per_row)} templates for {rows} rows; give one or one per row.')
  template = per_row[0]
  lines = template.lines
  for other in per_row:
    if [l.length for l in other.lines] != [l.length for l in lines] or (
        other.rhyme_tone != template.rhyme_tone):
      raise ValueError(f'{other.name} and {template.name} differ in line lengths or rhyme '
                       'tone; templates of one batch must share them.')
  classes, tables = _tables(tokenizer, vocab_size, rhyme_system, template.rhyme_tone)
  num_lines, width = len(lines), max(line.length for line in lines)
  plan = {
      'num_lines': np.int32(num_lines),
      'length': np.asarray([line.length for line in lines], np.int32),
      'tone': np.zeros((rows, num_lines, width + MAX_PIECE), np.int32),
      # Per line its rhyme set (0 none): lines of one set rhyme together; 菩萨蛮 has four.
      'rhyme': np.asarray([[0 if rhyme == 'off' else line.rhyme_set or int(line.rhyme)
                            for line in t.lines] for t in per_row], np.int32),
      'end': np.asarray([_piece_id(tokenizer, line.end, 'the line end') for line in lines],
                        np.int32),
      'eos': np.int32(tokenizer.eos_id),
      'tone_weight': np.float32(tone_weight),
      'boost': np.zeros(vocab_size, np.float32),
      'forced': np.zeros((rows, num_lines, width + MAX_PIECE), np.int32),
  }
  if tones == 'strict':
    for row, t in enumerate(per_row):
      for i, line in enumerate(t.lines):
        plan['tone'][row, i, :line.length] = [TONE_CODE[c] for c in line.tones]
  for word in keywords:
    for ch in word:
      plan['boost'][tables['chars'][:, 0] == ord(ch)] = keyword_boost
  for row, (heads, first) in enumerate(zip(_per_row(acrostic, rows, 'acrostic'),
                                           _per_row(first_line, rows, 'first_line'))):
    if heads:
      if len(heads) > num_lines:
        raise ValueError(f'The acrostic {heads!r} has {len(heads)} characters but '
                         f'{template.name} has {num_lines} lines.')
      for i, ch in enumerate(heads):
        _check_han(tokenizer, ch, 'acrostic')
        plan['forced'][row, i, 0] = ord(ch)
    if first:
      first = first.rstrip('，。,.')
      if len(first) != lines[0].length:
        raise ValueError(f'The first line {first!r} has {len(first)} characters; '
                         f'{template.name} wants {lines[0].length}.')
      for j, ch in enumerate(first):
        _check_han(tokenizer, ch, 'first line')
        plan['forced'][row, 0, j] = ord(ch)
  group = -1
  if rhyme not in (None, 'off'):
    if rhyme not in classes:
      close = difflib.get_close_matches(rhyme, classes, n=5, cutoff=0.3)
      raise ValueError(f'Unknown rhyme class {rhyme!r} for {template.name}; '
                       f'close: {close or classes[:10]}.')
    group = classes.index(rhyme)
  sets = max(1, int(plan['rhyme'].max()))
  groups = np.full((rows, sets), -1, np.int32)
  groups[:, 0] = group  # a chosen rhyme applies to the first (main) set
  state = {'line': np.zeros(rows, np.int32), 'pos': np.zeros(rows, np.int32), 'group': groups}
  return Constraint(RULE, jax.tree.map(jnp.asarray, tables), jax.tree.map(jnp.asarray, plan),
                    jax.tree.map(jnp.asarray, state), classes)


def _check_han(tokenizer, ch, what):
  if not clean.count_han(ch):
    raise ValueError(f'The {what} character {ch!r} is not a Han character.')
  i = tokenizer.sp.piece_to_id(ch)
  if i == tokenizer.unk_id:
    raise ValueError(f'The {what} character {ch!r} is not in the tokenizer vocabulary.')


class _Rule:
  """The jitted state machine; one instance (RULE), a static argument of the sampler."""

  @staticmethod
  def _here(tables, plan, state):
    line = jnp.minimum(state['line'], plan['num_lines'] - 1)
    k = jnp.arange(tables['chars'].shape[1])
    cols = state['pos'][:, None] + k[None, :]  # the positions a piece starting here covers
    rows = jnp.arange(line.shape[0])[:, None]
    tone = plan['tone'][rows, line[:, None], cols]  # [n, K]
    forced = plan['forced'][rows, line[:, None], cols]
    return line, tone, forced

  @staticmethod
  def _rhyme_here(plan, state, line):
    """The current line's rhyme set (0: none) and that set's class so far (-1: not yet)."""
    rhyme_set = plan['rhyme'][jnp.arange(line.shape[0]), line]
    group = jnp.take_along_axis(state['group'], jnp.maximum(rhyme_set - 1, 0)[:, None], 1)[:, 0]
    return rhyme_set, group

  def allowed(self, tables, plan, state):
    """bool [n, vocab] (hard rules) and bool [n, vocab] (a tone is wrong)."""
    line, tone, forced = self._here(tables, plan, state)
    length = plan['length'][line]
    remaining = length - state['pos']
    in_poem = state['line'] < plan['num_lines']
    vocab = tables['length'].shape[0]
    ids = jnp.arange(vocab)
    piece = tables['length'][None, :]  # [1, V]
    covers = jnp.arange(tables['chars'].shape[1])[None, None, :] < piece[..., None]  # [1, V, K]
    fits = (piece >= 1) & (piece <= remaining[:, None])
    chars_ok = (forced[:, None, :] == 0) | (tables['chars'][None] == forced[:, None, :])
    chars_ok = jnp.all(chars_ok | ~covers, -1)
    tone_ok = (tone[:, None, :] == 0) | ((tables['tones'][None] & tone[:, None, :]) != 0)
    tone_ok = jnp.all(tone_ok | (forced[:, None, :] != 0) | ~covers, -1)
    ends = (state['pos'][:, None] + piece) == length[:, None]
    rhyme_set, group = self._rhyme_here(plan, state, line)
    in_group = jnp.take(tables['rhymes'], jnp.maximum(group, 0), axis=1).T  # [n, V]
    rhymes = jnp.where(group[:, None] >= 0, in_group, tables['rhymes'].any(-1)[None])
    width = forced.shape[1]
    forced_end = jnp.take_along_axis(forced, jnp.clip(remaining - 1, 0, width - 1)[:, None], 1)
    rhyme_ok = ~(ends & (rhyme_set > 0)[:, None]) | rhymes | (forced_end != 0)
    han = fits & chars_ok & rhyme_ok
    punct = (remaining == 0)[:, None] & (ids[None] == plan['end'][line][:, None])
    hard = jnp.where(in_poem[:, None], jnp.where((remaining > 0)[:, None], han, punct),
                     ids[None] == plan['eos'])
    wrong_tone = in_poem[:, None] & (remaining > 0)[:, None] & ~tone_ok
    return hard, wrong_tone

  def bias(self, tables, plan, state):
    """float [n, vocab]: 0 allowed, -inf forbidden, -tone_weight for a wrong tone, + boost."""
    hard, wrong_tone = self.allowed(tables, plan, state)
    penalty = jnp.where(wrong_tone, -plan['tone_weight'], 0.0)
    return jnp.where(hard, penalty + plan['boost'][None], -jnp.inf)

  def advance(self, tables, plan, state, token, done):
    line = jnp.minimum(state['line'], plan['num_lines'] - 1)
    length = plan['length'][line]
    piece = tables['length'][token]
    end_of_line = (piece == 0) & (state['pos'] == length) & (token == plan['end'][line])
    pos = jnp.where(piece > 0, state['pos'] + piece, jnp.where(end_of_line, 0, state['pos']))
    new_line = state['line'] + end_of_line.astype(jnp.int32)
    rhyme_set, current = self._rhyme_here(plan, state, line)
    fixes = (piece > 0) & (state['pos'] + piece == length) & (rhyme_set > 0) & (
        current < 0) & tables['rhymes'][token].any(-1)
    column = jnp.arange(state['group'].shape[1])[None, :] == (rhyme_set - 1)[:, None]
    group = jnp.where(fixes[:, None] & column, jnp.argmax(tables['rhymes'][token], -1)[:, None],
                      state['group'])
    keep = lambda new, old: jnp.where(done.reshape(done.shape + (1,) * (new.ndim - 1)), old, new)
    return {'line': keep(new_line, state['line']), 'pos': keep(pos, state['pos']),
            'group': keep(group, state['group'])}


RULE = _Rule()


# The plan's per-row entries (the rest is shared by every row).
_PER_ROW = ('tone', 'rhyme', 'forced')


@dataclasses.dataclass
class Constraint:
  rule: _Rule
  tables: Any
  plan: Any
  state: Any
  classes: tuple  # names of the rhyme classes, indexed by the state's group

  def repeat_rows(self, k):
    """Each row k times in a row (row r becomes rows r*k .. r*k+k-1), e.g. one per beam."""
    repeat = lambda x: jnp.repeat(x, k, axis=0)
    plan = dict(self.plan, **{name: repeat(self.plan[name]) for name in _PER_ROW})
    return dataclasses.replace(self, plan=plan, state=jax.tree.map(repeat, self.state))


def explain(constraint, final_state, row, template):
  """Where a stuck row stopped, in words."""
  line, pos = int(final_state['line'][row]), int(final_state['pos'][row])
  return (f'No token satisfies the constraints of {template.name} at line {line + 1}, '
          f'character {pos + 1} (row {row}): loosen the tones (--tones loose or off), '
          f'choose another rhyme or acrostic character.')
