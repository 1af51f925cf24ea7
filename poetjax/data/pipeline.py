"""The Grain input pipeline: poems -> control ids + text ids -> packed, batched int32 rows.

    it = pipeline.make_iterator(tfds_builder.data_source(data_dir, 'train'),
                                tokenizer.load('char'), pipeline.default_config())
    batch = next(it)  # inputs, targets, segment_ids, positions: int32 [rows, seq_len];
                      # weights: float32 [rows, seq_len], 0 on padding
    state = it.get_state()  # JSON-able; it.set_state(state) resumes with the same batches

Steps: filter (by genre, form, dynasty, author, tune) -> shard by jax process -> shuffle (seeded,
new order each epoch) -> repeat -> tokenise ([bos] + kept control ids + text + [eos]) -> cut long
poems into windows -> pack (grain's first-fit packing) -> batch -> optional worker processes.
Every step is index-based or checkpointed by Grain, so a restored iterator continues exactly.
"""

import difflib
import functools

from absl import flags
import grain
import jax
import ml_collections
import numpy as np

# Fields a config may filter on (the labels a user picks a style by).
FILTER_FIELDS = ('genre', 'form', 'dynasty', 'author', 'tune')
_SCAN_BLOCK = 1024  # records per read while filtering


def default_config():
  c = ml_collections.ConfigDict()
  c.seq_len = 128
  c.batch_size = 32  # global: each jax process gets batch_size // process_count rows
  c.filters = ml_collections.ConfigDict()  # field -> value or list of values; empty = all
  c.control_fields = ('dynasty', 'form', 'tune', 'author')
  c.control_dropout = 0.1  # per label, so unconditioned sampling is trained too
  c.shuffle = True
  c.seed = 0
  c.num_epochs = ml_collections.config_dict.placeholder(int)  # None = repeat forever
  c.worker_count = 0  # 0 = in this process
  c.read_block = 128  # records read per call: one ArrayRecord read costs ~0.3 ms, 128 barely more
  return c


def read(source, records):
  """source[r] for each record, in one call where the source can (`__getitems__`).

  ArrayRecord's single read costs about 0.3 ms, as much as a batched read of a hundred records.
  """
  read_many = getattr(source, '__getitems__', None)
  return read_many(records) if read_many else [source[r] for r in records]


def select(source, filters):
  """Indices of the records matching every filter; raises ValueError on an unknown value.

  A filter value is checked against the values the source actually holds, so a typo is an
  error naming close matches rather than a silently empty dataset.
  """
  wanted = {}
  for field, values in dict(filters or {}).items():
    if field not in FILTER_FIELDS:
      raise ValueError(f'Unknown data filter field {field!r}; use one of {FILTER_FIELDS}.')
    wanted[field] = {values} if isinstance(values, str) else set(values)
  if not wanted:
    return np.arange(len(source))
  seen = {field: set() for field in wanted}
  keep = []
  for start in range(0, len(source), _SCAN_BLOCK):
    records = list(range(start, min(start + _SCAN_BLOCK, len(source))))
    for i, example in zip(records, read(source, records)):
      for field in wanted:
        seen[field].add(example[field])
      if all(example[f] in v for f, v in wanted.items()):
        keep.append(i)
  for field, values in wanted.items():
    for value in sorted(values - seen[field]):
      close = difflib.get_close_matches(value, sorted(seen[field] - {''}), n=3)
      hint = f'Did you mean {" or ".join(map(repr, close))}?' if close else (
          f'The source has {len(seen[field])} distinct {field} values.')
      raise ValueError(f'Data filter {field}={value!r} matches no poem in the source. {hint}')
  if not keep:
    raise ValueError(f'No poem matches all the data filters {wanted} together.')
  return np.asarray(keep)


class _Tokenise(grain.transforms.MapWithIndex):
  """A block of record indices -> one id array per poem: [bos] + kept labels + text + [eos]."""

  def __init__(self, source, tokenizer, config, epoch_len):
    self._source = source
    self._tokenizer = tokenizer
    self._fields = tuple(config.control_fields)
    self._dropout = config.control_dropout
    self._seed = config.seed
    self._block = config.read_block
    self._epoch_len = epoch_len
    self._control_ids = {}

  def _control_id(self, field, value):
    if (field, value) not in self._control_ids:
      self._control_ids[field, value] = self._tokenizer.control_id(field, value)
    return self._control_ids[field, value]

  def _ids(self, example, record, epoch):
    # Drawn from (seed, record, epoch), not from iteration order, so a resumed run and any
    # shard count drop the same labels of the same poem in the same epoch.
    draws = np.random.default_rng((self._seed, record, epoch)).random(len(self._fields))
    controls = [self._control_id(f, example[f]) for f, u in zip(self._fields, draws)
                if example[f] and u >= self._dropout]
    tok = self._tokenizer
    ids = [tok.bos_id, *(i for i in controls if i is not None), *tok.encode(example['text']),
           tok.eos_id]
    return np.asarray(ids, np.int32)

  def map_with_index(self, index, records):
    records = records.tolist()
    examples = read(self._source, records)
    first = index * self._block  # position of records[0] in the repeated, shuffled order
    return [self._ids(e, r, (first + j) // self._epoch_len)
            for j, (r, e) in enumerate(zip(records, examples))]


class _Windows(grain.experimental.FlatMapTransform):
  """Id arrays -> next-token pairs {inputs, targets} of at most seq_len ids each."""

  def __init__(self, seq_len):
    self._seq_len = seq_len

  def flat_map(self, block):
    # A poem longer than seq_len + 1 ids is cut into consecutive windows rather than lost;
    # windows share one id so every id after bos is a target exactly once. Later windows
    # start mid-poem (positions restart at 0 there), without bos or labels.
    windows = []
    for ids in block:
      last = len(ids) - 1
      windows += [{'inputs': ids[s:min(s + self._seq_len, last)],
                   'targets': ids[s + 1:min(s + self._seq_len, last) + 1]}
                  for s in range(0, last, self._seq_len)]
    return windows


def _finish(batch):
  return {
      'inputs': batch['inputs'],
      'targets': batch['targets'],
      'segment_ids': batch['inputs_segment_ids'],
      'positions': batch['inputs_positions'],
      'weights': (batch['targets_segment_ids'] > 0).astype(np.float32),
  }


def make_dataset(source, tokenizer, config, *, shard_index=None, shard_count=None):
  """The pipeline as a grain.IterDataset of batches (see make_iterator)."""
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if config.batch_size % shard_count:
    raise ValueError(f'batch_size {config.batch_size} is not divisible by the '
                     f'{shard_count} shards (jax processes).')
  rows = config.batch_size // shard_count
  # Sharding after filtering keeps the shards within one record of each other.
  records = select(source, config.filters)[shard_index::shard_count]
  if not len(records):
    raise ValueError(f'Shard {shard_index} of {shard_count} has no poems.')
  ds = grain.MapDataset.source(records)
  if config.shuffle:
    ds = ds.shuffle(seed=config.seed)  # a different order each epoch
  ds = ds.repeat(config.num_epochs)
  ds = ds.batch(config.read_block)
  ds = ds.map_with_index(_Tokenise(source, tokenizer, config, len(records)))
  # No reader threads: blocks read at local-disk speed, and threads would only contend for
  # the GIL with the rest of the pipeline (use worker_count for parallelism).
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0))
  ds = grain.experimental.FlatMapIterDataset(ds, _Windows(config.seq_len))
  lengths = {'inputs': config.seq_len, 'targets': config.seq_len}
  ds = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct=lengths, num_packing_bins=rows, seed=config.seed,
      shuffle_bins=config.shuffle,
      padding_struct={'inputs': tokenizer.pad_id, 'targets': tokenizer.pad_id})
  # The last batch of a finite run is padded with empty rows (zeros: segment 0, weight 0).
  ds = ds.batch(rows, batch_fn=functools.partial(grain.experimental.batch_and_pad,
                                                 batch_size=rows))
  ds = ds.map(_finish)
  if config.worker_count:
    # Grain's worker processes read absl flags, which only an absl app has parsed.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.worker_count))
  return ds


def make_iterator(source, tokenizer, config, *, shard_index=None, shard_count=None):
  """A checkpointable iterator of batches: dicts of [batch_size // shard_count, seq_len] arrays.

  source: random access (len, [i]) to example dicts (poem.FEATURES), e.g.
    tfds_builder.data_source(...); tokenizer: encode, control_id, pad_id, bos_id, eos_id.
  shard_index, shard_count: default jax.process_index(), jax.process_count(). With
    num_epochs set, shards may yield different numbers of batches (packing differs).
  The iterator's get_state() is JSON-able; save it with grain.checkpoint.CheckpointHandler.
  """
  return iter(make_dataset(source, tokenizer, config, shard_index=shard_index,
                           shard_count=shard_count))
