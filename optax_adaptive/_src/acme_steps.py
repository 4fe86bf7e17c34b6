"""The steps of one ACME update, named after the algorithm's.

:func:`optax_adaptive.acme`'s ``update`` is these in order: the starting
moments (:func:`starting_moments`), ASAM's gradient (:func:`asam_gradient`),
the damped moment update (:func:`damped_moment_update`), then either the look
as the step (:func:`fixed_rate_step`) or the look, fit and leap
(:func:`fitted_step`), and the rejection of a step that read a non-finite
quantity (:func:`accept_or_reject`); ``docs/specification.md#spec-acme``
describes each.

Every per-entry quantity is computed in float32 at least, leaf by leaf; the
tree-wide scalars (sums over every leaf, the losses, the tests on them) pass
through ``numerics.settled`` before any leaf reads them, which keeps the
compiled program linear in the number of leaves.
"""

from collections.abc import Callable
import functools
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_adaptive._src import numerics
from optax_adaptive._src.acme_table import AcmeBranch, step_size_table

_SCHEDULE_FLOOR = 0.01


class AcmeState(NamedTuple):
  """State of :func:`acme`.

  Attributes:
    count: number of ``update`` calls.
    mu: first moment (per parameter).
    nu: second moment (per parameter); None without ``adam``, which never
      reads it.
    adapted_learning_rate: the adapted learning rate, to use at the next step.
    step: the algorithm's step :math:`t`, from 1; a rejected step resets it
      to 1 (it drives the bias corrections and the internal schedule). 0 until
      the moments are initialised: at the first call, or at a later one if the
      first call's gradient gave moments that are not finite.
    schedule_factor: the internal cosine factor on the leap, from 1 down to
      0.01 over ``schedule_steps``.
    branch: the row of the step-size table the last step took, an
      :class:`AcmeBranch` (0 to 7; -1 without ``adapt_learning_rate`` and
      before the first step, -2 for a rejected step).
    num_rejected: number of steps rejected for a non-finite quantity.
  """

  count: chex.Array  # shape=(), dtype=jnp.int32.
  mu: optax.Updates
  nu: optax.Updates | None
  adapted_learning_rate: chex.Array  # shape=(), the default float dtype.
  step: chex.Array  # shape=(), dtype=jnp.int32.
  schedule_factor: chex.Array  # shape=(), the default float dtype.
  branch: chex.Array  # shape=(), dtype=jnp.int32, an AcmeBranch.
  num_rejected: chex.Array  # shape=(), dtype=jnp.int32.


def _default_asam_mask(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


class Settings(NamedTuple):
  """The hyperparameters a step reads (floats may be injected arrays)."""

  b1: Any
  b2: Any
  eps: Any
  weight_decay: Any
  rho: Any
  eta: Any
  max_learning_rate: Any
  adam: bool
  asam: bool
  nesterov: bool
  bias_correction: bool
  adapt_learning_rate: bool
  schedule_steps: Any  # an int, or an injected array
  asam_mask: Any  # a tree of booleans, a function of the parameters, or None


class _Moments(NamedTuple):
  """The moments at one stage of a step, in float32 at least."""

  mu: optax.Updates
  nu: optax.Updates | None  # None without Adam's denominator


def _bias_corrections(t, settings: Settings):
  """:math:`c_1 = 1 - \\beta_1^t`, :math:`c_2 = 1 - \\beta_2^t` (1 without)."""
  if not settings.bias_correction:
    return 1.0, 1.0
  return 1 - settings.b1**t, 1 - settings.b2**t


def _adam_or_sgd_denominators(
    moments: _Moments, grads, corrections, rate_dtype, settings
):
  """The step's denominators: :math:`c_1` without Adam, else per leaf

  :math:`D = (\\sqrt{v / c_2} + \\epsilon)\\, c_1`.
  """
  c1, c2 = corrections
  if settings.adam:
    return jax.tree.map(
        lambda v: (jnp.sqrt(v / c2) + settings.eps) * c1, moments.nu
    )
  return jax.tree.map(lambda _: jnp.asarray(c1, rate_dtype), grads)


def _unit_scale(grads):
  """Denominators of 1: SGD's damping sums are plain sums."""
  return jax.tree.map(lambda _: 1.0, grads)


def _kept_exactly(computed, stored) -> bool:
  """Whether a moment leaf computed as `computed` is stored as it is.

  Where it is, a finite computed moment is a storable one; where the state
  keeps a narrower dtype, the cast can overflow and must be checked.
  """
  return jnp.dtype(computed.dtype) == jnp.dtype(stored.dtype)


def _storable_when_cast(moments: _Moments, state) -> jax.Array:
  """Whether the leaves that the state keeps in another dtype stay finite.

  Leaves kept in their computed dtype need no check of their own: the sums
  that the damping reads are finite only if the gradient and the moments
  that produce them are (see :func:`damped_moment_update`).
  """

  def check(computed, stored):
    if _kept_exactly(computed, stored):
      return jnp.asarray(True)
    return jnp.all(jnp.isfinite(computed.astype(stored.dtype)))

  flags = jax.tree.leaves(jax.tree.map(check, moments.mu, state.mu))
  if moments.nu is not None:
    flags += jax.tree.leaves(jax.tree.map(check, moments.nu, state.nu))
  return _all(flags)


def _all(flags) -> jax.Array:
  return functools.reduce(jnp.logical_and, flags, jnp.asarray(True))


def starting_moments(state, grads0, settings: Settings):
  """The state's moments, or at the first step the authors' initial ones.

  The authors initialise the moments once, when the state is empty:
  :math:`m = (1 - \\beta_1) g_0` and :math:`v` the mean of :math:`g_0^2` over
  each leaf; a rejection does not empty the state.

  Returns:
    ``(moments, storable, finite)``: ``storable`` says whether the moments
    can be stored, which initial moments spoiled by a non-finite gradient
    cannot; ``finite`` says whether they are finite in the dtypes they are
    computed in, where the damping's sums do not show it (Adam's initial
    :math:`v`, whose mean square can overflow for a finite gradient).
  """
  initialized = state.step > 0
  first_mu = optax.tree.scale(
      (1 - settings.b1) if settings.bias_correction else 1.0, grads0
  )
  mu = optax.tree.where(initialized, numerics.widened(state.mu), first_mu)
  if not settings.adam:
    storable = _all(
        jnp.all(jnp.isfinite(m.astype(stored.dtype)))
        for m, stored in zip(
            jax.tree.leaves(first_mu), jax.tree.leaves(state.mu)
        )
    )
    return _Moments(mu, None), numerics.settled(initialized | storable), True
  means = jax.tree.map(lambda g: jnp.mean(jnp.square(g)), grads0)
  # A leaf without elements has a NaN mean square and nothing to fill.
  first_nu = jax.tree.map(jnp.full_like, grads0, means)
  nu = optax.tree.where(initialized, numerics.widened(state.nu), first_nu)
  storable_flags, finite_flags = [], []
  for g, mean, m, stored_m, stored_v in zip(
      *map(jax.tree.leaves, (grads0, means, first_mu, state.mu, state.nu))
  ):
    if g.size == 0:
      continue
    # A finite mean square means a finite gradient, hence a finite m.
    storable_flags.append(jnp.isfinite(mean.astype(stored_v.dtype)))
    if not _kept_exactly(m, stored_m):
      storable_flags.append(jnp.all(jnp.isfinite(m.astype(stored_m.dtype))))
    finite_flags.append(jnp.isfinite(mean))
  storable, finite = numerics.settled(
      initialized | _all(storable_flags), initialized | _all(finite_flags)
  )
  return _Moments(mu, nu), storable, finite


def _damping_sums(moments: _Moments, grads, denominators):
  """:math:`\\sum m g / D`, :math:`\\sum m^2 / D`, :math:`\\sum g^2 / D`."""
  return (
      numerics.weighted_sum(moments.mu, grads, denominators),
      numerics.weighted_sum(moments.mu, moments.mu, denominators),
      numerics.weighted_sum(grads, grads, denominators),
  )


def damped_moment_update(
    moments: _Moments, grads, sums, state, settings: Settings
):
  """The moments after a gradient, damped so the momentum does not grow much.

  The gradient is scaled by :math:`f = \\min(k, 1)`, :math:`k` the factor at
  which the new momentum's :math:`\\sum m^2 / D` is twice the old one's, from
  the sums ``(pg, pp, gg)`` of :func:`_damping_sums` (:math:`D` = 1 without
  Adam's denominator), before the usual exponential averages
  (``docs/specification.md#spec-acme-damping``).

  Returns:
    ``(moments, finite)``: the new moments, and whether the sums are finite
    and the new moments storable. Finite sums mean a finite gradient (its
    squares are summed) and, with finite moments before, finite moments
    after: each new one lies between the old one and the damped gradient (or
    its square). Only a cast to a narrower state dtype needs its own check.
  """
  b1 = settings.b1
  pg, pp, gg = sums
  root = jnp.sqrt((2 - b1**2) * gg * pp + b1**2 * pg**2)
  k = (b1 * pg - root) / (gg * (b1 - 1))
  # k >= 0 in exact arithmetic (pg**2 <= pp * gg); a negative k comes from
  # products that underflow when the gradient is negligible beside the
  # momentum, where the exact k is large: no damping, as for k >= 1. A zero
  # momentum (pp = 0) gives k = 0, which would keep it zero for good: it takes
  # the gradient undamped instead.
  damping = numerics.settled(jnp.where((pp > 0) & (k >= 0) & (k < 1), k, 1.0))
  damped = jax.tree.map(lambda g: damping * g, grads)
  mu = optax.tree.update_moment(damped, moments.mu, b1, 1)
  nu = None
  if settings.adam:
    nu = optax.tree.update_moment_per_elem_norm(
        damped, moments.nu, settings.b2, 2
    )
  new = _Moments(mu, nu)
  finite = (
      jnp.isfinite(pg)
      & jnp.isfinite(pp)
      & jnp.isfinite(gg)
      & _storable_when_cast(new, state)
  )
  return new, finite


def asam_gradient(params, grads0, denominators, loss_and_grad, settings):
  """The gradient at ASAM's adversarial point :math:`p_0 + e`.

  :math:`e = \\rho\\, h w^2 / \\|h w\\|`, :math:`h = g_0 / D` (:math:`g_0`
  without Adam's denominator), with :math:`w = |p_0| + \\eta` on the weight
  leaves (``asam_mask``, by default those of rank >= 2) and 1 on the others.
  """
  params0 = numerics.widened(params)
  h = grads0
  if settings.adam:
    h = jax.tree.map(numerics.divide_or_zero, grads0, denominators)
  mask = settings.asam_mask
  mask = mask(params) if callable(mask) else mask
  mask = _default_asam_mask(params) if mask is None else mask
  weights = jax.tree.map(
      lambda p, is_weight: jnp.abs(p) + settings.eta if is_weight else 1.0,
      params0,
      mask,
  )
  hw = jax.tree.map(jnp.multiply, h, weights)
  norm = numerics.settled(optax.tree.norm(hw) + 1e-16)
  perturbation = jax.tree.map(
      lambda x, w: settings.rho * x * w / norm, hw, weights
  )
  return loss_and_grad(optax.tree.add(params0, perturbation))[1]


def _move(params, rate, mu, grads, denominators, settings: Settings):
  """A step of `rate` along the momentum, then the decoupled weight decay.

  :math:`p - a\\, m / D`, or with Nesterov momentum
  :math:`p - a (\\beta_1 m + (1 - \\beta_1) g) / D`, times
  :math:`1 - a \\lambda`: the look of a step whose rate is not adapted, and
  the leap of one whose rate is.
  """
  b1 = settings.b1
  scale = b1 if settings.nesterov else 1.0
  moved = jax.tree.map(
      lambda p, m, d: p - rate * scale * numerics.divide_or_zero(m, d),
      params,
      mu,
      denominators,
  )
  if settings.nesterov:
    moved = jax.tree.map(
        lambda p, g, d: p - rate * (1 - b1) * numerics.divide_or_zero(g, d),
        moved,
        grads,
        denominators,
    )
  return optax.tree.scale(1 - rate * settings.weight_decay, moved)


def _look_point(params0, mu1, denominators, lr):
  """:math:`p_1 = p_0 - \\eta\\, m / D`, where ACME evaluates the loss again."""
  return jax.tree.map(
      lambda p, m, d: p - lr * numerics.divide_or_zero(m, d),
      params0,
      mu1,
      denominators,
  )


class _StepInputs(NamedTuple):
  """What every stage of one step reads besides its own arguments."""

  state: AcmeState
  settings: Settings
  t: jax.Array  # the algorithm's step, from 1
  corrections: tuple[Any, Any]  # c1, c2
  loss_and_grad: Callable[[optax.Params], tuple[jax.Array, optax.Updates]]


class _Proposal(NamedTuple):
  """What a step proposes, kept if every quantity it read was finite."""

  params: optax.Params
  moments: _Moments
  learning_rate: jax.Array
  schedule_factor: jax.Array
  branch: jax.Array
  finite: jax.Array


def _cosine_factor(t, schedule_steps):
  """The internal factor on the leap: 1 at t = 0, 0.01 at `schedule_steps`."""
  cosine = (1 + jnp.cos(math.pi * t / schedule_steps)) / 2
  return _SCHEDULE_FLOOR + (1 - _SCHEDULE_FLOOR) * cosine


def _leap_factor(b1):
  """The leap's factor on the rate, before the cosine factor.

  :math:`\\gamma = 2(1-\\beta_1)(1+2\\beta_1) / ((1+\\beta_1)(2-\\beta_1))`.
  """
  return 2 * (1 - b1) / (1 + b1) * (1 + 2 * b1) / (2 - b1)


def fixed_rate_step(lr, params0, direction_grads, moments, denominators, s):
  """Without adaptation the step is the look itself, at the given rate."""
  return _Proposal(
      params=_move(
          params0, lr, moments.mu, direction_grads, denominators, s.settings
      ),
      moments=moments,
      learning_rate=lr,
      schedule_factor=s.state.schedule_factor,
      branch=jnp.asarray(AcmeBranch.NO_ACME, jnp.int32),
      finite=jnp.asarray(True),
  )


def fitted_step(lr, loss0, params0, grads0, moments, denominators, s):
  """Look, fit the rate, leap, and average in the look's gradient if better.

  Evaluates the loss and gradient at the look point, takes the slopes
  :math:`s_i = \\sum m \\cdot g_i / D` along the step, moves the rate toward
  the step-size table's (:func:`step_size_table`), and leaps from
  :math:`p_0` by :math:`\\gamma` times the cosine factor times the rate (the
  fitted one when the look point was worse). If the look point improved the
  loss, the moments take its gradient as well.
  """
  settings = s.settings
  b1 = settings.b1
  loss1, grads1 = s.loss_and_grad(
      _look_point(params0, moments.mu, denominators, lr)
  )
  slope0 = numerics.weighted_sum(moments.mu, grads0, denominators)
  # The damping's sums for the look's gradient, which Adam's share.
  slope1, pp, gg = _damping_sums(moments, grads1, denominators)
  target_lr, fitted_lr, branch = step_size_table(
      loss0, loss1, slope0, slope1, lr, b1
  )
  worse, improved = loss1 > loss0, loss1 < loss0
  leap = jnp.where(worse, fitted_lr, lr) * (
      _leap_factor(b1) * s.state.schedule_factor
  )
  leap, worse, improved = numerics.settled(leap, worse, improved)
  nesterov_grads = optax.tree.where(worse, grads0, grads1)
  new_params = _move(
      params0, leap, moments.mu, nesterov_grads, denominators, settings
  )
  second_sums = (slope1, pp, gg)
  if not settings.adam:
    second_sums = _damping_sums(moments, grads1, _unit_scale(grads1))
  averaged, averaged_finite = damped_moment_update(
      moments, grads1, second_sums, s.state, settings
  )
  new_lr = jnp.minimum(
      b1 * lr + (1 - b1) * target_lr, settings.max_learning_rate
  )
  finite = jnp.isfinite(jnp.stack([loss1, slope0, slope1, lr, pp, gg, new_lr]))
  return _Proposal(
      params=new_params,
      moments=optax.tree.where(improved, averaged, moments),
      learning_rate=new_lr,
      schedule_factor=_cosine_factor(s.t, settings.schedule_steps),
      branch=branch,
      finite=jnp.all(finite) & (averaged_finite | ~improved),
  )


def accept_or_reject(
    proposal: _Proposal, accepted, lr, params0, start, look, s: _StepInputs
):
  """The parameters and state after the step, or after its rejection.

  A rejected step keeps the parameters, multiplies :math:`m` by
  :math:`1 - \\beta_1` and the rate by :math:`\\beta_1`, keeps :math:`v`,
  and restarts :math:`t` and the cosine factor. The moments it keeps are
  those it had reached (`look`: the moments after :math:`g_0`), or, where a
  non-finite value spoiled them, those from before the step (`start`, or the
  state's when the initial moments themselves were spoiled).

  Args:
    proposal: what the step proposes.
    accepted: whether every quantity the step read was finite.
    lr: the rate the step used.
    params0: the parameters before the step, in float32 at least.
    start: ``(moments, finite)`` before the gradient.
    look: ``(moments, finite)`` after the gradient.
    s: the step's inputs.

  Returns:
    ``(new_params, new_state)``.
  """
  state, b1 = s.state, s.settings.b1
  (start_moments, start_finite), (look_moments, look_finite) = start, look
  kept = optax.tree.where(
      look_finite,
      look_moments,
      optax.tree.where(
          start_finite, start_moments, _Moments(state.mu, state.nu)
      ),
  )
  rejected = kept._replace(mu=optax.tree.scale(1 - b1, kept.mu))
  moments = optax.tree.where(accepted, proposal.moments, rejected)
  restart_factor = (
      1.0 if s.settings.adapt_learning_rate else state.schedule_factor
  )
  new_state = AcmeState(
      count=optax.safe_increment(state.count),
      mu=optax.tree.cast_like(moments.mu, state.mu),
      nu=None
      if moments.nu is None
      else optax.tree.cast_like(moments.nu, state.nu),
      adapted_learning_rate=jnp.where(
          accepted, proposal.learning_rate, b1 * lr
      ).astype(lr.dtype),
      step=jnp.where(
          accepted,
          jnp.maximum(state.step, 1) + 1,
          start_finite.astype(jnp.int32),
      ).astype(jnp.int32),
      schedule_factor=jnp.where(
          accepted, proposal.schedule_factor, restart_factor
      ).astype(lr.dtype),
      branch=jnp.where(accepted, proposal.branch, AcmeBranch.REJECTED).astype(
          jnp.int32
      ),
      num_rejected=state.num_rejected + (~accepted).astype(jnp.int32),
  )
  return optax.tree.where(accepted, proposal.params, params0), new_state


def step(state, params, grads0, loss0, lr, loss_and_grad, settings: Settings):
  """One ACME step from `params`, whose loss is `loss0` and gradient `grads0`.

  Args:
    state: the :class:`AcmeState` before the step.
    params: the parameters.
    grads0: their gradient (or what transformations before ACME made of it).
    loss0: the loss at `params`, in the rate's dtype.
    lr: the rate of this step (the adapted one, or the schedule's).
    loss_and_grad: the loss and gradient at other parameters.
    settings: the hyperparameters.

  Returns:
    ``(updates, new_state)``.
  """
  t = jnp.maximum(state.step, 1).astype(lr.dtype)
  s = _StepInputs(
      state, settings, t, _bias_corrections(t, settings), loss_and_grad
  )
  params0, grads0 = numerics.widened(params), numerics.widened(grads0)
  start_moments, start_storable, start_finite = starting_moments(
      state, grads0, settings
  )
  start_denominators = _unit_scale(grads0)
  if settings.adam:
    start_denominators = _adam_or_sgd_denominators(
        start_moments, grads0, s.corrections, lr.dtype, settings
    )
  direction_grads = grads0
  if settings.asam:
    direction_grads = asam_gradient(
        params, grads0, start_denominators, loss_and_grad, settings
    )
  look_moments, look_finite = damped_moment_update(
      start_moments,
      direction_grads,
      _damping_sums(start_moments, direction_grads, start_denominators),
      state,
      settings,
  )
  look_denominators = _adam_or_sgd_denominators(
      look_moments, grads0, s.corrections, lr.dtype, settings
  )
  if settings.adapt_learning_rate:
    proposal = fitted_step(
        lr, loss0, params0, grads0, look_moments, look_denominators, s
    )
  else:
    proposal = fixed_rate_step(
        lr, params0, direction_grads, look_moments, look_denominators, s
    )
  look_finite &= start_finite
  # A non-finite loss means the gradient cannot be trusted either, even where
  # the loss itself is not read.
  accepted, look_finite = numerics.settled(
      look_finite & jnp.isfinite(loss0) & proposal.finite, look_finite
  )
  new_params, new_state = accept_or_reject(
      proposal,
      accepted,
      lr,
      params0,
      (start_moments, start_storable),
      (look_moments, look_finite),
      s,
  )
  updates = jax.tree.map(
      lambda new, old, p: (new - old).astype(p.dtype),
      new_params,
      params0,
      params,
  )
  return updates, new_state
