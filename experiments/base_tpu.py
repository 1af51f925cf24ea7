"""Base model (95M params) on one TPU VM host: v5e-8 (or v4-8), FSDP over 4 chips x data over 2.

    python launch.py --config experiments/base_tpu.py --workdir runs/base
    python -m poetjax.aot --config experiments/base_tpu.py --topology v5e:2x4   # compile on a CPU

Hardware: one Cloud TPU VM, v5litepod-8 (8 x v5e, 16 GiB HBM each) or v4-8 (4 chips: pass
--config.mesh.fsdp=2). bfloat16 compute, float32 params and AdamW state sharded 4 ways.
Batch 256 x 256 tokens (65,536 tokens/step), 3,000 steps: 197M tokens, about 9 passes over the
corpus (~22M tokens); early stopping ends it when validation stops improving.
Projected, not measured (no TPU here): at 40% MFU on v5e-8 (197 TFLOP/s per chip) a step
of 65,536 tokens x 0.60 GFLOP/token takes about 0.06 s, so 3,000 steps take about 3 minutes.
Measured here (2 CPU cores): the ahead-of-time compile above takes about 3 minutes and needs
4.16 GiB of the 16 GiB HBM per chip (train state 0.27 GiB; 4.95 TFLOP per chip per step).
"""

from poetjax import configs


def get_config(arg=None):
  del arg
  c = configs.base('base')
  c.model.dtype = 'bfloat16'
  c.model.remat = False
  c.mesh.data = -1
  c.mesh.fsdp = 4
  c.data.pipeline.seq_len = 256
  c.data.pipeline.batch_size = 256
  c.data.pipeline.worker_count = 4
  c.train.steps = 3_000
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 200
  c.loop.log_every = 100
  c.loop.eval_every = 250
  c.loop.early_stop_patience = 3
  c.loop.eval_batches = 0
  c.checkpoint.every_steps = 250
  return c
