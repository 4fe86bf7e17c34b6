"""The optimizers of the experiments, by the names the papers use.

:func:`create` returns the library's method (or one of the baselines the papers
compare with: optax's Adam, AdaBelief and SGD with momentum, each with the L2
term of PyTorch's ``weight_decay``), its learning-rate schedule, and a
``monitor`` that reads the quantity the method adapts from its state (AdaLoss's
effective step :math:`\\eta / b_t`, ACME's fitted rate, ...) for the logs.

Schedules are stepped once per epoch, as the papers' PyTorch schedulers are:
``'cosine'`` is ``CosineAnnealingLR(T_max=num_epochs, eta_min=final_fraction
* lr)`` and ``'step'`` is ``StepLR(step_size=step_epochs, gamma=gamma)``.
"""

from collections.abc import Callable
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import optax_adaptive

# The library's methods, then the baselines.
METHODS = (
    'adaloss',
    'adagrad_norm',
    'sgd_constant',
    'sgd_decay_sqrt',
    'adam_l2',
    'adamw',
    'adam_prox',
    'adadiff',
    'acme',
    'adam',
    'adabelief',
    'sgd',
)
SCHEDULES = ('constant', 'cosine', 'step')


class Optimizer(NamedTuple):
  """An optimizer of the experiments.

  Attributes:
    tx: the transformation; its ``update`` takes ``value`` and ``value_fn``.
    learning_rate: the base rate as a function of the step (the schedule).
    monitor: ``monitor(opt_state, step)``, jittable: a dict of scalars to log,
      always with ``learning_rate`` (the rate of the last step taken).
  """

  tx: optax.GradientTransformationExtraArgs
  learning_rate: Callable[[jax.Array], jax.Array]
  monitor: Callable[[optax.OptState, jax.Array], dict[str, jax.Array]]


def learning_rate_schedule(
    learning_rate: float,
    schedule: str = 'constant',
    *,
    steps_per_epoch: int,
    num_epochs: int,
    final_fraction: float = 0.0,
    step_epochs: int = 1,
    gamma: float = 0.1,
) -> optax.ScalarOrSchedule:
  """The base rate, constant or stepped once per epoch.

  Args:
    learning_rate: the rate of the first epoch.
    schedule: ``'constant'``, ``'cosine'`` or ``'step'``.
    steps_per_epoch: optimizer steps in an epoch.
    num_epochs: the cosine's half period, in epochs.
    final_fraction: the cosine's floor, as a fraction of ``learning_rate``.
    step_epochs: the step decay's period, in epochs.
    gamma: the step decay's factor.

  Returns:
    ``learning_rate`` itself for ``'constant'``, else an optax schedule.

  Example:
    >>> rate = learning_rate_schedule(0.1, 'step', steps_per_epoch=10,
    ...                               num_epochs=3, step_epochs=2)
    >>> [round(float(rate(step)), 4) for step in (0, 19, 20)]
    [0.1, 0.1, 0.01]
  """
  if schedule not in SCHEDULES:
    raise ValueError(
        f'Unknown schedule {schedule!r}; choose one of {", ".join(SCHEDULES)}.'
    )
  if schedule == 'constant':
    return learning_rate
  floor = final_fraction * learning_rate

  def rate(step):
    epoch = jnp.asarray(step) // steps_per_epoch
    if schedule == 'cosine':
      cosine = (1 + jnp.cos(math.pi * epoch / num_epochs)) / 2
      return floor + (learning_rate - floor) * cosine
    return learning_rate * gamma ** (epoch // step_epochs)

  return rate


def authors_asam_mask(params) -> Any:
  """ACME's code's ASAM weights: every kernel and every norm scale.

  The authors' code perturbs every parameter PyTorch names ``weight``, which
  includes BatchNorm scales; the library's default takes the leaves of rank 2
  or more. This is the authors' choice, for ``acme(asam_mask=...)``.

  Args:
    params: the parameter tree (an ``nnx.State`` or nested dicts).

  Returns:
    A tree of booleans shaped like ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> authors_asam_mask({'bn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}})
    {'bn': {'bias': False, 'scale': True}}
  """

  def is_weight(path, _):
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return bool(names) and names[-1] in ('kernel', 'scale')

  return jax.tree_util.tree_map_with_path(is_weight, params)


def _with_l2(weight_decay: float, tx: optax.GradientTransformation):
  """PyTorch's ``weight_decay``: the L2 gradient added before ``tx``."""
  return optax.chain(optax.add_decayed_weights(weight_decay), tx)


def _build(name: str, rate: optax.ScalarOrSchedule, kwargs: dict[str, Any]):
  """The transformation of method `name` at `rate`."""
  kwargs = dict(kwargs)
  if name == 'adagrad_norm':
    # The library's alias has no weight decay; the AdaLoss code's
    # Adagradnorm takes one. Here it is the L2 term of the other baselines.
    weight_decay = kwargs.pop('weight_decay', 0.0)
    kwargs.setdefault('granularity', 'rows')  # the AdaLoss experiments' form
    return optax.chain(
        optax_adaptive.scale_by_adagrad_norm(**kwargs),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(rate),
    )
  if name == 'acme':
    if kwargs.get('asam_mask') == 'authors':
      kwargs['asam_mask'] = authors_asam_mask
    return optax_adaptive.acme(rate, **kwargs)
  if name in ('adam', 'adabelief', 'sgd'):
    weight_decay = kwargs.pop('weight_decay', 0.0)
    factory = {
        'adam': optax.adam,
        'adabelief': optax.adabelief,
        'sgd': optax.sgd,
    }[name]
    return _with_l2(weight_decay, factory(rate, **kwargs))
  return getattr(optax_adaptive, name)(rate, **kwargs)


def _find_state(opt_state, state_type):
  found = jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, state_type)
  )
  return next(x for x in found if isinstance(x, state_type))


def _monitor(name: str, rate_at, kwargs: dict[str, Any]):
  """The function that reads what method `name` adapts from its state."""

  def monitor(opt_state, step):
    rate = jnp.asarray(rate_at(jnp.maximum(step - 1, 0)), jnp.float32)
    logged = {'learning_rate': rate}
    if name == 'adaloss':
      scale = _find_state(opt_state, optax_adaptive.ScaleByAdaLossState).scale
      logged['effective_step_size'] = rate * scale
    elif name == 'sgd_decay_sqrt':
      scale = _find_state(opt_state, optax_adaptive.ScaleByDecaySqrtState).scale
      logged['effective_step_size'] = rate * scale
    elif name == 'sgd_constant':
      logged['effective_step_size'] = rate / kwargs['b0']
    elif name == 'adagrad_norm':
      # One rate per output unit with 'rows': their mean is logged.
      state = _find_state(opt_state, optax_adaptive.ScaleByAdaGradNormState)
      eps = kwargs.get('eps', 1e-10)
      per_unit = jnp.concatenate([
          jnp.ravel(rate / (jnp.sqrt(a) + eps))
          for a in jax.tree.leaves(state.accumulator)
      ])
      logged['effective_step_size'] = jnp.mean(per_unit)
    elif name in ('adamw', 'adam_prox'):
      logged['weight_decay_coefficient'] = _find_state(
          opt_state, optax_adaptive.ScheduledWeightDecayState
      ).decay
    elif name == 'acme':
      state = _find_state(opt_state, optax_adaptive.AcmeState)
      logged.update(
          learning_rate=state.adapted_learning_rate,
          acme_branch=state.branch,
          acme_num_rejected=state.num_rejected,
      )
    return logged

  return monitor


def create(
    name: str,
    learning_rate: float,
    *,
    schedule: str = 'constant',
    steps_per_epoch: int = 1,
    num_epochs: int = 1,
    schedule_kwargs: dict[str, Any] | None = None,
    **kwargs,
) -> Optimizer:
  """The optimizer `name` with its schedule and its monitor.

  Args:
    name: one of :data:`METHODS`.
    learning_rate: the base rate.
    schedule: one of :data:`SCHEDULES`, stepped once per epoch.
    steps_per_epoch: optimizer steps in an epoch.
    num_epochs: epochs in the run (the cosine's length).
    schedule_kwargs: ``final_fraction``, ``step_epochs``, ``gamma``.
    **kwargs: the method's arguments (``b0``, ``weight_decay``, ...); for
      ``acme``, ``asam_mask='authors'`` selects :func:`authors_asam_mask`,
      and ``schedule_steps`` (the span of its internal cosine) defaults to
      the whole run.

  Returns:
    An :class:`Optimizer`.

  Raises:
    ValueError: for an unknown method or schedule, or arguments the method
      does not take.

  Example:
    >>> import jax.numpy as jnp
    >>> optimizer = create('adaloss', 0.1, b0=2.0)
    >>> state = optimizer.tx.init({'w': jnp.ones(3)})
    >>> print(optimizer.monitor(state, 0)['effective_step_size'])
    0.05
  """
  if name not in METHODS:
    raise ValueError(
        f'Unknown optimizer {name!r}; choose one of {", ".join(METHODS)}.'
    )
  rate = learning_rate_schedule(
      learning_rate,
      schedule,
      steps_per_epoch=steps_per_epoch,
      num_epochs=num_epochs,
      **(schedule_kwargs or {}),
  )
  if name == 'acme':
    kwargs.setdefault('schedule_steps', steps_per_epoch * num_epochs)
  try:
    tx = _build(name, rate, kwargs)
  except TypeError as error:
    raise ValueError(
        f'{name} does not take these arguments: {kwargs} ({error}).'
    ) from None
  rate_at = rate if callable(rate) else (lambda _: learning_rate)
  return Optimizer(tx, rate_at, _monitor(name, rate_at, kwargs))
