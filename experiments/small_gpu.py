"""Small model (19M params) on one CUDA GPU, bfloat16 with cuDNN flash attention.

    python launch.py --config experiments/small_gpu.py --workdir runs/small
    python launch.py --config experiments/small_gpu.py:base --workdir runs/base   # 95M params

Hardware: one NVIDIA GPU (A100/H100/H200; 16 GB is enough for `small`, 40 GB for `base`);
install jax[cuda13] as the README says. Batch 128 x 256 tokens (32,768 tokens/step),
10,000 steps: 328M tokens, about 15 passes over the corpus.
Projected, not measured (no GPU was available when this was written): tens of thousands of
steps per hour on an H100 for `small`; MFU is printed in the progress bar and written to
metrics.jsonl, so the first minute of a run tells the real figure.
"""

from poetjax import configs


def get_config(arg='small'):
  preset = arg or 'small'
  c = configs.base(preset)
  c.model.dtype = 'bfloat16'
  c.model.attention_impl = 'cudnn'
  c.data.pipeline.seq_len = 256
  c.data.pipeline.batch_size = 128
  c.data.pipeline.worker_count = 2
  c.train.steps = 10_000
  c.train.learning_rate = 2e-3 if preset == 'small' else 1e-3
  c.train.warmup_steps = 500
  c.loop.log_every = 50
  c.loop.eval_every = 1000
  c.loop.eval_batches = 0
  c.loop.early_stop_patience = 3
  c.checkpoint.every_steps = 1000
  return c
