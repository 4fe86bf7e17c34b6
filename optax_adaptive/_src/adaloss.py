"""AdaLoss: a step size :math:`\\eta / b_t`; :math:`b_t^2` accumulates the loss.

AdaLoss (Wu, Xie, Du and Ward, AAAI 2022) divides the learning rate by
:math:`b_t`, where :math:`b_t^2` accumulates the *loss*: one scalar of state,
whatever the model size. Its baselines live in `sgd_baselines.py` (constant and
:math:`1/\\sqrt{t}` steps) and `adagrad_norm.py`.
"""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_adaptive._src import numerics, validation


class ScaleByAdaLossState(NamedTuple):
  """State of :func:`scale_by_adaloss`.

  Attributes:
    count: number of steps taken.
    accumulator: :math:`b_t^2 = b_0^2 + \\alpha \\sum_i |L_i - c|`.
    scale: the last step's factor :math:`1 / b_t`; the effective step size is
      the learning rate times ``scale``.
  """

  count: chex.Array  # shape=(), dtype=jnp.int32.
  accumulator: chex.Array  # shape=(), the default float dtype.
  scale: chex.Array  # shape=(), the default float dtype.


def scale_by_adaloss(
    b0: float = 1.0,
    alpha: float = 1.0,
    c: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates by :math:`1/b_t`; :math:`b_t^2` accumulates the loss.

  With :math:`L_t` the loss of step :math:`t` (passed to ``update`` as
  ``value``):

  .. math::
    b_t^2 = b_{t-1}^2 + \alpha |L_t - c|, \qquad
    u_t = g_t / b_t, \qquad b_0^2 = \texttt{b0}^2.

  The accumulator is updated before it scales the step, as in the authors'
  code.

  Non-finite inputs, for :func:`adaloss` too: a step whose loss is NaN or
  infinite, or would overflow the accumulator, is skipped: the accumulator
  stays as it was and the updates are zero (it would otherwise end the run with
  a step size of zero or NaN for good). A gradient entry that is not finite
  gets a zero update; the others step. ``count`` counts skipped steps too. In
  :func:`adaloss` the weight decay, which reads neither, still applies.

  Half precision: the accumulator is of the default float dtype (float32, or
  float64 under ``jax_enable_x64``) whatever the dtype of the parameters and
  of the loss; the updates keep the gradients' dtype.

  Args:
    b0: initial value of :math:`b`, > 0.
    alpha: weight of the loss in the accumulator, >= 0.
    c: offset subtracted from the loss, for losses whose minimum is not zero.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose ``update`` needs the
    keyword ``value``, the loss at the current parameters: a scalar, the mean
    over the batch.

  Example:
    >>> import jax.numpy as jnp, optax, optax_adaptive
    >>> loss_fn = lambda p: jnp.sum(p ** 2)
    >>> params = jnp.array([1.0, 2.0])
    >>> tx = optax.chain(optax_adaptive.scale_by_adaloss(b0=1.0),
    ...                  optax.scale_by_learning_rate(0.1))
    >>> state = tx.init(params)
    >>> loss, grads = jax.value_and_grad(loss_fn)(params)
    >>> updates, state = tx.update(grads, state, params, value=loss)
    >>> print(state[0].accumulator)
    6.0

  References:
    Wu, Xie, Du and Ward, `AdaLoss: A computationally-efficient and provably
    convergent adaptive gradient method <https://arxiv.org/abs/2109.08282>`_,
    AAAI 2022.

    Specification: :ref:`docs/specification.md#spec-adaloss <spec-adaloss>`.
  """
  validation.check_positive('b0', b0)
  validation.check_non_negative('alpha', alpha)
  validation.check_finite('c', c)

  def init_fn(params):
    del params
    accumulator = numerics.default_float(b0) ** 2
    return ScaleByAdaLossState(
        count=jnp.zeros([], jnp.int32),
        accumulator=accumulator,
        scale=jax.lax.rsqrt(accumulator),
    )

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del params, extra_args
    if value is None:
      raise ValueError(
          'scale_by_adaloss needs the loss of the step: call '
          '`update(grads, state, params, value=loss)`.'
      )
    validation.check_scalar_loss(value, 'scale_by_adaloss')
    accumulator = (state.accumulator + alpha * jnp.abs(value - c)).astype(
        state.accumulator.dtype
    )
    usable = jnp.isfinite(accumulator)
    accumulator = jnp.where(usable, accumulator, state.accumulator)
    scale = jax.lax.rsqrt(accumulator)
    updates = numerics.scale_finite_entries(updates, scale, usable)
    return updates, ScaleByAdaLossState(
        count=optax.safe_increment(state.count),
        accumulator=accumulator,
        scale=scale,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adaloss(
    learning_rate: optax.ScalarOrSchedule,
    b0: float = 1.0,
    alpha: float = 1.0,
    c: float = 0.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaLoss: SGD whose step size shrinks with the accumulated loss.

  .. math::
    b_t^2 = b_{t-1}^2 + \alpha |L_t - c|, \qquad
    p_{t+1} = p_t - \eta_t \left(g_t / b_t + \lambda p_t\right).

  The weight decay :math:`\lambda` is not divided by :math:`b_t`: the authors
  scale the loss, then take a torch SGD step with its own weight decay.
  The effective step size :math:`\eta_t / b_t` can be logged from the state:
  ``optax.tree.get(state, 'scale')`` is :math:`1 / b_t`.

  Non-finite inputs and half precision: see :func:`scale_by_adaloss`.

  Args:
    learning_rate: :math:`\eta_t`, a float or an optax schedule of the step.
    b0: initial value of :math:`b`; the paper's claim is robustness to it.
    alpha: weight of the loss in the accumulator.
    c: offset subtracted from the loss.
    weight_decay: :math:`\lambda`, L2 weight decay.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`; pass the loss as
    ``update(grads, state, params, value=loss)``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_adaptive
    >>> loss_fn = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> params = jnp.zeros(2)
    >>> tx = optax_adaptive.adaloss(learning_rate=0.5, b0=0.1)
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   loss, grads = jax.value_and_grad(loss_fn)(params)
    ...   updates, state = tx.update(grads, state, params, value=loss)
    ...   return optax.apply_updates(params, updates), state, loss
    >>> for _ in range(100):
    ...   params, state, loss = step(params, state)
    >>> print(f'{params[0]:.3f} {loss:.6f}')
    3.000 0.000000

  References:
    Wu, Xie, Du and Ward, `AdaLoss: A computationally-efficient and provably
    convergent adaptive gradient method <https://arxiv.org/abs/2109.08282>`_,
    AAAI 2022.

    Specification: :ref:`docs/specification.md#spec-adaloss <spec-adaloss>`.
  """
  validation.check_learning_rate(learning_rate)
  validation.check_non_negative('weight_decay', weight_decay)
  return optax.chain(
      scale_by_adaloss(b0=b0, alpha=alpha, c=c),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate),
  )
