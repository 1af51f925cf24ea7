"""The full experiment config with every field at its default; experiment files start from it.

    def get_config(arg=None):
      c = configs.base('small')    # model preset
      c.train.steps = 20_000
      return c

Every field exists here, so a typo on the command line (`--config.train.step=5`) is an error
naming the close match instead of a silently ignored setting.
"""

import dataclasses

from ml_collections import config_dict

from poetjax import checkpoint
from poetjax import model
from poetjax import peft
from poetjax import sharding
from poetjax import train
from poetjax.data import pipeline


def model_config(preset):
  """A ConfigDict of ModelConfig fields from a preset, so each can be overridden by flag."""
  fields = dataclasses.asdict(model.config_for(preset))
  c = config_dict.ConfigDict(fields)
  return c


def base(preset='small'):
  c = config_dict.ConfigDict()
  c.seed = 0
  # 'auto': jax.distributed.initialize() on a TPU VM or when JAX_COORDINATOR_ADDRESS is set.
  c.distributed = 'auto'

  c.data = config_dict.ConfigDict()
  c.data.corpus_dir = config_dict.placeholder(str)  # None: $CHINESE_POETRY_DIR
  c.data.data_dir = '~/tensorflow_datasets'         # where the ArrayRecord splits are written
  c.data.script = 'simplified'
  c.data.tokenizer = 'char'                          # tokenizer/char.model, or a .model path
  c.data.pipeline = pipeline.default_config()        # train: filters, controls, packing, batch

  c.model = model_config(preset)
  c.mesh = sharding.default_config()
  c.train = train.default_config()
  c.finetune = peft.default_config()  # mode 'none': pretraining from scratch
  c.checkpoint = checkpoint.default_config()

  c.loop = config_dict.ConfigDict()
  c.loop.log_every = 20
  c.loop.eval_every = 200
  c.loop.eval_batches = 50  # validation batches per evaluation (0 = the whole split)
  c.loop.early_stop_patience = 0  # evaluations without improvement before stopping; 0 = off
  c.loop.peak_flops = config_dict.placeholder(float)  # per device; None: known chip or measured
  c.loop.unigram_batches = 50  # train batches counted for the unigram baseline; 0 = skip it

  c.sample = config_dict.ConfigDict()
  c.sample.num_poems = 4
  c.sample.max_len = 64
  c.sample.temperature = 0.8
  c.sample.top_k = 40
  c.sample.prompts = ('<form:五言绝句>', '<form:七言绝句>', '<dynasty:宋><tune:浣溪沙>', '')
  return c


def finetune(filters, mode='lora', base_workdir='runs/tiny'):
  """A fine-tuning run on the poems matching `filters`, from a pretraining workdir.

  The model and tokenizer come from the base (the model fields here are replaced by its own).
  """
  c = base()
  c.finetune.mode = mode
  c.finetune.base = base_workdir
  for field, value in filters.items():
    c.data.pipeline.filters[field] = value
  c.data.pipeline.seq_len = 128
  c.data.pipeline.batch_size = 16
  c.train.steps = 300
  c.train.learning_rate = 3e-3
  c.train.warmup_steps = 20
  c.train.weight_decay = 0.0
  c.loop.log_every = 20
  c.loop.eval_every = 100
  c.loop.eval_batches = 10
  c.loop.unigram_batches = 0
  c.checkpoint.every_steps = 100
  controls = ''.join(f'<{k}:{v}>' for k, v in filters.items() if k in ('dynasty', 'author'))
  c.sample.prompts = (controls + '<form:七言绝句>', controls + '<form:五言律诗>')
  c.sample.num_poems = 2
  return c
