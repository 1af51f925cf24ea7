"""The training loop: data, steps, evaluation, early stopping, checkpoints, metrics.

    train_and_evaluate(config, workdir)   # config: poetjax/configs.py layout

Relaunching with the same workdir resumes from the latest checkpoint, with the data iterator
where it was, so the run continues exactly as if it had never stopped. SIGTERM (a preempted
TPU VM) saves a checkpoint and returns. A non-finite loss stops the run, keeping the last
good checkpoint.
"""

import itertools
import os
import pathlib
import time

import jax
import numpy as np
import tqdm

from poetjax import checkpoint
from poetjax import metrics as metrics_lib
from poetjax import model as model_lib
from poetjax import peft
from poetjax import sampler
from poetjax import sharding
from poetjax import train
from poetjax import workdir as workdir_lib
from poetjax.data import corpus as corpus_lib
from poetjax.data import pipeline
from poetjax.data import tfds_builder
from poetjax.data import tokenizer as tokenizer_lib


class NonFiniteLossError(RuntimeError):
  pass


def prepare_data(config):
  """Builds (or reuses) the TFDS dataset; returns the train and validation sources."""
  data_dir = pathlib.Path(config.data_dir).expanduser()
  corpus_dir = config.corpus_dir or os.environ.get(corpus_lib.ENV_VAR)
  builder = tfds_builder.build(corpus_dir, data_dir, config.script)
  if jax.process_index() == 0:
    counts = ', '.join(f'{n} {i.num_examples:,}' for n, i in builder.info.splits.items())
    print(f'chinese_poetry/{config.script} in {data_dir}: {counts} poems')
  return (tfds_builder.data_source(data_dir, 'train', config.script),
          tfds_builder.data_source(data_dir, 'validation', config.script))


def eval_pipeline_config(config):
  """Validation reads the poems' text alone, in order, so every evaluation sees the same rows."""
  c = config.copy_and_resolve_references()
  c.control_fields = ()
  c.shuffle = False
  c.worker_count = 0
  return c


class Evaluator:
  """Validation loss, perplexity and bits per Han character over a fixed set of batches."""

  def __init__(self, source, tokenizer, config, vocab_size):
    pipe = eval_pipeline_config(config.data.pipeline)
    self.num_batches = config.loop.eval_batches
    if not self.num_batches:
      if jax.process_count() > 1:
        raise ValueError('loop.eval_batches=0 (the whole split) needs a single process; '
                         'set a batch count so every host evaluates the same number.')
      pipe.num_epochs = 1
    self._make = lambda: pipeline.make_iterator(source, tokenizer, pipe)
    han = metrics_lib.han_per_token(tokenizer)
    self.han_counts = np.pad(han, (0, vocab_size - len(han)))

  def batches(self):
    it = self._make()
    return itertools.islice(it, self.num_batches) if self.num_batches else it

  def __call__(self, trainer):
    sums = [trainer.evaluate(b, self.han_counts) for b in self.batches()]
    nats, tokens, han = (float(sum(s[k] for s in sums)) for k in ('nats', 'tokens', 'han_chars'))
    loss = nats / tokens
    return {'val/loss': loss, 'val/perplexity': float(np.exp(loss)),
            'val/bits_per_char': nats / np.log(2) / han}


def train_and_evaluate(config, workdir):
  """Trains config's model in workdir (resuming there); returns the last metrics."""
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint)
  mesh = sharding.make_mesh(config.mesh)
  meta, base_params = {}, None
  if config.finetune.mode != 'none':
    meta['finetune'], base_params = load_base(config, mesh, ckpt.saved_meta())
  tok = tokenizer_lib.load(config.data.tokenizer)
  mconfig = workdir_lib.model_config(config, tok)
  meta.update(model=config.model.to_dict(), tokenizer=config.data.tokenizer)
  # Fields that change how the arrays are computed, not what they are, may change on resume.
  ckpt.check_compatible(meta, ignore=[f'model.{f}' for f in workdir_lib.RUNTIME_FIELDS])
  train_source, val_source = prepare_data(config.data)
  trainer = train.Trainer(mconfig, config.train, mesh, seed=config.seed,
                          finetune=config.finetune, base_params=base_params)
  del base_params  # the trainer holds them now (the frozen part of its state)
  if is_main and config.finetune.mode != 'none':
    trained, total = peft.count(trainer.model, config.finetune.mode)
    print(f'{trained:,} of the base\'s {total:,} params train ({trained / total:.2%}).')
  pipe = config.data.pipeline
  trainer.check_batch(pipe.batch_size)
  train_iter = pipeline.make_iterator(train_source, tok, pipe)
  evaluator = Evaluator(val_source, tok, config, mconfig.vocab_size)

  step, extra = 0, {}
  if ckpt.latest_step() is not None:
    trainer.state, step, extra = ckpt.restore(trainer.abstract_state, train_iter)
    print(f'Resumed from the checkpoint of step {step} in {workdir}.')
  if is_main:  # after the compatibility check: a refused workdir is left untouched
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2, ensure_ascii=False))
  writer = metrics_lib.Writer(workdir)
  if 'unigram_bits_per_char' not in extra and config.loop.unigram_batches:
    unigram_iter = pipeline.make_iterator(train_source, tok, pipe)
    extra['unigram_bits_per_char'] = metrics_lib.unigram_bits_per_char(
        (next(unigram_iter) for _ in range(config.loop.unigram_batches)),
        evaluator.batches(), evaluator.han_counts)
    writer.write(step, {'val/unigram_bits_per_char': extra['unigram_bits_per_char']})

  flops_per_step = model_lib.flops_per_token(mconfig, pipe.seq_len) * pipe.batch_size * pipe.seq_len
  peak = metrics_lib.device_peak_flops(jax.devices()[0], config.loop.peak_flops)
  total = config.train.steps
  bar = tqdm.tqdm(total=total, initial=step, disable=not is_main, dynamic_ncols=True)
  last = {}
  tick, tick_step = time.perf_counter(), step
  with checkpoint.PreemptionGuard() as guard:
    while step < total:
      out = trainer.step(next(train_iter))
      step += 1
      bar.update(1)
      log_now = step % config.loop.log_every == 0 or step == total
      eval_now = step % config.loop.eval_every == 0 or step == total
      save_now = eval_now or step % config.checkpoint.every_steps == 0
      if log_now or save_now:
        out = {k: float(v) for k, v in jax.device_get(out).items()}
        if not out.pop('finite'):
          ckpt.wait()
          raise NonFiniteLossError(
              f'Non-finite loss or gradient at step {step} (loss {out["loss"]}, grad norm '
              f'{out["grad_norm"]}); stopped without saving it. The last good checkpoint is '
              f'step {ckpt.latest_step()} in {workdir}; lower train.learning_rate or raise '
              'train.warmup_steps, then relaunch.')
      if log_now:
        elapsed = time.perf_counter() - tick
        rate = (step - tick_step) * pipe.batch_size * pipe.seq_len / elapsed
        out['tokens_per_s'] = rate
        if peak:
          out['mfu'] = rate / (pipe.batch_size * pipe.seq_len) * flops_per_step / (
              peak * jax.device_count())
        writer.write(step, out)
        bar.set_postfix(loss=f'{out["loss"]:.3f}', tok_s=f'{rate:,.0f}',
                        mfu=f'{out.get("mfu", float("nan")):.1%}')
        last.update(out)
        tick, tick_step = time.perf_counter(), step
      val = None
      if eval_now:
        val = evaluator(trainer)
        writer.write(step, val)
        last.update(val)
        bar.write(f'step {step}: validation loss {val["val/loss"]:.4f}, '
                  f'{val["val/bits_per_char"]:.3f} bits/char')
        best = extra.get('best_val_loss', float('inf'))
        extra['bad_evals'] = 0 if val['val/loss'] < best else extra.get('bad_evals', 0) + 1
        extra['best_val_loss'] = min(best, val['val/loss'])
      stop_early = bool(config.loop.early_stop_patience) and (
          extra.get('bad_evals', 0) >= config.loop.early_stop_patience)
      preempted = guard.should_stop(step)
      ckpt.save(step, trainer.state, train_iter, extra=extra,
                metrics=val and {'val_loss': val['val/loss']},
                force=save_now or stop_early or preempted or step == total)
      if stop_early:
        bar.write(f'Early stop at step {step}: no validation improvement in '
                  f'{config.loop.early_stop_patience} evaluations.')
        break
      if preempted:
        bar.write(f'Preempted: saved step {step} in {workdir}; relaunch to resume.')
        break
      tick = tick if not eval_now else time.perf_counter()
      tick_step = tick_step if not eval_now else step
  bar.close()
  ckpt.wait()
  ckpt.close()
  writer.close()
  last['unigram_bits_per_char'] = extra.get('unigram_bits_per_char')
  last['step'] = step
  return trainer, last


def load_base(config, mesh, saved_meta=None):
  """(finetune meta, base params) of a fine-tuning run; sets config's model and tokenizer to
  the base's.

  saved_meta: the run's checkpoint meta when resuming: the run then keeps the base step it
  started from, even if the base workdir has newer checkpoints since.
  """
  ft = config.finetune
  peft.check_config(ft)
  saved = (saved_meta or {}).get('finetune')
  if saved and saved.get('base') == str(pathlib.Path(ft.base).expanduser().absolute()):
    base, step = saved['base'], saved['base_step']
  else:
    base, step = workdir_lib.resolve_base(ft)
  params, base_config = workdir_lib.load_params(base, step, mesh)
  config.model = workdir_lib.with_base_model(config.model, base_config.model)
  config.data.tokenizer = base_config.data.tokenizer
  if jax.process_index() == 0:
    print(f'Fine-tuning ({ft.mode}) from {base}, step {step}.')
  meta = {k: ft[k] for k in ('mode', 'targets', 'lora_rank', 'lora_alpha', 'prompt_length')}
  return {**meta, 'base': base, 'base_step': step}, params


def print_samples(trainer, tokenizer, config):
  """A few poems from the trained model, one per prompt in config.sample.prompts."""
  prompts = list(config.sample.prompts)[:config.sample.num_poems]
  poems = sampler.sample(trainer.model, tokenizer, prompts, max_len=config.sample.max_len,
                         temperature=config.sample.temperature, top_k=config.sample.top_k,
                         seed=config.seed)
  for prompt, poem in zip(prompts, poems):
    if jax.process_index() == 0:
      print(f'{prompt or "(no prompt)"}\n  {poem}')
