"""Tiny CPU experiment: the README's main job.

    python launch.py --config experiments/tiny_cpu.py --workdir runs/tiny

Hardware: a laptop or 2 CPU cores. Measured here (2 cores): building the chinese_poetry dataset
from the corpus takes about 1 minute once (reused afterwards); the data stage then reports the
splits and the pipeline's throughput. Training arrives with the model and training-loop work;
until then this config carries the data settings every experiment starts from.
"""

from poetjax.data import pipeline


def get_config(arg=None):
  del arg  # no variants yet
  from ml_collections import config_dict
  c = config_dict.ConfigDict()
  c.data = config_dict.ConfigDict()
  c.data.corpus_dir = config_dict.placeholder(str)  # None: $CHINESE_POETRY_DIR
  c.data.data_dir = '~/tensorflow_datasets'         # where the ArrayRecord splits are written
  c.data.script = 'simplified'
  c.data.tokenizer = 'char'                          # tokenizer/char.model
  c.data.pipeline = pipeline.default_config()
  c.data.pipeline.seq_len = 128
  c.data.pipeline.batch_size = 16
  c.data.check_batches = 50                          # batches pulled by the data stage
  return c
