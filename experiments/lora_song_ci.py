"""LoRA adaptation of a pretrained model to Song ci (宋词), to write 词 to a tune.

    python launch.py --config experiments/lora_song_ci.py --workdir runs/song_ci
    python -m poetjax.sample --workdir runs/song_ci --tune 浣溪沙 --dynasty 宋 --num 4

The base is runs/tiny (another: --config.finetune.base=DIR). Trains r=8 adapters on the 词 of
the Song dynasty only; validation bits per character are measured on the same subset.
Hardware: 2 CPU cores, about 3 minutes on the tiny base. Measured: see the comparison table in
the README (`python -m poetjax.bench.finetune --filters dynasty=宋,genre=词`).
"""

from poetjax import configs


def get_config(arg=None):
  del arg
  c = configs.finetune({'dynasty': '宋', 'genre': '词'}, mode='lora')
  c.sample.prompts = ('<dynasty:宋><form:词><tune:浣溪沙>', '<dynasty:宋><form:词><tune:蝶恋花>')
  return c
