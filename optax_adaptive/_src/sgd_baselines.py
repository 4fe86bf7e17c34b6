"""SGD with a constant and a :math:`1/\\sqrt{t}` step: AdaLoss's baselines."""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_adaptive._src import numerics, validation


def _scale_finite(step_size: float) -> optax.GradientTransformationExtraArgs:
  """`optax.scale` that gives a zero update to an entry that is not finite."""

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return numerics.scale_finite_entries(updates, step_size), state

  return optax.GradientTransformationExtraArgs(
      optax.init_empty_state, update_fn
  )


def sgd_constant(
    learning_rate: optax.ScalarOrSchedule,
    b0: float,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD with the constant step :math:`\eta / b_0`, AdaLoss's first baseline.

  .. math::
    p_{t+1} = p_t - \eta_t \left(g_t / b_0 + \lambda p_t\right).

  Non-finite inputs: a gradient entry that is not finite (or whose scaled value
  overflows the gradient's dtype) gets no gradient step; the weight decay still
  applies to it. The loss is not read. The method has no state, so float16 and
  bfloat16 parameters need no other dtype.

  Args:
    learning_rate: :math:`\eta_t`, a float or an optax schedule.
    b0: the constant :math:`b_0 > 0` that divides the gradient.
    weight_decay: :math:`\lambda`, L2 weight decay (not divided by :math:`b_0`).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`; extra arguments such as
    ``value`` are accepted and ignored.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_adaptive
    >>> tx = optax_adaptive.sgd_constant(learning_rate=0.5, b0=2.0)
    >>> params = jnp.array([1.0])
    >>> updates, _ = tx.update(jnp.array([1.0]), tx.init(params), params)
    >>> print(updates)
    [-0.25]

  References:
    Wu, Xie, Du and Ward, AdaLoss, AAAI 2022 (the "SGD-Constant" baseline).

    Specification: :ref:`docs/specification.md#spec-sgd-baselines
    <spec-sgd-baselines>`.
  """
  validation.check_learning_rate(learning_rate)
  validation.check_positive('b0', b0)
  validation.check_non_negative('weight_decay', weight_decay)
  return optax.chain(
      _scale_finite(1.0 / b0),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate),
  )


class ScaleByDecaySqrtState(NamedTuple):
  """State of :func:`scale_by_decay_sqrt`.

  Attributes:
    count: number of steps taken.
    scale: the last step's factor :math:`1 / \\sqrt{b_0^2 + \\alpha t}`.
  """

  count: chex.Array  # shape=(), dtype=jnp.int32.
  scale: chex.Array  # shape=(), the default float dtype.


def scale_by_decay_sqrt(
    b0: float = 1.0,
    alpha: float = 1.0,
) -> optax.GradientTransformationExtraArgs:
  r"""Divides updates by :math:`\sqrt{b_0^2+\alpha t}` at step :math:`t \ge 1`.

  Non-finite inputs, for :func:`sgd_decay_sqrt` too: a gradient entry whose
  scaled value is not finite gets a zero update; in :func:`sgd_decay_sqrt` the
  weight decay still applies to it. The loss is not read. The state depends on
  the step count alone and is of the default float dtype; the updates keep the
  gradients' dtype.

  Args:
    b0: :math:`b_0 > 0`.
    alpha: growth rate of :math:`b_t^2` per step, >= 0.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax.numpy as jnp, optax_adaptive
    >>> tx = optax_adaptive.scale_by_decay_sqrt(b0=1.0, alpha=3.0)
    >>> params = jnp.array([1.0])
    >>> updates, _ = tx.update(jnp.array([4.0]), tx.init(params), params)
    >>> print(updates)
    [2.]

  References:
    Wu, Xie, Du and Ward, AdaLoss, AAAI 2022 (the "SGD-DecaySqrt" baseline).

    Specification: :ref:`docs/specification.md#spec-sgd-baselines
    <spec-sgd-baselines>`.
  """
  validation.check_positive('b0', b0)
  validation.check_non_negative('alpha', alpha)

  def init_fn(params):
    del params
    return ScaleByDecaySqrtState(
        count=jnp.zeros([], jnp.int32),
        scale=jax.lax.rsqrt(numerics.default_float(b0) ** 2),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    count = optax.safe_increment(state.count)
    scale = jax.lax.rsqrt(numerics.default_float(b0) ** 2 + alpha * count)
    return numerics.scale_finite_entries(updates, scale), ScaleByDecaySqrtState(
        count=count, scale=scale.astype(state.scale.dtype)
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sgd_decay_sqrt(
    learning_rate: optax.ScalarOrSchedule,
    b0: float,
    alpha: float = 1.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD with a :math:`1/\sqrt{t}` step, AdaLoss's second baseline.

  .. math::
    p_{t+1} = p_t - \eta_t \left(\frac{g_t}{\sqrt{b_0^2 + \alpha t}}
      + \lambda p_t\right), \qquad t = 1, 2, \ldots

  Non-finite inputs: see :func:`scale_by_decay_sqrt`.

  Args:
    learning_rate: :math:`\eta_t`, a float or an optax schedule.
    b0: :math:`b_0 > 0`.
    alpha: growth rate of :math:`b_t^2` per step.
    weight_decay: :math:`\lambda`, L2 weight decay (not rescaled).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax.numpy as jnp, optax_adaptive
    >>> tx = optax_adaptive.sgd_decay_sqrt(learning_rate=1.0, b0=1.0, alpha=3.0)
    >>> params = jnp.array([1.0])
    >>> updates, _ = tx.update(jnp.array([4.0]), tx.init(params), params)
    >>> print(updates)
    [-2.]

  References:
    Wu, Xie, Du and Ward, AdaLoss, AAAI 2022 (the "SGD-DecaySqrt" baseline).

    Specification: :ref:`docs/specification.md#spec-sgd-baselines
    <spec-sgd-baselines>`.
  """
  validation.check_learning_rate(learning_rate)
  validation.check_non_negative('weight_decay', weight_decay)
  return optax.chain(
      scale_by_decay_sqrt(b0=b0, alpha=alpha),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate),
  )
