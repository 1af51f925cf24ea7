"""Models back from training workdirs: a pretrained model, a fine-tuning base, an adapter.

    model, tok, config, step = workdir.load('runs/tiny')            # the latest checkpoint
    model, tok, config, step = workdir.load('runs/tiny', 'best')    # the best by validation
    model, tok, config, step = workdir.load('runs/libai')           # a LoRA run: base + adapter
    model, tok, config, step = workdir.load('runs/tiny', adapter='runs/libai', merge=True)

A workdir's config.json (written by the training run) rebuilds the model; checkpoints restore
onto the current devices whatever mesh wrote them (one device by default). A fine-tuning run's
checkpoints hold only what it trained; its meta.json names the base workdir and step it started
from, and loading it loads that base first.
"""

import dataclasses
import json
import pathlib

from flax import nnx
import jax
import ml_collections

from poetjax import checkpoint
from poetjax import model as model_lib
from poetjax import peft
from poetjax import sharding
from poetjax import train
from poetjax.data import tokenizer as tokenizer_lib

# Model fields that change how the arrays are computed, not what they are.
RUNTIME_FIELDS = ('dtype', 'remat', 'attention_impl', 'dropout')


class AdapterMismatchError(ValueError):
  """An adapter's arrays do not fit the base it is loaded onto."""


def load_config(workdir):
  path = pathlib.Path(workdir) / 'config.json'
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: {workdir} is not a training workdir (launch.py '
                            'writes config.json there when a run starts).')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def model_config(config, tokenizer):
  c = model_lib.ModelConfig(**config.model)
  if c.vocab_size < tokenizer.vocab_size:
    raise ValueError(f'model.vocab_size={c.vocab_size} is smaller than the tokenizer '
                     f'{config.data.tokenizer!r} ({tokenizer.vocab_size} pieces).')
  return c


def runnable_here(mconfig):
  """A model config trained with cuDNN attention, for loading where there is no GPU: XLA's
  attention computes the same function."""
  if mconfig.attention_impl == 'cudnn' and jax.default_backend() != 'gpu':
    return dataclasses.replace(mconfig, attention_impl=None)
  return mconfig


def with_base_model(model, base_model):
  """The base's model fields, but for those that only change how it runs (dtype, remat...)."""
  return ml_collections.ConfigDict({**base_model.to_dict(),
                                    **{k: model[k] for k in RUNTIME_FIELDS if k in model}})


def finetune_mode(config):
  return config.get('finetune', {}).get('mode', 'none')


def choose_step(ckpt, step):
  """'best', 'latest' or a number -> a saved step; FileNotFoundError naming the directory."""
  chosen = ckpt.best_step() if step == 'best' else (
      ckpt.latest_step() if step == 'latest' else int(step))
  if chosen is None or chosen not in ckpt.all_steps():
    what = 'No checkpoint' if chosen is None else f'No checkpoint of step {chosen}'
    raise FileNotFoundError(f'{what} in {ckpt.directory} (steps: {ckpt.all_steps()}): train '
                            'there first (python launch.py --config ... --workdir ...).')
  return chosen


def resolve_base(finetune):
  """(base workdir, step) that finetune.base and base_step name, both checked to exist.

  finetune.base is a training workdir, or one of its checkpoints/<step> directories.
  """
  if not finetune.base:
    raise ValueError(f'finetune.mode={finetune.mode!r} needs a pretrained base: set '
                     '--config.finetune.base to a training workdir.')
  path = pathlib.Path(finetune.base).expanduser().absolute()
  workdir, step = path, finetune.base_step
  if path.parent.name == 'checkpoints' and path.name.isdigit():
    workdir, step = path.parent.parent, int(path.name)
  if not (workdir / 'config.json').is_file():
    raise FileNotFoundError(f'finetune.base: no pretrained base at {workdir} (looked for '
                            f'{workdir / "config.json"} and {workdir / "checkpoints"}); '
                            'set --config.finetune.base to the workdir of a training run.')
  with checkpoint.Checkpointer(workdir, load_config(workdir).checkpoint) as ckpt:
    return str(workdir), choose_step(ckpt, step)


def _on_mesh(abstract_state, mesh):
  shardings = sharding.state_shardings(abstract_state, mesh)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state, shardings)


def _abstract_params(mconfig, mesh):
  """The Params of a plain Transformer as shapes placed on `mesh`, to restore into."""
  with sharding.use(mesh):
    abstract = nnx.state(nnx.eval_shape(lambda: train.create_model(mconfig)), nnx.Param)
  return _on_mesh(abstract, mesh)


def load_params(workdir, step, mesh):
  """(params, config): the model Params of a pretraining run's step, on `mesh`.

  Only the params are read, not the optimizer moments (a third of the bytes).
  """
  config = load_config(workdir)
  if finetune_mode(config) not in ('none', 'full'):
    raise ValueError(f'{workdir} is a {finetune_mode(config)} fine-tuning run, which holds '
                     'adapters only: use its base, or load it with workdir.load.')
  mconfig = model_config(config, tokenizer_lib.load(config.data.tokenizer))
  with checkpoint.Checkpointer(pathlib.Path(workdir), config.checkpoint) as ckpt:
    return ckpt.restore_params(_abstract_params(mconfig, mesh), choose_step(ckpt, step)), config


def build(mconfig, mesh, params, finetune=None):
  """A Transformer on `mesh` holding `params`, with finetune's adapters (at init) added."""
  with sharding.use(mesh):
    graphdef, abstract = nnx.split(nnx.eval_shape(
        lambda: train.create_model(mconfig, finetune, params)))
    shardings = sharding.state_shardings(abstract, mesh)
    state = jax.jit(lambda p: nnx.state(train.create_model(mconfig, finetune, p)),
                    out_shardings=shardings)(params)
  return nnx.merge(graphdef, state)


def check_adapter_fits(ckpt, step, expected, adapter_dir, base_dir):
  """AdapterMismatchError naming both shapes when the saved adapter is not `expected`'s."""
  saved = ckpt.saved_shapes(step)
  want = {'0.' + '.'.join(map(str, path)): tuple(v.shape)
          for path, v in nnx.to_flat_state(expected)}
  differ = [f'{k[2:]}: the adapter has {list(saved[k])}, this base needs {list(shape)}'
            for k, shape in want.items() if k in saved and tuple(saved[k]) != shape]
  missing = [k[2:] for k in want if k not in saved]
  if differ or missing:
    lines = differ[:5] + [f'{k}: not in the adapter' for k in missing[:5]]
    raise AdapterMismatchError(
        f'The adapter in {adapter_dir} does not fit the base in {base_dir}:\n  ' +
        '\n  '.join(lines) + '\nLoad it onto the base it was trained from (its config.json '
        'names it under finetune.base).')


def load(workdir, step='latest', mesh=None, *, adapter=None, merge=False):
  """(model, tokenizer, config, step) from a workdir's checkpoint ('latest', 'best' or a step).

  A fine-tuning workdir (LoRA, BitFit, prompt) loads its base, then its adapter. adapter: a
  fine-tuning workdir to put on the model of `workdir` instead of on its own base; `step`
  then picks the adapter's step. merge: fold LoRA into the base kernels (faster sampling).
  Returns the config and step of the adapter run when there is one.
  """
  mesh = mesh or sharding.make_mesh(sharding.default_config(), jax.devices()[:1])
  config = load_config(adapter or workdir)
  mode = finetune_mode(config)
  tok = tokenizer_lib.load(config.data.tokenizer)
  ckpt = checkpoint.Checkpointer(pathlib.Path(adapter or workdir), config.checkpoint)
  with ckpt:
    chosen = choose_step(ckpt, step)
    if mode in ('none', 'full'):
      if adapter:
        raise ValueError(f'{adapter} is a {mode} training run, not an adapter; load it as '
                         '--workdir.')
      base_dir, params = workdir, None
    else:
      base = ckpt.saved_meta().get('finetune', {})
      base_dir, base_step = (workdir, 'latest') if adapter else (base['base'], base['base_step'])
      params, base_config = load_params(base_dir, base_step, mesh)
      config.model = with_base_model(config.model, base_config.model)
    mconfig = runnable_here(model_config(config, tok))
    if params is None:
      params = ckpt.restore_params(_abstract_params(mconfig, mesh), chosen)
      net = build(mconfig, mesh, params)
    else:
      net = build(mconfig, mesh, params, config.finetune)
      expected = _on_mesh(nnx.state(net, peft.trainable(mode)), mesh)
      check_adapter_fits(ckpt, chosen, expected, adapter or workdir, base_dir)
      nnx.update(net, ckpt.restore_params(expected, chosen))
  return (peft.merge(net) if merge else net), tok, config, chosen
