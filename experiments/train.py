"""Image classification training loop, in the layout of the Flax examples.

`train_and_evaluate(config, workdir)` trains a model of `experiments.models` on
a dataset of `experiments.input_pipeline` with any optimizer of
`experiments.optimizers`, data-parallel over every device (the batch is split
over a 'data' mesh axis, the parameters replicated), writes one JSON line of
metrics per epoch to ``workdir/metrics.jsonl`` and an Orbax checkpoint per
epoch, and resumes from the latest checkpoint when one exists.

Every optimizer is given the minibatch loss as ``value`` and its re-evaluation
as ``value_fn`` (with the BatchNorm statistics frozen), so AdaLoss and ACME run
through the same step as the others.
"""

import dataclasses
import functools
import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import flax
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import input_pipeline
from experiments import models
from experiments import optimizers


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run depends on; saved beside its metrics."""
  dataset: str = 'digits'
  split_train: str = 'train'
  split_eval: str = 'test'
  model: str = 'resnet8'
  model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  optimizer: str = 'adamw'
  learning_rate: float = 1e-3
  optimizer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  schedule: str = 'constant'  # or 'cosine', over the whole run
  batch_size: int = 64
  num_epochs: int = 3
  max_steps_per_epoch: int | None = None  # for quick runs and tests
  loss_multiplier: float = 1.0
  label_smoothing: float = 0.0
  cutout: int = 0
  image_size: int = 32
  seed: int = 0
  data_dir: str | None = None


@flax.struct.dataclass
class TrainState:
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array


def _steps_per_epoch(config: Config) -> int:
  full = len(input_pipeline.create_split(
      config.dataset, config.split_train, batch_size=config.batch_size,
      train=True, data_dir=config.data_dir, image_size=config.image_size))
  return min(full, config.max_steps_per_epoch or full)


def create_train_state(config: Config, steps_per_epoch: int):
  """The model's graph, its initial state and the optimizer."""
  info = input_pipeline.dataset_info(config.dataset)
  model = models.create_model(config.model, num_classes=info.num_classes,
                              rngs=nnx.Rngs(config.seed), **config.model_kwargs)
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, ...)
  tx = optimizers.create(config.optimizer, config.learning_rate,
                         schedule=config.schedule,
                         total_steps=steps_per_epoch * config.num_epochs,
                         **config.optimizer_kwargs)
  state = TrainState(params=params, batch_stats=batch_stats,
                     opt_state=tx.init(params), step=jnp.zeros([], jnp.int32))
  return graphdef, state, tx


def _loss_and_metrics(graphdef, params, batch_stats, batch, *, train: bool,
                      loss_multiplier: float = 1.0, label_smoothing: float = 0.0):
  model = nnx.merge(graphdef, params, batch_stats, copy=True)
  model.train() if train else model.eval()
  logits = model(batch['image'])
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], num_classes),
                                label_smoothing)
  losses = optax.softmax_cross_entropy(logits, targets)
  mask = batch['mask'].astype(losses.dtype)
  count = jnp.maximum(mask.sum(), 1.0)
  loss = loss_multiplier * jnp.sum(losses * mask) / count
  correct = jnp.sum((logits.argmax(-1) == batch['label']) * mask)
  new_stats = nnx.state(model, nnx.BatchStat)
  return loss, (new_stats, {'loss': loss / loss_multiplier,
                            'correct': correct, 'count': mask.sum()})


def train_step(graphdef, tx, config: Config, state: TrainState, batch):
  """One optimizer step; `value_fn` re-evaluates with statistics frozen."""
  loss_fn = functools.partial(
      _loss_and_metrics, graphdef, train=True,
      loss_multiplier=config.loss_multiplier,
      label_smoothing=config.label_smoothing)
  (loss, (batch_stats, metrics)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params, state.batch_stats, batch)

  def value_fn(params):
    return loss_fn(params, state.batch_stats, batch)[0]

  updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                 value=loss, value_fn=value_fn)
  new_state = TrainState(params=optax.apply_updates(state.params, updates),
                         batch_stats=batch_stats, opt_state=opt_state,
                         step=state.step + 1)
  return new_state, metrics


def eval_step(graphdef, state: TrainState, batch):
  _, (_, metrics) = _loss_and_metrics(graphdef, state.params, state.batch_stats,
                                      batch, train=False)
  return {'loss_sum': metrics['loss'] * metrics['count'],
          'correct': metrics['correct'], 'count': metrics['count']}


def _to_global(batch, sharding):
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def _effective_step_size(opt_state) -> dict[str, float]:
  """The adaptive quantity a method exposes, for logging."""
  out = {}
  for name in ('learning_rate', 'scale', 'decay'):
    found = optax.tree.get_all_with_path(opt_state, name)
    if found and jnp.ndim(found[0][1]) == 0:
      out[name] = float(found[0][1])
  return out


def train_and_evaluate(config: Config, workdir: str) -> list[dict[str, Any]]:
  """Trains and evaluates; returns the metrics records written per epoch."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'config.json').write_text(
      json.dumps(dataclasses.asdict(config), indent=2))
  steps_per_epoch = _steps_per_epoch(config)
  graphdef, state, tx = create_train_state(config, steps_per_epoch)

  mesh = jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P('data'))
  state = jax.device_put(state, replicated)
  step_fn = jax.jit(functools.partial(train_step, graphdef, tx, config),
                    donate_argnums=0)
  eval_fn = jax.jit(functools.partial(eval_step, graphdef))

  checkpoints = ocp.CheckpointManager(
      (workdir / 'checkpoints').absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=2))
  first_epoch, history = 0, []
  if checkpoints.latest_step() is not None:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    state = jax.device_put(checkpoints.restore(
        checkpoints.latest_step(), args=ocp.args.StandardRestore(abstract)),
                           replicated)
    first_epoch = int(state.step) // steps_per_epoch
    history = _read_history(workdir, first_epoch)

  for epoch in range(first_epoch, config.num_epochs):
    started = time.perf_counter()
    train = input_pipeline.create_split(
        config.dataset, config.split_train, batch_size=config.batch_size,
        train=True, seed=config.seed, epoch=epoch, data_dir=config.data_dir,
        image_size=config.image_size, cutout=config.cutout)
    totals = {'loss': 0.0, 'correct': 0.0, 'count': 0.0}
    for index, batch in enumerate(input_pipeline.batches(train)):
      if index == steps_per_epoch:
        break
      state, metrics = step_fn(state, _to_global(batch, batch_sharding))
      totals['loss'] += metrics['loss'] * metrics['count']
      totals['correct'] += metrics['correct']
      totals['count'] += metrics['count']
    evaluation = _evaluate(eval_fn, state, config, batch_sharding)
    record = {
        'epoch': epoch + 1, 'step': int(state.step),
        'train_loss': float(totals['loss'] / totals['count']),
        'train_accuracy': float(totals['correct'] / totals['count']),
        **{f'eval_{k}': v for k, v in evaluation.items()},
        **_effective_step_size(state.opt_state),
        'epoch_seconds': time.perf_counter() - started,
    }
    history.append(record)
    with (workdir / 'metrics.jsonl').open('a') as f:
      f.write(json.dumps(record) + '\n')
    checkpoints.save(int(state.step), args=ocp.args.StandardSave(state))
  checkpoints.wait_until_finished()
  return history


def _evaluate(eval_fn, state, config, batch_sharding) -> dict[str, float]:
  dataset = input_pipeline.create_split(
      config.dataset, config.split_eval, batch_size=config.batch_size,
      train=False, data_dir=config.data_dir, image_size=config.image_size)
  loss_sum = correct = count = 0.0
  for batch in input_pipeline.batches(dataset):
    metrics = eval_fn(state, _to_global(batch, batch_sharding))
    loss_sum += metrics['loss_sum']
    correct += metrics['correct']
    count += metrics['count']
  return {'loss': float(loss_sum / count), 'accuracy': float(correct / count)}


def _read_history(workdir: pathlib.Path, epochs: int) -> list[dict[str, Any]]:
  """The records of the epochs a checkpoint covers; later ones are dropped."""
  path = workdir / 'metrics.jsonl'
  records = [json.loads(line) for line in path.read_text().splitlines()] if (
      path.exists()) else []
  kept = [r for r in records if r['epoch'] <= epochs]
  path.write_text(''.join(json.dumps(r) + '\n' for r in kept))
  return kept
