"""AdaDiff: Adam whose second moment also tracks the change of the gradient.

Non-finite inputs and half-precision parameters: see :func:`scale_by_adadiff`.
"""

import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_adaptive._src import numerics, validation


class ScaleByAdaDiffState(NamedTuple):
  """State of :func:`scale_by_adadiff`.

  Attributes:
    count: number of steps taken.
    mu: first moment of the gradient.
    nu: second moment of the gradient and of its change; with
      ``accumulate_eps`` it also holds every step's ``eps``.
    previous_updates: the previous step's gradient (zero before the first).
  """

  count: chex.Array  # shape=(), dtype=jnp.int32.
  mu: optax.Updates
  nu: optax.Updates
  previous_updates: optax.Updates


def scale_by_adadiff(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    accumulate_eps: bool = True,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates by AdaDiff's moments.

  .. math::
    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \\
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) \left(g_t^2
      + (g_t - g_{t-1})^2\right) + \epsilon, \\
    u_t = \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t} \frac{m_t}{\sqrt{v_t}},

  with :math:`g_0 = 0`. The :math:`+\epsilon` is the authors' code: it is added
  to the stored :math:`v_t` every step (as in AdaBelief's code), so it
  accumulates. ``accumulate_eps=False`` gives the textbook form
  :math:`u_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon)` with :math:`v_t`
  free of :math:`\epsilon`.

  Non-finite inputs, for :func:`adadiff` too: an entry whose gradient is NaN,
  infinite, or too large for :math:`g_t^2 + (g_t - g_{t-1})^2` to be sure to
  stay finite in the second moment's dtype (:math:`|g_t| > \sqrt{\max} / 3`,
  about 6.1e18 in float32), or for the first moment's, keeps :math:`m, v` and
  :math:`g_{t-1}` and gets a zero update, so the next change
  :math:`g_t - g_{t-1}` is taken from the last usable gradient. An entry whose
  step is not finite (``eps=0`` with :math:`v = 0`) gets a zero update.
  ``count`` advances. In :func:`adadiff` the L2 term, part of the gradient, is
  skipped with it, so that entry keeps its parameter; the other entries step.
  The loss is not read.

  Half precision: the state of float16 and bfloat16 parameters is float32 by
  default, so every finite float16 gradient (up to 65504) is usable and the
  accumulating ``eps`` is not lost; the updates keep the gradients' dtype.

  Args:
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: the stabiliser, >= 0; the authors' PTB runs use 1e-16.
    accumulate_eps: the authors' form (True) or the textbook form (False).
    mu_dtype: dtype of ``mu`` and ``previous_updates``; by default that of the
      parameters, or float32 for float16 and bfloat16 parameters.
    nu_dtype: dtype of ``nu``, with the same default.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax.numpy as jnp, optax, optax_adaptive
    >>> tx = optax.chain(optax.clip_by_global_norm(1.0),
    ...                  optax_adaptive.scale_by_adadiff(),
    ...                  optax.scale_by_learning_rate(1e-3))
    >>> params = {'w': jnp.ones(3)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.full(3, 0.1)}, state, params)
    >>> print(jnp.round(updates['w'] * 1e3, 4))
    [-0.7069 -0.7069 -0.7069]

  References:
    Huang et al., AdaDiff: Adaptive gradient descent with the differential of
    gradient, 2021 (code: `deerOfHd/AdaDiff_v1
    <https://github.com/deerOfHd/AdaDiff_v1>`_).

    Specification: :ref:`docs/specification.md#spec-adadiff <spec-adadiff>`.
  """
  validation.check_beta('b1', b1)
  validation.check_beta('b2', b2)
  validation.check_non_negative('eps', eps)

  def init_fn(params):
    return ScaleByAdaDiffState(
        count=jnp.zeros([], jnp.int32),
        mu=numerics.zeros_like_moments(params, mu_dtype),
        nu=numerics.zeros_like_moments(params, nu_dtype),
        previous_updates=numerics.zeros_like_moments(params, mu_dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    count = optax.safe_increment(state.count)

    # An entry is usable when every square it feeds the second moment stays
    # finite in its dtype: |g| <= sqrt(max) / 3 bounds g^2 + (g - g_prev)^2 by
    # 5/9 of the largest float, as g_prev passed the same test; and when the
    # first moment and g_prev, averages of usable gradients, can hold it. A
    # test of g alone keeps the old g_prev out of the passes that update m and
    # the parameters.
    def usable_entries(g, m, v):
      limit = min(
          math.sqrt(jnp.finfo(v.dtype).max) / 3, float(jnp.finfo(m.dtype).max)
      )
      # Compared in the second moment's dtype, where the limit is finite.
      return jnp.abs(g.astype(jnp.promote_types(g.dtype, v.dtype))) <= limit

    usable = jax.tree.map(usable_entries, updates, state.mu, state.nu)

    def first_moment(ok, g, m):
      return jnp.where(ok, b1 * m + (1 - b1) * g, m)

    def second_moment(ok, g, g_prev, v):
      # In the second moment's dtype: a float16 gradient's square overflows.
      g = g.astype(jnp.promote_types(g.dtype, v.dtype))
      new = b2 * v + (1 - b2) * (jnp.square(g) + jnp.square(g - g_prev))
      return jnp.where(ok, new + eps if accumulate_eps else new, v)

    def remembered_gradient(ok, g, g_prev, v):
      # `v >= 0` holds wherever `ok` does; reading the new second moment makes
      # this write of g_prev come after its read there, so XLA overwrites the
      # donated buffer in place instead of copying it first.
      return jnp.where(ok & (v >= 0), g, g_prev)

    mu = jax.tree.map(first_moment, usable, updates, state.mu)
    nu = jax.tree.map(
        second_moment, usable, updates, state.previous_updates, state.nu
    )
    previous_updates = jax.tree.map(
        remembered_gradient,
        usable,
        optax.tree.cast_like(updates, state.previous_updates),
        state.previous_updates,
        nu,
    )
    if accumulate_eps:
      step_size = jnp.sqrt(1 - b2**count) / (1 - b1**count)
      new_updates = jax.tree.map(
          lambda m, v: step_size * m / jnp.sqrt(v), mu, nu
      )
    else:
      mu_hat = optax.tree.bias_correction(mu, b1, count)
      nu_hat = optax.tree.bias_correction(nu, b2, count)
      new_updates = jax.tree.map(
          lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat
      )
    # A step that is not finite (eps = 0 with a zero second moment) is zero.
    new_updates = jax.tree.map(
        lambda ok, u: jnp.where(ok & jnp.isfinite(u), u, 0), usable, new_updates
    )
    new_updates = optax.tree.cast_like(new_updates, updates)
    return new_updates, ScaleByAdaDiffState(
        count=count,
        mu=optax.tree.cast_like(mu, state.mu),
        nu=optax.tree.cast_like(nu, state.nu),
        previous_updates=previous_updates,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adadiff(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    accumulate_eps: bool = True,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaDiff: Adam whose second moment also tracks :math:`(g_t - g_{t-1})^2`.

  .. math::
    \tilde g_t = g_t + \lambda p_t, \qquad
    p_{t+1} = p_t - \eta_t \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}
      \frac{m_t}{\sqrt{v_t}},

  with :math:`m_t, v_t` as in :func:`scale_by_adadiff`, computed from
  :math:`\tilde g_t` (the L2 term is part of the remembered gradient, as in the
  authors' code). Compared with :func:`optax.adam`, the second moment grows
  where the gradient oscillates, which shortens the step there.

  Non-finite inputs and half precision: see :func:`scale_by_adadiff`.

  Args:
    learning_rate: :math:`\eta_t`, a float or an optax schedule.
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: the stabiliser, >= 0.
    weight_decay: :math:`\lambda`, L2 penalty added to the gradient.
    accumulate_eps: the authors' accumulating ``eps`` (True) or the textbook
      :math:`\hat m_t / (\sqrt{\hat v_t} + \epsilon)` (False).
    mu_dtype: dtype of the first moment and of the remembered gradient; by
      default that of the parameters, or float32 for float16 and bfloat16
      parameters.
    nu_dtype: dtype of the second moment, with the same default.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_adaptive
    >>> loss_fn = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> params = jnp.zeros(3)
    >>> tx = optax_adaptive.adadiff(learning_rate=0.1)
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(jax.grad(loss_fn)(params), state, params)
    ...   return optax.apply_updates(params, updates), state
    >>> for _ in range(300):
    ...   params, state = step(params, state)
    >>> print(jnp.round(params, 2))
    [1. 1. 1.]

  References:
    Huang et al., AdaDiff: Adaptive gradient descent with the differential of
    gradient, 2021 (code: `deerOfHd/AdaDiff_v1
    <https://github.com/deerOfHd/AdaDiff_v1>`_).

    Specification: :ref:`docs/specification.md#spec-adadiff <spec-adadiff>`.
  """
  validation.check_learning_rate(learning_rate)
  validation.check_non_negative('weight_decay', weight_decay)
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      scale_by_adadiff(
          b1=b1,
          b2=b2,
          eps=eps,
          accumulate_eps=accumulate_eps,
          mu_dtype=mu_dtype,
          nu_dtype=nu_dtype,
      ),
      optax.scale_by_learning_rate(learning_rate),
  )
