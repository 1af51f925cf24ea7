"""Tiny CPU experiment, the README's main job: a 2.6M-param model trained for a few minutes.

    python launch.py --config experiments/tiny_cpu.py --workdir runs/tiny

Hardware: 2 CPU cores. Measured on a fresh clone, 2 shared cores: 5 min 3 s for the whole
command: building the dataset (once; reused afterwards), 600 steps of 16 x 128 tokens (1.2M
tokens, 3,700 to 5,500 tokens/s), two evaluations and the samples. Validation: 10.35 bits per
Han character, against 11.83 for the unigram baseline the run computes (11.58 with unigram
counts over the whole train split). Then, from this workdir, `python -m poetjax.sample
--workdir runs/tiny --form 七绝 --num 200 --report` measured format, rhyme and 2-4-6 at 100%.
"""

from poetjax import configs


def get_config(arg=None):
  del arg
  c = configs.base('small')
  c.model.d_model = 128
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.num_kv_heads = 4
  c.model.head_dim = 32
  c.model.mlp_dim = 384
  c.data.pipeline.seq_len = 128
  c.data.pipeline.batch_size = 16
  c.train.steps = 600
  c.train.learning_rate = 3e-3
  c.train.warmup_steps = 50
  c.loop.log_every = 20
  c.loop.eval_every = 300
  c.loop.eval_batches = 20
  c.checkpoint.every_steps = 300
  return c
