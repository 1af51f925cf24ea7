"""Large model (354M params) on a multi-host TPU slice: v5e-32 (8 hosts x 4 chips), FSDP x data.

    gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all --command \
      "cd poetjax && .venv/bin/python launch.py --config experiments/large_tpu_multihost.py \
       --workdir /mnt/runs/large"
    python -m poetjax.aot --config experiments/large_tpu_multihost.py --topology v5e:4x8

Every worker runs the same command; launch.py calls jax.distributed.initialize() on a
multi-host slice, each host reads its own shard of the data (the dataset is built on every worker from
its copy of the corpus, about a minute), and the global batch is assembled from the hosts'
rows. The workdir must be one directory shared by all hosts: a Cloud Storage bucket mounted
with gcsfuse at the same path on every worker (see the README's TPU guide). A preempted slice
saves on SIGTERM; recreate it and rerun the command to resume.
Hardware: v5litepod-32 (32 x v5e, 16 GiB HBM each). bfloat16 compute; float32 params and
AdamW state sharded 8 ways over fsdp, batch over data (4) x fsdp (8).
Projected, not measured: ~40% MFU. Measured here (2 CPU cores): the AOT command above compiles
the step for this 8-host topology in about 5 minutes; it needs 1.48 GiB of 16 GiB HBM per chip.
"""

from poetjax import configs


def get_config(arg=None):
  del arg
  c = configs.base('large')
  c.model.dtype = 'bfloat16'
  c.model.remat = True
  c.mesh.data = -1
  c.mesh.fsdp = 8
  c.data.pipeline.seq_len = 256
  c.data.pipeline.batch_size = 512
  c.data.pipeline.worker_count = 4
  c.train.steps = 30_000
  c.train.learning_rate = 6e-4
  c.train.warmup_steps = 2000
  c.loop.log_every = 100
  c.loop.eval_every = 2000
  c.loop.eval_batches = 64
  c.checkpoint.every_steps = 1000
  return c
