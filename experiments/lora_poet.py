"""LoRA adaptation of a pretrained model to one poet (the argument: author=NAME or NAME).

    python launch.py --config experiments/lora_poet.py:author=李白 --workdir runs/libai
    python -m poetjax.sample --workdir runs/libai --form 七绝 --author 李白 --num 4

The base is runs/tiny (the README's main job; another: --config.finetune.base=DIR); the model
and tokenizer come from it. Only the adapters train (r=8 beside q, kv and o of every block)
and only they are saved, so one base can hold an adapter per poet, each used with
`python -m poetjax.sample --workdir runs/tiny --adapter runs/libai`. The same data with another
method: --config.finetune.mode=full|bitfit|prompt.
Hardware: 2 CPU cores. Measured (300 steps of 16 x 128 tokens on the tiny base, about 3 minutes
with the evaluations): see the comparison table in the README, made by
`python -m poetjax.bench.finetune`.
"""

from poetjax import configs


def get_config(arg=None):
  field, _, value = (arg or 'author=李白').rpartition('=')
  c = configs.finetune({field or 'author': value}, mode='lora')
  c.finetune.lora_rank = 8
  c.finetune.lora_alpha = 16.0
  return c
