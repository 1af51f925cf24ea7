"""Training metrics: bits per Han character, FLOP peaks and MFU, and the JSONL/TensorBoard writer.

Bits per character divide a loss by the Han characters of the targets, not by the tokens, so
a character and a subword tokenizer are compared on the same text. A token's characters come
from its piece: a Han piece counts its characters, a UTF-8 lead byte of a byte-fallback
character counts one, control and special pieces count none.
"""

import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from poetjax.data import clean

# Dense bf16 peak FLOP/s per chip (vendor figures); MFU divides achieved FLOP/s by these.
PEAK_FLOPS = {
    'TPU v4': 275e12,
    'TPU v5 lite': 197e12,  # v5e
    'TPU v5e': 197e12,
    'TPU v5p': 459e12,
    'TPU v5': 459e12,
    'TPU v6 lite': 918e12,  # v6e (Trillium)
    'TPU v6e': 918e12,
    'A100': 312e12,
    'H100': 989e12,
    'H200': 989e12,
}


def han_per_token(tokenizer):
  """float32 [vocab]: the Han characters each token id stands for."""
  sp = tokenizer.sp
  counts = np.zeros(tokenizer.vocab_size, np.float32)
  for i in range(tokenizer.vocab_size):
    if sp.is_control(i) or sp.is_unknown(i):
      continue
    piece = sp.id_to_piece(i)
    if sp.is_byte(i):  # '<0xE4>': the lead byte of a 3- or 4-byte UTF-8 character
      counts[i] = int(int(piece[3:5], 16) >= 0xE0)
    elif not piece.startswith('<'):
      counts[i] = clean.count_han(piece)
  return counts


def unigram_bits_per_char(train_batches, eval_batches, han_counts):
  """Bits per Han character of a unigram model (add-one smoothed counts of the train batches).

  The baseline a trained model must beat: it knows every character's frequency and nothing else.
  """
  counts = np.ones(len(han_counts), np.float64)
  for batch in train_batches:
    np.add.at(counts, batch['targets'][batch['weights'] > 0], 1)
  logp = np.log2(counts / counts.sum())
  bits = chars = 0.0
  for batch in eval_batches:
    targets = batch['targets'][batch['weights'] > 0]
    bits -= logp[targets].sum()
    chars += han_counts[targets].sum()
  return bits / chars


def device_peak_flops(device, override=None):
  """Peak FLOP/s of one device: the override, a known accelerator, or a measured CPU matmul."""
  if override:
    return float(override)
  kind = device.device_kind
  for name, flops in PEAK_FLOPS.items():
    if name.lower() in kind.lower():
      return flops
  if device.platform == 'cpu':
    return measure_matmul_flops(device)
  return None


def call_seconds(fn, repeats):
  """Wall seconds of each of `repeats` calls of fn(), its result waited for, after a warm-up."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def measure_matmul_flops(device=None, n=1024, repeats=10):
  """FLOP/s of a jitted float32 n x n matmul on `device`: the practical peak of a CPU.

  The fastest of `repeats`, not the median: other work on a shared machine only slows a
  repeat down, and a peak measured low made MFU read above 100%.
  """
  device = device or jax.devices()[0]
  a = jax.device_put(jnp.ones((n, n), jnp.float32), device)
  matmul = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / min(call_seconds(lambda: matmul(a), repeats))


class Writer:
  """Scalars to workdir/metrics.jsonl and TensorBoard event files in workdir/tensorboard.

  Only process 0 writes, so a multi-host run logs once.
  """

  def __init__(self, workdir):
    self._on = jax.process_index() == 0
    if not self._on:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    workdir = pathlib.Path(workdir)
    self._jsonl = (workdir / 'metrics.jsonl').open('a', encoding='utf-8')
    self._tb = SummaryWriter(str(workdir / 'tensorboard'))

  def write(self, step, scalars):
    if not self._on:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': int(step), **{
        k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()}}) + '\n')
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, int(step))
    self._tb.flush()

  def close(self):
    if self._on:
      self._jsonl.close()
      self._tb.close()
