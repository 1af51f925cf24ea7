"""The model a 2-core CPU trains in 1.5 hours: 8.3M params, 2,500 steps of 32 x 128 tokens.

    python launch.py --config experiments/small_cpu.py --workdir runs/small_cpu
    python -m poetjax.evaluate --workdir runs/small_cpu

Hardware: 2 CPU cores. Sized for the compute, not the `small` preset: d_model 256 and 6 layers
with the char tokenizer's 13,568-entry tied embedding (a third of the FLOPs is the output head),
10.2M tokens, 0.45 of a pass over the train split.
Measured on 2 shared cores: 1 h 35 min for steps 100 to 2,500 (1,800 to 2,000 tokens/s; the
first 100 steps came from an identical run's checkpoint). Validation 8.49 bits per Han character
(9.83 at step 500, 9.19 at 1,000, 8.84 at 1,500, 8.61 at 2,000; unigram 11.72). The evaluation
(6 min 52 s): test split 8.51 bits per Han character against 8.88 for the Kneser-Ney 5-gram;
constrained poems 100% format and rhyme; the rest in the README's evaluation section.
"""

from poetjax import configs


def get_config(arg=None):
  del arg
  c = configs.base('small')
  c.model.d_model = 256
  c.model.num_layers = 6
  c.model.num_heads = 4
  c.model.num_kv_heads = 4
  c.model.head_dim = 64
  c.model.mlp_dim = 704
  c.data.pipeline.seq_len = 128
  c.data.pipeline.batch_size = 32
  c.train.steps = 2500
  c.train.learning_rate = 3e-3
  c.train.warmup_steps = 150
  c.loop.log_every = 50
  c.loop.eval_every = 500
  c.loop.eval_batches = 50
  c.checkpoint.every_steps = 500
  return c
