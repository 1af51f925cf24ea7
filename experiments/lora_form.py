"""LoRA adaptation of a pretrained model to one form (the argument, default 七言律诗).

    python launch.py --config experiments/lora_form.py:七言律诗 --workdir runs/qilv
    python -m poetjax.sample --workdir runs/qilv --form 七律 --num 4

Forms: 五言绝句 七言绝句 五言律诗 七言律诗 五言排律 七言排律 古体. The base is runs/tiny
(another: --config.finetune.base=DIR). Hardware: 2 CPU cores, about 3 minutes on the tiny base.
"""

from poetjax import configs


def get_config(arg=None):
  form = arg or '七言律诗'
  c = configs.finetune({'form': form}, mode='lora')
  c.sample.prompts = (f'<form:{form}>', f'<dynasty:唐><form:{form}>')
  return c
