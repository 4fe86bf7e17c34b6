"""Adam-L2, AdamW and AdamProx as in the scale-free AdamW paper.

Zhuang, Liu, Cutkosky and Orabona (TMLR 2022) show that AdamW's updates do not
change when the loss is multiplied by a constant (with a negligible ``eps``),
while Adam with an L2 term does, and propose AdamProx, the proximal form of the
decay. All three share Adam's moments (:func:`optax.scale_by_adam`, which is
PyTorch's Adam up to rounding); they differ only in where the decay enters.

In the authors' code the decoupled decay is ``weight_decay`` times the
schedule's *multiplier* :math:`s_t = \\eta_t / \\eta_0`, not times the learning
rate itself as in :func:`optax.adamw`.

Non-finite inputs and half-precision parameters: see :func:`adam_l2`.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_adaptive._src import numerics, validation

MaskOrFn = Any | Callable[[optax.Params], Any] | None


class ScheduledWeightDecayState(NamedTuple):
  """State of :func:`add_decoupled_weight_decay`/:func:`proximal_weight_decay`.

  Attributes:
    count: number of steps taken.
    base_learning_rate: :math:`\\eta_0`, the rate the schedule's multiplier
      :math:`s_t = \\eta_t / \\eta_0` is relative to.
    decay: the last step's decay coefficient, :math:`\\lambda s_t` (or
      :math:`\\lambda \\eta_t` with ``decay_with_learning_rate``).
  """

  count: chex.Array  # shape=(), dtype=jnp.int32.
  base_learning_rate: chex.Array  # shape=(), the default float dtype.
  decay: chex.Array  # shape=(), the default float dtype.


def _scheduled_weight_decay(
    apply_decay: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    weight_decay: float,
    learning_rate: optax.ScalarOrSchedule,
    base_learning_rate: float | None,
    decay_with_learning_rate: bool,
    mask: MaskOrFn,
) -> optax.GradientTransformationExtraArgs:
  """A decay whose coefficient follows the learning rate's schedule.

  `apply_decay(update, param, coefficient)` returns the decayed update of one
  leaf. The base rate is read once, at `init`: under `optax.inject_hyperparams`
  the injected rate at step 0 is then the base of the later ones.
  """
  validation.check_non_negative('weight_decay', weight_decay)
  validation.check_learning_rate(learning_rate)
  if base_learning_rate is None and not decay_with_learning_rate:
    initial = learning_rate(0) if callable(learning_rate) else learning_rate
    try:
      validation.check_positive('learning_rate', initial)
    except ValueError as error:
      raise ValueError(
          f'{error} The decay is scaled by learning_rate(t) / learning_rate(0):'
          ' pass `base_learning_rate` for a schedule that starts at zero.'
      ) from None
  elif base_learning_rate is not None:
    validation.check_positive('base_learning_rate', base_learning_rate)

  def rate_at(count):
    rate = learning_rate(count) if callable(learning_rate) else learning_rate
    return jnp.asarray(rate, dtype=jnp.result_type(float))

  def init_fn(params):
    del params
    base = (
        rate_at(0)
        if base_learning_rate is None
        else jnp.asarray(base_learning_rate, jnp.result_type(float))
    )
    return ScheduledWeightDecayState(
        count=jnp.zeros([], jnp.int32),
        base_learning_rate=base,
        decay=jnp.zeros_like(base),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(
          'This weight decay needs the parameters: call '
          '`update(updates, state, params)`.'
      )
    rate = rate_at(state.count)
    multiplier = (
        rate if decay_with_learning_rate else (rate / state.base_learning_rate)
    )
    decay = (weight_decay * multiplier).astype(state.decay.dtype)
    updates = jax.tree.map(
        lambda u, p: apply_decay(u, p, decay).astype(u.dtype), updates, params
    )
    return updates, ScheduledWeightDecayState(
        count=optax.safe_increment(state.count),
        base_learning_rate=state.base_learning_rate,
        decay=decay,
    )

  transform = optax.GradientTransformationExtraArgs(init_fn, update_fn)
  if mask is not None:
    return optax.masked(transform, mask)
  return transform


def add_decoupled_weight_decay(
    weight_decay: float,
    learning_rate: optax.ScalarOrSchedule,
    *,
    base_learning_rate: float | None = None,
    decay_with_learning_rate: bool = False,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adds AdamW's decoupled decay, scaled by the schedule's multiplier.

  Placed after the learning rate in a chain, it turns the step :math:`u_t` into

  .. math::
    u_t - \lambda s_t p_t, \qquad s_t = \eta_t / \eta_0,

  so that :math:`p_{t+1} = (1 - \lambda s_t) p_t + u_t`, as in the
  authors' code and in Loshchilov and Hutter's Algorithm 2. With
  ``decay_with_learning_rate=True`` the coefficient is :math:`\lambda \eta_t`,
  the form of PyTorch's ``AdamW`` and :func:`optax.adamw`.

  Args:
    weight_decay: :math:`\lambda \ge 0`.
    learning_rate: the rate of the optimizer this decay accompanies (a float
      or an optax schedule); only its multiplier :math:`s_t` is used.
    base_learning_rate: :math:`\eta_0`; by default the rate at step 0. Give it
      for a schedule that starts at zero (a warmup).
    decay_with_learning_rate: use :math:`\lambda \eta_t` instead of
      :math:`\lambda s_t`.
    mask: a tree of booleans, or a function of the parameters returning one,
      that selects the leaves to decay (as in :func:`optax.adamw`).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax.numpy as jnp, optax_adaptive
    >>> tx = optax_adaptive.add_decoupled_weight_decay(0.5, learning_rate=0.1)
    >>> params = jnp.array([2.0])
    >>> updates, state = tx.update(jnp.array([0.0]), tx.init(params), params)
    >>> print(updates, state.decay)
    [-1.] 0.5

  References:
    Zhuang, Liu, Cutkosky and Orabona, `Understanding AdamW through proximal
    methods and scale-freeness <https://arxiv.org/abs/2202.00089>`_, TMLR 2022.

    Specification: :ref:`docs/specification.md#spec-weight-decay
    <spec-weight-decay>`.
  """
  return _scheduled_weight_decay(
      lambda u, p, decay: u - decay * p,
      weight_decay,
      learning_rate,
      base_learning_rate,
      decay_with_learning_rate,
      mask,
  )


def proximal_weight_decay(
    weight_decay: float,
    learning_rate: optax.ScalarOrSchedule,
    *,
    base_learning_rate: float | None = None,
    decay_with_learning_rate: bool = False,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Applies the proximal step of the squared L2 regulariser (AdamProx).

  Placed after the learning rate in a chain, it turns the step :math:`u_t` into

  .. math::
    \frac{u_t - \lambda s_t p_t}{1 + \lambda s_t}, \qquad s_t = \eta_t / \eta_0,

  so that :math:`p_{t+1} = (p_t + u_t) / (1 + \lambda s_t)`: the minimiser of
  :math:`\tfrac{\lambda s_t}{2}\|p\|^2 + \tfrac12\|p - (p_t + u_t)\|^2`.

  Args:
    weight_decay: :math:`\lambda \ge 0`.
    learning_rate: the rate of the optimizer this decay accompanies; only its
      multiplier :math:`s_t` is used.
    base_learning_rate: :math:`\eta_0`; by default the rate at step 0.
    decay_with_learning_rate: use :math:`\lambda \eta_t` instead of
      :math:`\lambda s_t`.
    mask: a tree of booleans, or a function of the parameters returning one,
      that selects the leaves to decay.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax.numpy as jnp, optax_adaptive
    >>> tx = optax_adaptive.proximal_weight_decay(1.0, learning_rate=0.1)
    >>> params = jnp.array([2.0])
    >>> updates, _ = tx.update(jnp.array([0.0]), tx.init(params), params)
    >>> print(params + updates)
    [1.]

  References:
    Zhuang, Liu, Cutkosky and Orabona, `Understanding AdamW through proximal
    methods and scale-freeness <https://arxiv.org/abs/2202.00089>`_, TMLR 2022.

    Specification: :ref:`docs/specification.md#spec-weight-decay
    <spec-weight-decay>`.
  """
  return _scheduled_weight_decay(
      lambda u, p, decay: (u - decay * p) / (1 + decay),
      weight_decay,
      learning_rate,
      base_learning_rate,
      decay_with_learning_rate,
      mask,
  )


def _scale_by_adam(
    b1, b2, eps, mu_dtype, nu_dtype
) -> optax.GradientTransformation:
  """optax's Adam scaling, checked, with unusable gradient entries as zeros.

  An entry that is NaN or infinite, or whose square overflows the second
  moment's dtype, enters the moments as a zero (as :func:`optax.zero_nans` does
  for NaN), so the moments stay finite. Where every entry is usable, the
  updates and the state are those of :func:`optax.scale_by_adam` with moments
  in the dtypes of `numerics.moment_dtype`; the state is its state.
  """
  validation.check_beta('b1', b1)
  validation.check_beta('b2', b2)
  validation.check_non_negative('eps', eps)

  def init_fn(params):
    return optax.ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=numerics.zeros_like_moments(params, mu_dtype),
        nu=numerics.zeros_like_moments(params, nu_dtype),
    )

  def update_fn(updates, state, params=None):
    del params

    def usable_entries(g, m, v):
      # The square is taken in the second moment's dtype, so a float16
      # gradient up to its largest value is usable with float32 moments.
      return jnp.isfinite(jnp.square(g.astype(v.dtype))) & jnp.isfinite(
          g.astype(m.dtype)
      )

    # The selection fuses into the passes that read the gradient. Keeping an
    # entry's moments and freezing it instead needs the gradient once more in
    # the parameter update: 1.11 times the step on a CPU.
    grads = jax.tree.map(
        lambda g, m, v: jnp.where(usable_entries(g, m, v), g, 0),
        updates,
        state.mu,
        state.nu,
    )
    mu = optax.tree.update_moment(grads, state.mu, b1, 1)
    nu = jax.tree.map(
        lambda g, v: (1 - b2)
        * jnp.square(g.astype(jnp.promote_types(g.dtype, v.dtype)))
        + b2 * v,
        grads,
        state.nu,
    )
    count = optax.safe_increment(state.count)
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    nu_hat = optax.tree.bias_correction(nu, b2, count)
    # With eps = 0, a zero second moment (zero gradients so far) gives 0 / 0.
    steps = jax.tree.map(
        lambda m, v, g: jnp.where(
            (v > 0) | (eps > 0), m / (jnp.sqrt(v) + eps), 0
        ).astype(g.dtype),
        mu_hat,
        nu_hat,
        updates,
    )
    return steps, optax.ScaleByAdamState(
        count=count,
        mu=optax.tree.cast_like(mu, state.mu),
        nu=optax.tree.cast_like(nu, state.nu),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def adam_l2(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: MaskOrFn = None,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam with an L2 penalty added to the gradient (PyTorch's ``Adam``).

  .. math::
    \tilde g_t = g_t + \lambda p_t, \qquad
    p_{t+1} = p_t - \eta_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon},

  with :math:`\hat m_t, \hat v_t` the bias-corrected moments of
  :math:`\tilde g_t`. The same as ``optax.chain(optax.add_decayed_weights(wd),
  optax.adam(lr))``; unlike :func:`adamw` it is not scale-free: the penalty's
  weight relative to the loss changes when the loss is rescaled.

  Non-finite inputs, for the three methods of the paper (:func:`adamw` and
  :func:`adam_prox` point here). A gradient entry that is NaN or infinite, or
  whose square overflows the second moment's dtype (above about 1.8e19 in
  float32), counts as zero, entry by entry, as :func:`optax.zero_nans` does for
  NaN: its moments decay as for a zero gradient and it moves on its momentum,
  while the other entries step as usual. The selection costs nothing in memory
  traffic, as it happens in the passes that read the gradient anyway; the
  moments, hence the parameters, stay finite. Adam-L2's penalty is part of the
  gradient and is zeroed with it; the decay of AdamW and AdamProx does not read
  the gradient and still applies. With ``eps=0``, an entry whose second moment
  is zero gets a zero step instead of 0 / 0. The loss is not read. Wrap an
  alias in :func:`optax.apply_if_finite` to skip every step with any
  non-finite gradient entry, moments and all (one more read of the gradient).

  Half precision: the moments of float16 and bfloat16 parameters are float32
  by default, so a float16 gradient of any finite size (up to 65504) and an
  ``eps`` of 1e-8 (below float16's smallest number) are used as given; the
  updates keep the parameters' dtype. ``mu_dtype`` and ``nu_dtype`` choose
  other dtypes; a narrower ``nu_dtype`` makes smaller gradients unusable.

  Args:
    learning_rate: :math:`\eta_t`, a float or an optax schedule.
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to :math:`\sqrt{\hat v_t}`.
    weight_decay: :math:`\lambda`, the L2 coefficient.
    mask: selects the leaves to penalise (a tree of booleans or a function).
    mu_dtype: dtype of the first moment; by default that of the parameters,
      or float32 for float16 and bfloat16 parameters.
    nu_dtype: dtype of the second moment, with the same default.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_adaptive
    >>> loss_fn = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> params = jnp.zeros(3)
    >>> tx = optax_adaptive.adam_l2(0.1, weight_decay=1e-4)
    >>> state = tx.init(params)
    >>> for _ in range(200):
    ...   updates, state = tx.update(jax.grad(loss_fn)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> print(jnp.round(params, 2))
    [1. 1. 1.]

  References:
    Zhuang, Liu, Cutkosky and Orabona, `Understanding AdamW through proximal
    methods and scale-freeness <https://arxiv.org/abs/2202.00089>`_, TMLR 2022.

    Specification: :ref:`docs/specification.md#spec-weight-decay
    <spec-weight-decay>`.
  """
  validation.check_learning_rate(learning_rate)
  validation.check_non_negative('weight_decay', weight_decay)
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask),
      _scale_by_adam(b1, b2, eps, mu_dtype, nu_dtype),
      optax.scale_by_learning_rate(learning_rate),
  )


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: MaskOrFn = None,
    *,
    base_learning_rate: float | None = None,
    decay_with_learning_rate: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdamW with the decay scaled by the schedule's multiplier (scale-free).

  .. math::
    p_{t+1} = (1 - \lambda s_t)\, p_t
      - \eta_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon},
    \qquad s_t = \eta_t / \eta_0.

  **Relation to optax.** :func:`optax.adamw` decays by :math:`\lambda \eta_t`.
  With :math:`\eta_0` the learning rate at step 0,
  ``optax_adaptive.adamw(lr, weight_decay=wd)`` equals
  ``optax.adamw(lr, weight_decay=wd / lr_0)``, and
  ``decay_with_learning_rate=True`` gives optax's (and PyTorch's) form
  directly. This form is the one of the authors' code and of Loshchilov and
  Hutter's paper, and the one whose updates do not change when the loss is
  multiplied by a constant (with :math:`\epsilon \to 0`).

  Non-finite inputs and half precision: see :func:`adam_l2`.

  Args:
    learning_rate: :math:`\eta_t`, a float or an optax schedule.
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to :math:`\sqrt{\hat v_t}`.
    weight_decay: :math:`\lambda \ge 0`.
    mask: selects the leaves to decay (a tree of booleans or a function).
    base_learning_rate: :math:`\eta_0`; by default the rate at step 0 (give it
      for a schedule that starts at zero).
    decay_with_learning_rate: decay by :math:`\lambda \eta_t` (optax's form).
    mu_dtype: dtype of the first moment; by default that of the parameters,
      or float32 for float16 and bfloat16 parameters.
    nu_dtype: dtype of the second moment, with the same default.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax.numpy as jnp, optax, optax_adaptive
    >>> params = {'w': jnp.ones(3)}
    >>> grads = {'w': jnp.array([1.0, -2.0, 0.5])}
    >>> mine = optax_adaptive.adamw(0.01, weight_decay=0.1)
    >>> theirs = optax.adamw(0.01, weight_decay=0.1 / 0.01)
    >>> u1, _ = mine.update(grads, mine.init(params), params)
    >>> u2, _ = theirs.update(grads, theirs.init(params), params)
    >>> print(jnp.allclose(u1['w'], u2['w']))
    True

  References:
    Zhuang, Liu, Cutkosky and Orabona, `Understanding AdamW through proximal
    methods and scale-freeness <https://arxiv.org/abs/2202.00089>`_, TMLR 2022;
    Loshchilov and Hutter, `Decoupled weight decay regularization
    <https://arxiv.org/abs/1711.05101>`_, ICLR 2019.

    Specification: :ref:`docs/specification.md#spec-weight-decay
    <spec-weight-decay>`.
  """
  return optax.chain(
      _scale_by_adam(b1, b2, eps, mu_dtype, nu_dtype),
      optax.scale_by_learning_rate(learning_rate),
      add_decoupled_weight_decay(
          weight_decay,
          learning_rate,
          base_learning_rate=base_learning_rate,
          decay_with_learning_rate=decay_with_learning_rate,
          mask=mask,
      ),
  )


def adam_prox(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: MaskOrFn = None,
    *,
    base_learning_rate: float | None = None,
    decay_with_learning_rate: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdamProx: an Adam step followed by the proximal step of the L2 penalty.

  .. math::
    p_{t+1} = \frac{p_t - \eta_t \hat m_t / (\sqrt{\hat v_t} + \epsilon)}
      {1 + \lambda s_t}, \qquad s_t = \eta_t / \eta_0.

  To first order in :math:`\lambda s_t` this is :func:`adamw`; it is
  scale-free in the same way. optax has no built-in equivalent.

  Non-finite inputs and half precision: see :func:`adam_l2`.

  Args:
    learning_rate: :math:`\eta_t`, a float or an optax schedule.
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to :math:`\sqrt{\hat v_t}`.
    weight_decay: :math:`\lambda \ge 0`.
    mask: selects the leaves to decay (a tree of booleans or a function).
    base_learning_rate: :math:`\eta_0`; by default the rate at step 0.
    decay_with_learning_rate: use :math:`\lambda \eta_t` in place of
      :math:`\lambda s_t`.
    mu_dtype: dtype of the first moment; by default that of the parameters,
      or float32 for float16 and bfloat16 parameters.
    nu_dtype: dtype of the second moment, with the same default.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax.numpy as jnp, optax, optax_adaptive
    >>> params = jnp.array([1.0, 1.0])
    >>> tx = optax_adaptive.adam_prox(0.1, weight_decay=1.0)
    >>> updates, _ = tx.update(jnp.array([1.0, -1.0]), tx.init(params), params)
    >>> print(jnp.round(optax.apply_updates(params, updates), 4))
    [0.45 0.55]

  References:
    Zhuang, Liu, Cutkosky and Orabona, `Understanding AdamW through proximal
    methods and scale-freeness <https://arxiv.org/abs/2202.00089>`_, TMLR 2022.

    Specification: :ref:`docs/specification.md#spec-weight-decay
    <spec-weight-decay>`.
  """
  return optax.chain(
      _scale_by_adam(b1, b2, eps, mu_dtype, nu_dtype),
      optax.scale_by_learning_rate(learning_rate),
      proximal_weight_decay(
          weight_decay,
          learning_rate,
          base_learning_rate=base_learning_rate,
          decay_with_learning_rate=decay_with_learning_rate,
          mask=mask,
      ),
  )
