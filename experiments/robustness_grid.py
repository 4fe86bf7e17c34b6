"""One method over a whole grid of rates and seeds, as one compiled program.

:func:`build_optimizer` builds every method of
``experiments.configs.robustness.METHODS`` at a rate through the public API
of ``optax_adaptive``, ``optax`` and ``optax.contrib``, as their docstrings
compose them. :class:`GridProgram` trains every copy of a task's model (one
per rate and seed) in one jitted program per epoch: the rate is traced, so
the transformation is built inside the program, ``jax.vmap`` over the rates
within ``jax.vmap`` over the seeds. That works for every method here: each
takes a traced ``learning_rate`` (ACME keeps it in its state as the rate it
adapts from, and Mechanic takes it through the Adam it wraps), and none
branches in Python on its value. The time per step is that of the whole
vmapped program, every copy at once.

:func:`save_state` and :func:`restore_state` keep the grid's state between
epochs, for ``--resume``.
"""

from collections.abc import Sequence
import os
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import contrib

from experiments import robustness_tasks
import optax_adaptive

# Methods that re-evaluate the loss through `value_fn`.
_NEEDS_VALUE_FN = ('acme', 'acme_asam')


def build_optimizer(name: str, rate) -> optax.GradientTransformationExtraArgs:
  """Method `name` at `rate` (a float or a traced scalar), its defaults kept.

  Every method accepts ``value`` (and ACME ``value_fn``) in ``update``; the
  ones that do not read the loss ignore it.

  Example:
    >>> import jax.numpy as jnp
    >>> tx = build_optimizer('momo', 1.0)
    >>> state = tx.init({'w': jnp.ones(2)})
    >>> updates, _ = tx.update({'w': jnp.ones(2)}, state, {'w': jnp.ones(2)},
    ...                        value=jnp.array(1.0))
    >>> updates['w'].shape
    (2,)
  """
  builders = {
      'adaloss': lambda: optax_adaptive.adaloss(rate),
      'adagrad_norm': lambda: optax_adaptive.adagrad_norm(rate),
      'acme': lambda: optax_adaptive.acme(rate),
      'acme_asam': lambda: optax_adaptive.acme(rate, asam=True),
      'adamw': lambda: optax_adaptive.adamw(rate),
      'adam': lambda: optax.adam(rate),
      'sgd': lambda: optax.sgd(rate, momentum=0.9),
      'schedule_free_adamw': lambda: contrib.schedule_free_adamw(rate),
      'prodigy': lambda: contrib.prodigy(rate),
      'dadapt_adamw': lambda: contrib.dadapt_adamw(rate),
      'dog': lambda: contrib.dog(rate),
      'dowg': lambda: contrib.dowg(rate),
      'mechanize': lambda: contrib.mechanize(optax.adam(rate)),
      'cocob': lambda: contrib.cocob(rate),
      'momo': lambda: contrib.momo(rate),
      'momo_adam': lambda: contrib.momo_adam(rate),
  }
  if name not in builders:
    raise ValueError(
        f'Unknown method {name!r}; choose one of {", ".join(builders)}.'
    )
  # COCOB, DoG and DoWG are plain transformations: this lets them take (and
  # ignore) the loss that the others read.
  return optax.with_extra_args_support(builders[name]())


def evaluation_params(name: str, opt_state, params):
  """The parameters a method is evaluated at: schedule-free AdamW's average
  (``optax.contrib.schedule_free_eval_params``), else `params`."""
  if name == 'schedule_free_adamw':
    return contrib.schedule_free_eval_params(opt_state, params)
  return params


def _optimizer_step(name: str, tx: optax.GradientTransformationExtraArgs):
  """The task's ``step``: differentiate, then update with the loss."""

  def step(params, opt_state, loss_fn):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    extra = {'value': loss}
    if name in _NEEDS_VALUE_FN:
      extra['value_fn'] = lambda p: loss_fn(p)[0]
    updates, opt_state = tx.update(grads, opt_state, params, **extra)
    return optax.apply_updates(params, updates), opt_state, loss, aux

  return step


class GridState(NamedTuple):
  """Every copy's state, each leaf shaped ``(seeds, rates, ...)``."""

  params: Any
  model_state: Any
  opt_state: Any


class EpochOutputs(NamedTuple):
  """Each copy's numbers after an epoch, shaped ``(seeds, rates)``."""

  train_loss: np.ndarray
  test_loss: np.ndarray
  test_metric: np.ndarray


def _over_grid(function, per_seed: Sequence[int], per_copy: Sequence[int]):
  """`function` vmapped over rates (inner) and seeds (outer).

  `per_seed` are the positions of arguments with a seed axis only,
  `per_copy` those with both axes; the first argument is the rate; any other
  is shared by every copy.
  """

  def axes(seed_level: bool, num_args: int):
    return tuple(
        0
        if i in per_copy
        or (seed_level and i in per_seed)
        or (not seed_level and i == 0)
        else None
        for i in range(num_args)
    )

  def vmapped(*args):
    inner = jax.vmap(function, in_axes=axes(False, len(args)))
    return jax.vmap(inner, in_axes=axes(True, len(args)))(*args)

  return vmapped


class GridProgram:
  """Method `name` on every copy of `task`'s model: init, epoch, evaluate."""

  def __init__(
      self, task: robustness_tasks.Task, name: str, rates: Sequence[float]
  ):
    self._task = task
    self._name = name
    self._rates = jnp.asarray(rates, jnp.float32)

    def init(rate, params, model_state):
      opt_state = build_optimizer(name, rate).init(params)
      return GridState(params, model_state, opt_state)

    def epoch(rate, state, inputs, shared):
      step = _optimizer_step(name, build_optimizer(name, rate))
      *new_state, train_loss = task.train_epoch(step, *state, inputs, shared)
      return GridState(*new_state), train_loss

    def evaluate(rate, state, shared):
      del rate
      params = evaluation_params(name, state.opt_state, state.params)
      return task.evaluate(params, state.model_state, shared)

    self._init = jax.jit(_over_grid(init, per_seed=(1, 2), per_copy=()))
    self._epoch = jax.jit(_over_grid(epoch, per_seed=(2,), per_copy=(1,)))
    self._evaluate = jax.jit(_over_grid(evaluate, per_seed=(), per_copy=(1,)))
    self._compiled_epoch = None

  def initial_state(self, seeds: Sequence[int]) -> GridState:
    """Every copy's initial state: each seed's model, at every rate."""
    states = [self._task.initial_state(seed) for seed in seeds]
    params, model_state = jax.tree.map(lambda *x: jnp.stack(x), *states)
    return self._init(self._rates, params, model_state)

  def compile(self, state: GridState, inputs) -> float:
    """Compiles the epoch's program; returns the seconds it took."""
    started = time.perf_counter()
    self._compiled_epoch = self._epoch.lower(
        self._rates, state, inputs, self._task.shared
    ).compile()
    return time.perf_counter() - started

  def train_epoch(
      self, state: GridState, inputs
  ) -> tuple[GridState, Any, float]:
    """One epoch of every copy: the new state, the mean training losses and
    the seconds the compiled program took."""
    started = time.perf_counter()
    state, train_loss = jax.block_until_ready(
        self._compiled_epoch(self._rates, state, inputs, self._task.shared)
    )
    return state, train_loss, time.perf_counter() - started

  def evaluate(self, state: GridState) -> tuple[Any, Any]:
    """Every copy's test loss and metric."""
    return self._evaluate(self._rates, state, self._task.shared)


def _is_key(leaf) -> bool:
  return jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def save_state(path: pathlib.Path, state: GridState) -> None:
  """Writes `state`'s leaves to `path` (``.npz``) whole or not at all.

  PRNG keys (the language model's dropout streams) are stored as their data.
  """
  leaves = [
      np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
      for leaf in jax.tree.leaves(state)
  ]
  partial = path.with_name(path.name + '.partial')
  with partial.open('wb') as file:
    np.savez(file, *leaves)
  os.replace(partial, path)


def restore_state(path: pathlib.Path, template: GridState) -> GridState:
  """The state :func:`save_state` wrote, in the structure of `template`.

  Raises:
    ValueError: if the file does not hold a state of `template`'s shapes.
  """
  template_leaves, treedef = jax.tree.flatten(template)
  with np.load(path) as stored:
    arrays = [stored[f'arr_{i}'] for i in range(len(stored.files))]
  if len(arrays) != len(template_leaves):
    raise ValueError(f'{path} does not hold a state of this grid.')
  leaves = []
  for leaf, array in zip(template_leaves, arrays):
    if _is_key(leaf):
      array = jax.random.wrap_key_data(array, impl=jax.random.key_impl(leaf))
    if array.shape != leaf.shape or array.dtype != leaf.dtype:
      raise ValueError(f'{path} does not hold a state of this grid.')
    leaves.append(jnp.asarray(array))
  return jax.tree.unflatten(treedef, leaves)
