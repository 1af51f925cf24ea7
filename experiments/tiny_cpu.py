"""Tiny CPU experiment, the README's main job: a 6M-param model trained for a few minutes.

    python launch.py --config experiments/tiny_cpu.py --workdir runs/tiny

Hardware: 2 CPU cores (a laptop does it faster). Measured here: see the README's quick start
for the time and the validation bits per Han character against the unigram baseline.
"""

from poetjax import configs


def get_config(arg=None):
  del arg
  c = configs.base('small')
  c.model.d_model = 192
  c.model.num_layers = 4
  c.model.num_heads = 6
  c.model.num_kv_heads = 6
  c.model.head_dim = 32
  c.model.mlp_dim = 512
  c.data.pipeline.seq_len = 128
  c.data.pipeline.batch_size = 16
  c.train.steps = 800
  c.train.learning_rate = 3e-3
  c.train.warmup_steps = 50
  c.loop.log_every = 20
  c.loop.eval_every = 400
  c.loop.eval_batches = 20
  c.checkpoint.every_steps = 400
  return c
