"""Image classification training loop, in the layout of the Flax examples.

:func:`train_and_evaluate` trains a model of ``experiments.models`` on a
dataset of ``experiments.input_pipeline`` with an optimizer of
``experiments.optimizers``, data-parallel over every device: a ``Mesh`` over
``jax.devices()`` with one ``'data'`` axis, the batch split along it, the
parameters and optimizer state replicated (one device works the same way).
Launched on several hosts, call ``jax.distributed.initialize()`` first
(``python -m experiments --distributed ...`` does): each host then reads its own
share of every global batch.

Every optimizer gets the minibatch loss as ``value`` and its re-evaluation as
``value_fn`` (on the same batch, same dropout mask, BatchNorm statistics left as
they were), so AdaLoss and ACME run through the same step as the others.

A run writes into its working directory, the first four through
:class:`experiments.run_directory.RunDirectory` (as ``experiments.train_lm``
does):

* ``config.json``: the :class:`~experiments.configs.default.Config`;
* ``metrics.jsonl``: one JSON record per evaluation (epoch, step, training
  loss and accuracy since the last record, each evaluated split's loss and
  accuracy, the learning rate and what the optimizer adapts);
* ``tensorboard/``: the same scalars for TensorBoard;
* ``checkpoints/``: Orbax checkpoints of the parameters, BatchNorm statistics,
  RNG streams, optimizer state, and the position in the data (epoch, batch),
  at every evaluation; ``resume=True`` continues from the latest complete one;
* ``stats/step_*.npz`` with ``store_stats``: every layer's parameters,
  gradients and updates, for the scale-free paper's magnitude histograms.
"""

import dataclasses
import difflib
import functools
import json
import logging
import math
import pathlib
import sys
import time
from typing import Any

import flax
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import tqdm

from experiments import (
    input_pipeline,
    memory_check,
    models,
    optimizers,
    reporting,
    run_directory,
)
from experiments.configs import default as default_config
from experiments.configs.default import Config

_LOG = logging.getLogger(__name__)
_METRIC_KEYS = ('loss_sum', 'correct', 'count')


@flax.struct.dataclass
class TrainState:
  """What a training step reads and writes.

  Attributes:
    step: number of optimizer steps taken.
    params: the model's ``nnx.Param`` variables.
    model_state: its other variables: BatchNorm statistics, RNG streams.
    opt_state: the optimizer's state.
  """

  step: jax.Array
  params: nnx.State
  model_state: nnx.State
  opt_state: optax.OptState


def _unknown(kind: str, name: str, known) -> ValueError:
  close = difflib.get_close_matches(name, known, n=1)
  hint = f' (did you mean {close[0]!r}?)' if close else ''
  return ValueError(
      f'Unknown {kind} {name!r}{hint}; choose one of {", ".join(known)}.'
  )


def check_config(config: Config) -> None:
  """Refuses an unknown model, optimizer or dataset, or a hyperparameter out
  of range, before any work is done.

  Raises:
    ValueError: naming the unknown name, the closest known one and the
      choices; or the hyperparameter and its range.
  """
  if config.pretrained:
    from experiments import pretrained  # pylint: disable=g-import-not-at-top

    known = pretrained.ARCHITECTURES
  else:
    known = models.MODELS
  if config.model not in known:
    raise _unknown('model', config.model, sorted(known))
  if config.optimizer not in optimizers.METHODS:
    raise _unknown('optimizer', config.optimizer, list(optimizers.METHODS))
  input_pipeline.dataset_info(config.dataset)
  # Built once here, as cheap as it is, so that a hyperparameter out of range
  # is refused before the model and the data are.
  create_optimizer(config, num_steps_per_epoch=1)


def create_model(config: Config) -> nnx.Module:
  """The model of `config`, fresh or from ``config.pretrained``."""
  info = input_pipeline.dataset_info(config.dataset)
  rngs = nnx.Rngs(config.seed)
  if config.pretrained:
    from experiments import pretrained  # pylint: disable=g-import-not-at-top

    return pretrained.create_pretrained(
        config.model,
        config.pretrained,
        num_classes=info.num_classes,
        rngs=rngs,
        **config.model_kwargs,
    )
  return models.create_model(
      config.model,
      num_classes=info.num_classes,
      rngs=rngs,
      **config.model_kwargs,
  )


def create_optimizer(
    config: Config, num_steps_per_epoch: int
) -> optimizers.Optimizer:
  """The optimizer of `config`, its schedule counted in steps."""
  return optimizers.create(
      config.optimizer,
      config.learning_rate,
      schedule=config.schedule,
      steps_per_epoch=num_steps_per_epoch,
      num_epochs=config.num_epochs,
      schedule_kwargs=config.schedule_kwargs,
      **config.optimizer_kwargs,
  )


def create_train_state(
    config: Config,
    num_steps_per_epoch: int,
) -> tuple[nnx.GraphDef, TrainState, optimizers.Optimizer]:
  """The model's graph, the initial training state and the optimizer.

  Args:
    config: the run's configuration.
    num_steps_per_epoch: optimizer steps per epoch (for the schedule).

  Returns:
    ``(graphdef, state, optimizer)``: ``nnx.merge(graphdef, state.params,
    state.model_state)`` is the model.

  Example:
    >>> from experiments.configs import default
    >>> graphdef, state, optimizer = create_train_state(
    ...     default.get_config(model='resnet8', optimizer='adaloss',
    ...                        learning_rate=0.1, optimizer_kwargs={'b0': 1.0}),
    ...     num_steps_per_epoch=10)
    >>> int(state.step), type(state.opt_state[0]).__name__
    (0, 'ScaleByAdaLossState')
  """
  model = create_model(config)
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  optimizer = create_optimizer(config, num_steps_per_epoch)
  state = TrainState(
      step=jnp.zeros([], jnp.int32),
      params=params,
      model_state=model_state,
      opt_state=optimizer.tx.init(params),
  )
  return graphdef, state, optimizer


def _apply(graphdef, params, model_state, images, *, train: bool):
  """Logits, and the model's non-parameter state after the call."""
  model = nnx.merge(graphdef, params, model_state, copy=True)
  if train:
    model.train()
  else:
    model.eval()
  logits = model(images)
  return logits, nnx.state(model, nnx.Not(nnx.Param))


def _classification_metrics(logits, batch, label_smoothing: float = 0.0):
  """Mean cross-entropy over the real examples, and the metrics' sums."""
  targets = optax.smooth_labels(
      jax.nn.one_hot(batch['label'], logits.shape[-1]), label_smoothing
  )
  losses = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
  mask = batch['mask'].astype(losses.dtype)
  count = mask.sum()
  loss = jnp.sum(losses * mask) / jnp.maximum(count, 1.0)
  correct = jnp.sum((logits.argmax(-1) == batch['label']) * mask)
  return loss, {'loss_sum': loss * count, 'correct': correct, 'count': count}


def _micro_batches(batch, num_micro_batches: int):
  """`batch` as micro-batches stacked along a new first axis.

  Micro-batch ``j`` takes rows ``j``, ``j + num_micro_batches``, ...: when
  `num_micro_batches` divides every device's rows, each micro-batch takes an
  equal share of every device's rows, so the step stays data-parallel.
  """

  def split(x):
    x = x.reshape(-1, num_micro_batches, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)

  return jax.tree.map(split, batch)


def _sum_over_micro_batches(evaluate, model_state, micro_batches):
  """`evaluate` on every micro-batch in turn, its outputs summed.

  Args:
    evaluate: ``evaluate(model_state, examples) -> ((loss, (model_state,
      metrics)), grads)``, `grads` None when not differentiating.
    model_state: the model's non-parameter state at the step's start.
    micro_batches: from :func:`_micro_batches`.

  Returns:
    ``((loss, (model_state, metrics)), grads)`` like `evaluate`'s, loss,
    metrics and gradients summed. The RNG streams are carried from one
    micro-batch to the next, so that each draws its own dropout mask. Every
    micro-batch normalises with its own BatchNorm statistics, from the
    step's starting running averages, and the running averages kept are the
    mean of the micro-batches' updates: they move once per step, the running
    mean exactly as the whole batch would move it, the running variance by
    the mean of the micro-batches' variances (without the spread between
    their means).
  """
  start_stats, start_rest = nnx.split_state(model_state, nnx.BatchStat, ...)
  num_micro_batches = jax.tree.leaves(micro_batches)[0].shape[0]

  def evaluate_one(rest, examples):
    (loss, (new_state, metrics)), grads = evaluate(
        nnx.merge_state(start_stats, rest), examples
    )
    stats, rest = nnx.split_state(new_state, nnx.BatchStat, ...)
    return rest, (loss, stats, metrics, grads)

  def add(carry, examples):
    rest, totals = carry
    rest, outputs = evaluate_one(rest, examples)
    return (rest, jax.tree.map(jnp.add, totals, outputs)), None

  first = jax.tree.map(lambda x: x[0], micro_batches)
  zeros = jax.tree.map(
      lambda x: jnp.zeros(x.shape, x.dtype),
      jax.eval_shape(evaluate_one, start_rest, first)[1],
  )
  (rest, (loss, stats, metrics, grads)), _ = jax.lax.scan(
      add, (start_rest, zeros), micro_batches
  )
  stats = jax.tree.map(lambda x: x / num_micro_batches, stats)
  return (loss, (nnx.merge_state(stats, rest), metrics)), grads


def _accumulated(evaluate, model_state, micro_batches):
  """The loss of the whole batch as a function of the parameters, and its
  gradient, memory bounded by a micro-batch's.

  Returns:
    ``(loss_and_grad, value_fn)``: ``loss_and_grad(params)`` returns
    ``((loss, (model_state, metrics)), grads)``, and ``value_fn(params)`` the
    loss only, for the optimizer's re-evaluations. Its gradient is taken
    micro-batch by micro-batch in the forward pass (a custom VJP), since
    differentiating through the scan would keep every micro-batch's
    activations at once.
  """

  def loss_and_grad(params):
    return _sum_over_micro_batches(
        lambda model_state, examples: jax.value_and_grad(
            evaluate, has_aux=True
        )(params, model_state, examples),
        model_state,
        micro_batches,
    )

  @jax.custom_vjp
  def value_fn(params):
    return _sum_over_micro_batches(
        lambda model_state, examples: (
            evaluate(params, model_state, examples),
            None,
        ),
        model_state,
        micro_batches,
    )[0][0]

  def value_and_gradient(params):
    (loss, _), grads = loss_and_grad(params)
    return loss, grads

  def scale_gradient(grads, cotangent):
    return (jax.tree.map(lambda g: cotangent * g, grads),)

  value_fn.defvjp(value_and_gradient, scale_gradient)
  return loss_and_grad, value_fn


def train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformationExtraArgs,
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    loss_multiplier: float = 1.0,
    label_smoothing: float = 0.0,
    micro_batch: int | None = None,
    with_stats: bool = False,
):
  """One optimizer step on `batch`.

  Args:
    graphdef: the model's graph.
    tx: the optimizer; given ``value=loss`` and ``value_fn``.
    state: the training state.
    batch: ``image``, ``label`` and ``mask``.
    loss_multiplier: multiplies the loss the optimizer sees.
    label_smoothing: of the cross-entropy.
    micro_batch: evaluate the loss and its gradient this many examples at a
      time (a divisor of the batch; None: all at once), summing the
      micro-batches' shares of the batch's mean loss and gradient in a
      ``lax.scan``. The optimizer sees the same loss, gradient and
      ``value_fn`` as without, up to float32 rounding, but for BatchNorm
      (see :func:`_sum_over_micro_batches`) and dropout (each micro-batch
      draws its own mask).
    with_stats: also return the parameters after the step, the gradients and
      the updates.

  Returns:
    ``(state, metrics)``, metrics being the sums ``loss_sum`` (of the
    unmultiplied loss), ``correct`` and ``count``; with ``with_stats``, a
    third element ``{'parameter', 'gradient', 'update'}``.
  """
  batch_count = jnp.maximum(jnp.sum(batch['mask']), 1).astype(jnp.float32)

  def loss_fn(params, model_state, examples):
    logits, model_state = _apply(
        graphdef, params, model_state, examples['image'], train=True
    )
    loss, metrics = _classification_metrics(logits, examples, label_smoothing)
    # The examples' share of the batch's mean: all of it (a factor of exactly
    # 1) without micro-batches.
    share = loss * (metrics['count'] / batch_count)
    return loss_multiplier * share, (model_state, metrics)

  batch_size = batch['mask'].shape[0]
  if micro_batch is None or micro_batch == batch_size:
    loss_and_grad = functools.partial(
        jax.value_and_grad(loss_fn, has_aux=True),
        model_state=state.model_state,
        examples=batch,
    )

    def value_fn(params):
      # The same batch and the same dropout mask; the statistics it computes
      # are dropped, so they move once per step whatever the method.
      return loss_fn(params, state.model_state, batch)[0]

  else:
    loss_and_grad, value_fn = _accumulated(
        loss_fn,
        state.model_state,
        _micro_batches(batch, batch_size // micro_batch),
    )

  (loss, (model_state, metrics)), grads = loss_and_grad(state.params)
  updates, opt_state = tx.update(
      grads, state.opt_state, state.params, value=loss, value_fn=value_fn
  )
  params = optax.apply_updates(state.params, updates)
  new_state = TrainState(
      step=state.step + 1,
      params=params,
      model_state=model_state,
      opt_state=opt_state,
  )
  if with_stats:
    return (
        new_state,
        metrics,
        {'parameter': params, 'gradient': grads, 'update': updates},
    )
  return new_state, metrics


@functools.partial(jax.jit, static_argnums=0)
def eval_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    model_state: nnx.State,
    batch: dict[str, jax.Array],
):
  """The metrics' sums on `batch`, in evaluation mode (padding masked out).

  Example:
    >>> import jax.numpy as jnp
    >>> from experiments.configs import default
    >>> graphdef, state, _ = create_train_state(default.get_config(), 1)
    >>> batch = {'image': jnp.zeros((4, 32, 32, 3)), 'label': jnp.zeros(4, int),
    ...          'mask': jnp.array([True, True, True, False])}
    >>> metrics = eval_step(graphdef, state.params, state.model_state, batch)
    >>> float(metrics['count'])
    3.0
  """
  logits, _ = _apply(graphdef, params, model_state, batch['image'], train=False)
  return _classification_metrics(logits, batch)[1]


def _add_metrics(totals, metrics):
  return {k: totals[k] + metrics[k] for k in _METRIC_KEYS}


def _to_host(tree):
  """A replicated tree's values as NumPy, from this host's first shard."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def _layer_names(tree) -> list[str]:
  """'stages/0/conv1/kernel'-style names of a parameter tree's leaves."""
  names = []
  for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
    parts = [
        str(k.key) if isinstance(k, jax.tree_util.DictKey) else str(k.idx)
        for k in path
        if isinstance(k, (jax.tree_util.DictKey, jax.tree_util.SequenceKey))
    ]
    names.append('/'.join(parts))
  return names


def _save_stats(
    folder: pathlib.Path, stats, step: int, epoch: int, learning_rate: float
) -> None:
  """Writes `stats` (``{'parameter', 'gradient', 'update'}`` trees) into
  ``folder/step_STEP.npz``, a layer's array under ``KIND/LAYER``."""
  folder.mkdir(exist_ok=True)
  arrays = {
      'step': np.int64(step),
      'epoch': np.int64(epoch),
      'learning_rate': np.float64(learning_rate),
  }
  for kind, tree in _to_host(stats).items():
    for name, value in zip(_layer_names(tree), jax.tree.leaves(tree)):
      arrays[f'{kind}/{name}'] = value
  np.savez(folder / f'step_{step:08d}.npz', **arrays)


def _split_prefix(split: str) -> str:
  if split.startswith('val'):
    return 'val'
  if split.startswith('train'):
    return 'train_eval'
  return split


# The fields of a Config that the compiled training step depends on (with
# the shapes of its arguments: it is compiled ahead of time).
_STEP_FIELDS = (
    'batch_size',
    'image_size',
    'optimizer',
    'learning_rate',
    'optimizer_kwargs',
    'schedule',
    'schedule_kwargs',
    'num_epochs',
    'loss_multiplier',
    'label_smoothing',
    'micro_batch',
)


class Steps:
  """A model's and an optimizer's jitted functions, compiled once per process.

  Runs of the same model and optimizer settings (a resumed run, the same
  settings again) share them instead of compiling them again.
  """

  def __init__(
      self, graphdef, config: Config, num_steps_per_epoch: int, mesh: Mesh
  ):
    self._graphdef = graphdef
    self._config = config
    self._optimizer = create_optimizer(config, num_steps_per_epoch)
    self._replicated = NamedSharding(mesh, P())
    self._jitted = {}
    self._announced = {}
    self._compiled = None
    self.monitor = jax.jit(self._optimizer.monitor)

  def _jitted_train(self, with_stats: bool):
    if with_stats not in self._jitted:

      def accumulate(state, window, batch):
        outputs = train_step(
            self._graphdef,
            self._optimizer.tx,
            state,
            batch,
            loss_multiplier=self._config.loss_multiplier,
            label_smoothing=self._config.label_smoothing,
            micro_batch=self._config.micro_batch,
            with_stats=with_stats,
        )
        return (outputs[0], _add_metrics(window, outputs[1]), *outputs[2:])

      self._jitted[with_stats] = jax.jit(
          accumulate, donate_argnums=(0, 1), out_shardings=self._replicated
      )
    return self._jitted[with_stats]

  def train(self, with_stats: bool):
    """``(state, window, batch) -> (state, window[, stats])``, window summing
    the step's metrics; the state and the window are donated."""
    if not with_stats and self._compiled is not None:
      return self._compiled
    if with_stats not in self._announced:
      self._announced[with_stats] = reporting.announcing_compilation(
          self._jitted_train(with_stats),
          'the training step' + (' with statistics' if with_stats else ''),
      )
    return self._announced[with_stats]

  def train_step_bytes(
      self, state, window, batch, announce: bool = True
  ) -> int | None:
    """Compiles ``train(False)`` for these arguments (or their shapes), the
    compiled step then serving the loop; its memory per device by XLA's
    analysis (None where XLA gives none). With `announce`, says when the
    compilation starts and ends."""
    if self._compiled is None:
      log = _LOG.info if announce else _LOG.debug
      log('Compiling the training step...')
      started = time.perf_counter()
      lowered = self._jitted_train(False).lower(state, window, batch)
      self._compiled = lowered.compile()
      log(
          'Compiled the training step in %.1f s.',
          time.perf_counter() - started,
      )
    return memory_check.step_bytes(self._compiled)


@functools.lru_cache(maxsize=8)
def _compiled_steps(
    graphdef, step_key: str, num_steps_per_epoch: int, mesh: Mesh
) -> Steps:
  settings = json.loads(step_key)
  return Steps(graphdef, Config(**settings), num_steps_per_epoch, mesh)


def _train_batches(config: Config) -> input_pipeline.BatchIterator:
  """The training split's batches, epoch after epoch."""
  return input_pipeline.create_split(
      config.dataset,
      config.train_split,
      batch_size=config.batch_size,
      train=True,
      seed=config.seed,
      data_dir=config.data_dir,
      image_size=config.image_size,
      cutout=config.cutout,
      mean_std=config.mean_std,
  )


def evaluate(
    graphdef: nnx.GraphDef,
    state: TrainState,
    config: Config,
    batch_sharding: NamedSharding,
) -> dict[str, float]:
  """Loss and accuracy on every split of ``config.eval_splits``."""
  results = {}
  for split in config.eval_splits:
    batches = input_pipeline.create_split(
        config.dataset,
        split,
        batch_size=config.batch_size,
        train=False,
        data_dir=config.data_dir,
        image_size=config.image_size,
        mean_std=config.mean_std,
    )
    totals = dict.fromkeys(_METRIC_KEYS, 0.0)
    for batch in batches:
      metrics = eval_step(
          graphdef,
          state.params,
          state.model_state,
          _to_global(batch, batch_sharding),
      )
      totals = _add_metrics(totals, metrics)
    totals = _to_host(totals)
    prefix = _split_prefix(split)
    results[f'{prefix}_loss'] = float(totals['loss_sum'] / totals['count'])
    results[f'{prefix}_accuracy'] = float(totals['correct'] / totals['count'])
  return results


def _check_memory(
    steps: Steps,
    graphdef: nnx.GraphDef,
    state: TrainState,
    config: Config,
    num_steps_per_epoch: int,
    mesh: Mesh,
) -> None:
  """Compiles the training step and refuses a run it does not fit.

  Raises:
    ValueError: from ``memory_check.check_fits``, with the estimate and the
      ``--micro-batch`` predicted to fit.
  """
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P('data'))
  size = config.image_size
  arguments = (
      jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
          state,
      ),
      dict.fromkeys(
          _METRIC_KEYS,
          jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated),
      ),
      {
          name: jax.ShapeDtypeStruct(
              (config.batch_size, *shape), dtype, sharding=batch_sharding
          )
          for name, shape, dtype in (
              ('image', (size, size, 3), jnp.float32),
              ('label', (), jnp.int32),
              ('mask', (), jnp.bool_),
          )
      },
  )
  needed = steps.train_step_bytes(*arguments)
  available = memory_check.available_per_device()
  if needed is None or available is None:
    return

  def estimate(micro_batch: int) -> int:
    other = Steps(
        graphdef,
        dataclasses.replace(config, micro_batch=micro_batch),
        num_steps_per_epoch,
        mesh,
    )
    needed_there = other.train_step_bytes(*arguments, announce=False)
    assert needed_there is not None  # the same platform analysed `needed`
    return needed_there

  memory_check.check_fits(
      needed,
      available,
      micro_batch=config.micro_batch or config.batch_size,
      batch_size=config.batch_size,
      num_devices=mesh.size,
      estimate=estimate,
  )
  # Not at INFO: a refused command prints one line, and the checks that
  # follow (the working directory, its checkpoints) may still refuse it.
  _LOG.debug(
      'The training step needs about %.1f MiB per device of the %.1f MiB '
      'available (%s).',
      needed / 2**20,
      available.num_bytes / 2**20,
      available.source,
  )


def _replicate(tree, sharding: NamedSharding):
  """`tree`, this process's copy of it, on every device of `sharding`.

  Across processes, ``jax.device_put`` places host values but not arrays
  already on a device, a restored checkpoint's, nor typed PRNG keys: those
  go through the host, keys as their raw data.
  """

  def put(x):
    if isinstance(x, jax.Array):
      if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(
            put(jax.random.key_data(x)), impl=jax.random.key_impl(x)
        )
      x = np.asarray(x)
    return jax.device_put(x, sharding)

  return jax.tree.map(put, tree)


def _to_global(batch, sharding):
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch
  )


def _say_initial_loss(graphdef, state, config, batch_sharding) -> None:
  """Says, with the loss measured at initialisation on a test batch, that a
  network without BatchNorm starts from a huge loss: the scale-free paper's
  networks do, initialised as its code initialises them."""
  first_batch = next(
      iter(
          input_pipeline.create_split(
              config.dataset,
              config.eval_splits[-1],
              batch_size=config.batch_size,
              train=False,
              data_dir=config.data_dir,
              image_size=config.image_size,
              mean_std=config.mean_std,
          )
      )
  )
  totals = _to_host(
      eval_step(
          graphdef,
          state.params,
          state.model_state,
          _to_global(first_batch, batch_sharding),
      )
  )
  num_classes = input_pipeline.dataset_info(config.dataset).num_classes
  _LOG.info(
      'Without BatchNorm the network starts from a loss of %.3g on a test '
      "batch (chance: %.2g), as the authors' networks do at "
      'initialisation: expect first-epoch losses of that order.',
      totals['loss_sum'] / totals['count'],
      math.log(num_classes),
  )


def train_and_evaluate(config: Config, workdir: str) -> list[dict[str, Any]]:
  """Trains and evaluates the model of `config`, writing into `workdir`.

  Args:
    config: the run's configuration.
    workdir: the run's directory (created if needed).

  Returns:
    The metrics records of the whole run, those of a resumed run's earlier
    part included.

  Raises:
    ValueError: before anything is written, for a configuration that does
      not fit (an unknown model, optimizer or split, a batch or micro-batch
      that does not divide over the devices, a compiled training step that
      needs more memory than is available: see ``memory_check``), a
      `workdir` with checkpoints and
      ``config.resume`` False, or a resumed `workdir` whose ``config.json``
      has other settings than `config` (but for
      ``configs.default.RUN_CONTROLS``).
    experiments.input_pipeline.DatasetNotFoundError: a dataset that is not
      prepared, before anything is written.
    experiments.input_pipeline.DatasetCorruptError: a dataset whose files
      cannot be read, before anything is written.
    experiments.run_directory.CheckpointError: the latest checkpoint cannot
      be restored; nothing is written.
  """
  check_config(config)
  workdir = pathlib.Path(workdir)
  mesh = Mesh(np.asarray(jax.devices()), ('data',))
  if config.batch_size % mesh.size:
    raise ValueError(
        f'`batch_size` {config.batch_size} must be a multiple of '
        f'the {mesh.size} devices.'
    )
  micro_batches = memory_check.micro_batch_sizes(config.batch_size, mesh.size)
  if config.micro_batch is not None and config.micro_batch not in micro_batches:
    raise ValueError(
        f'`micro_batch` {config.micro_batch} must divide `batch_size` '
        f'{config.batch_size} and be a multiple of the {mesh.size} devices: '
        f'one of {", ".join(map(str, micro_batches))}.'
    )
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P('data'))

  train_batches = _train_batches(config)
  for split in config.eval_splits:
    # Read now (and kept in memory for the evaluations), so that a missing
    # or damaged split stops the run before it writes anything.
    input_pipeline.read_split(config.dataset, split, config.data_dir)
  full_epoch = train_batches.steps_per_epoch
  num_steps_per_epoch = min(
      full_epoch, config.max_steps_per_epoch or full_epoch
  )
  graphdef, state, optimizer = create_train_state(config, num_steps_per_epoch)
  steps = _compiled_steps(
      graphdef,
      default_config.settings_key(config, _STEP_FIELDS),
      num_steps_per_epoch,
      mesh,
  )
  _check_memory(steps, graphdef, state, config, num_steps_per_epoch, mesh)
  run = run_directory.RunDirectory(config, workdir)
  progress = run_directory.Progress(window=dict.fromkeys(_METRIC_KEYS, 0.0))
  if run.latest_step() is not None:
    state, progress = run.restore(state)
    if progress.data:
      train_batches.set_state(progress.data)
    _LOG.info('Resuming %s from step %d.', workdir, int(state.step))
  history = run.start(config, int(state.step))
  state = _replicate(state, replicated)
  window = _replicate(progress.window, replicated)
  if config.model_kwargs.get('batch_norm') is False and not int(state.step):
    _say_initial_loss(graphdef, state, config, batch_sharding)

  def checkpoint_due():
    every = config.checkpoint_every_steps
    return bool(every) and int(state.step) % every == 0

  max_steps = config.max_steps or sys.maxsize
  show_progress = config.progress_bar and sys.stderr.isatty()
  progress_lines = reporting.ProgressLines(
      min(max_steps, config.num_epochs * num_steps_per_epoch)
  )
  started = time.perf_counter() - progress.seconds

  def save():
    progress.window = _to_host(window)
    progress.data = train_batches.get_state()
    progress.seconds = time.perf_counter() - started
    run.save(state, progress)

  interrupt = run_directory.InterruptRequest()
  with interrupt:
    while progress.epoch < config.num_epochs and int(state.step) < max_steps:
      if progress.batch == 0 and num_steps_per_epoch < full_epoch:
        # A shortened epoch skips the rest of the split's epoch.
        train_batches.set_state({'next_index': progress.epoch * full_epoch})
      stop = min(
          num_steps_per_epoch, progress.batch + max_steps - int(state.step)
      )
      bar = tqdm.tqdm(
          total=num_steps_per_epoch,
          initial=progress.batch,
          desc=f'epoch {progress.epoch + 1}/{config.num_epochs}',
          disable=not show_progress,
          leave=False,
          dynamic_ncols=True,
      )
      while progress.batch < stop:
        batch = next(train_batches)
        with_stats = (
            config.store_stats
            and progress.batch % config.store_stats_interval == 0
        )
        state, window, *stats = steps.train(with_stats)(
            state, window, _to_global(batch, batch_sharding)
        )
        progress.batch += 1
        bar.update()
        if config.progress_bar and not show_progress:
          progress_lines.step_done(int(state.step))
        if with_stats and run.is_chief:
          _save_stats(
              workdir / 'stats',
              stats[0],
              int(state.step),
              progress.epoch,
              float(optimizer.learning_rate(int(state.step) - 1)),
          )
        if progress.batch < stop and (checkpoint_due() or interrupt.requested):
          # The last batch of the loop is checkpointed below, with the epoch
          # it ends counted.
          save()
          interrupt.stop_if_requested(run, int(state.step))
      bar.close()

      end_of_epoch = progress.batch >= num_steps_per_epoch
      if end_of_epoch:
        progress.epoch, progress.batch = progress.epoch + 1, 0
      finished = (
          progress.epoch >= config.num_epochs or int(state.step) >= max_steps
      )
      evaluation_due = finished or (
          end_of_epoch and progress.epoch % config.eval_every_epochs == 0
      )
      if evaluation_due:
        record = _record(
            graphdef,
            state,
            window,
            config,
            batch_sharding,
            steps.monitor,
            num_steps_per_epoch,
        )
        progress.seconds = record['seconds'] = time.perf_counter() - started
        history.append(record)
        run.write(record)
        reporting.say_record(workdir.name, record)
        window = jax.device_put(dict.fromkeys(_METRIC_KEYS, 0.0), replicated)
      if evaluation_due or checkpoint_due() or interrupt.requested:
        save()
      if not finished:
        interrupt.stop_if_requested(run, int(state.step))
  run.close()
  return history


def _record(
    graphdef,
    state,
    window,
    config,
    batch_sharding,
    monitor,
    num_steps_per_epoch,
) -> dict[str, Any]:
  """The metrics record of an evaluation."""
  totals = _to_host(window)
  record = {
      'epoch': int(state.step) / num_steps_per_epoch,
      'step': int(state.step),
  }
  if totals['count']:
    record['train_loss'] = float(totals['loss_sum'] / totals['count'])
    record['train_accuracy'] = float(totals['correct'] / totals['count'])
  record.update(evaluate(graphdef, state, config, batch_sharding))
  record.update({
      k: float(v)
      for k, v in _to_host(monitor(state.opt_state, state.step)).items()
  })
  return record
