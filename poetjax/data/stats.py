"""Corpus statistics: poems and characters by genre, form, dynasty and split, what cleaning
dropped and why, and how well a tokenizer covers the validation text."""

import collections

from poetjax.data import clean


def tables(corpus):
  """{title: [(label, poems, han characters), ...]} sorted by poems."""
  out = {}
  for field in ('genre', 'form', 'dynasty', 'split', 'collection'):
    poems, chars = collections.Counter(), collections.Counter()
    for p in corpus.poems:
      poems[getattr(p, field)] += 1
      chars[getattr(p, field)] += clean.count_han(p.text)
    out[field] = [(k, n, chars[k]) for k, n in poems.most_common()]
  tang = [p for p in corpus.poems if p.dynasty == '唐' and p.genre == '诗']
  out['form of Tang shi'] = [(k, n, None) for k, n in
                             collections.Counter(p.form for p in tang).most_common()]
  out['dropped'] = [(k, n, None) for k, n in corpus.dropped.most_common()]
  out['read'] = [(k, n, None) for k, n in corpus.read.most_common()]
  return out


def coverage(tokenizer, poems):
  """Share of Han characters that are one piece (not bytes), and tokens per Han character."""
  han = single = tokens = 0
  for p in poems:
    pieces = tokenizer.sp.encode(p.text, out_type=str)
    tokens += len(pieces)
    han += clean.count_han(p.text)
    single += sum(1 for s in pieces if len(s) == 1 and clean.is_han(s))
  return {'han_chars': han, 'single_piece_share': single / max(han, 1),
          'tokens_per_han_char': tokens / max(han, 1)}


def render(corpus, tokenizers=()):
  lines, by = [], tables(corpus)
  for title, rows in by.items():
    lines.append(f'\n{title}')
    for label, n, chars in rows:
      lines.append(f'  {label:<12}\t{n:>9,}' + (f'\t{chars:>12,} chars' if chars else ''))
  total = sum(n for _, n, _ in by['genre'])
  lines.append(f'\ntotal: {total:,} poems kept of {sum(corpus.read.values()):,} read')
  validation = corpus.split('validation')
  for name, tok in tokenizers:
    c = coverage(tok, validation)
    lines.append(f'tokenizer {name}: vocab {tok.vocab_size:,}; on validation '
                 f'{c["single_piece_share"]:.4%} of {c["han_chars"]:,} Han chars are one piece, '
                 f'{c["tokens_per_han_char"]:.3f} tokens per Han char')
  return '\n'.join(lines)
