"""ACME: a step size adapted from a second loss evaluation and a cubic fit.

Each step evaluates the loss and its gradient at the current parameters and
again at a look-ahead point on the same minibatch (a third time with ASAM, at an
adversarial point), fits a cubic to the two values and slopes along the step,
and moves the learning rate toward the fit's minimiser. The authors' PyTorch
code drives this with a closure and Python branches; here every branch is a
``jnp.where`` on device values, so a step is one compiled program.
"""

from collections.abc import Callable
import enum
import functools
import inspect
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_adaptive._src import numerics, validation


class AcmeBranch(enum.IntEnum):
  """Values of :attr:`AcmeState.branch`: the row of the step-size table taken.

  The rows 0 to 7 are numbered as the authors' code numbers them (its ``cod``),
  so a run can be compared with theirs row for row.
  """

  REJECTED = -2  # a non-finite quantity: the step was rejected
  NO_ACME = -1  # `adapt_learning_rate=False`, or no step yet
  NOT_SIGNIFICANT = 0  # |L1 - L0| too small to fit: double or keep
  CUBIC_BETTER = 1  # slopes change sign, L1 <= L0: the cubic's minimiser
  CUBIC_WORSE = 2  # slopes change sign, L1 > L0: the cubic's minimiser
  PARABOLA_NEW = 3  # improved, still descending: parabola at the look point
  PARABOLA_OLD = 4  # worse, was descending: parabola at the start
  GROW = 5  # improved, both slopes descending: extrapolate up
  SHRINK = 6  # worse, both slopes ascending: extrapolate down
  OTHERWISE = 7  # keep the rate if improved, else zero


_SCHEDULE_FLOOR = 0.01
_SIGNIFICANCE = 1e4  # |L1 - L0| must exceed max(L0, L1) / _SIGNIFICANCE


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


def _widened(tree):
  """Every leaf in float32 at least: half-precision products overflow.

  A float16 gradient of 300 has a square beyond float16's range; moments,
  sums and steps are computed in float32 (float64 stays float64).
  """
  return jax.tree.map(
      lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32)), tree
  )


def _divide(numerator, denominator):
  """``numerator / denominator``, 0 where the denominator is 0.

  With ``eps=0`` an entry whose gradient has been zero has a zero
  denominator, and its numerator (a moment, or a gradient now moving) is
  finite: that entry contributes nothing rather than a NaN. A non-finite
  numerator stays non-finite, so the guard still rejects it.
  """
  return jnp.where(denominator > 0, numerator / denominator, numerator * 0)


def _tree_sum(tree, dtype) -> jax.Array:
  """The sum of every element of every leaf; 0 for a tree without leaves."""
  return sum(
      (jnp.sum(x) for x in jax.tree.leaves(tree)), start=jnp.zeros([], dtype)
  )


def _weighted_sum(a, b, denominators) -> jax.Array:
  """:math:`\\sum a \\cdot b / D` over every element of every leaf.

  Low-precision leaves (bfloat16, float16) are summed in float32: the slopes
  and the damping factor are differences of these sums, which bfloat16's three
  significant digits would swamp (the authors' code sums in float64).
  """

  def term(x, y, d):
    dtype = jnp.promote_types(jnp.result_type(x, y, d), jnp.float32)
    return _divide(x.astype(dtype) * y.astype(dtype), jnp.asarray(d, dtype))

  terms = jax.tree.map(term, a, b, denominators)
  dtype = jnp.result_type(jnp.float32, *jax.tree.leaves(terms))
  return _tree_sum(terms, dtype)


def _all_finite(tree) -> jax.Array:
  return jax.tree.reduce(
      jnp.logical_and,
      jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree),
      jnp.asarray(True),
  )


def _value_fn_kwargs(value_fn, extra_args) -> dict[str, Any]:
  """The extra arguments `value_fn` takes: all, or those its signature names."""
  parameters = inspect.signature(value_fn).parameters.values()
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
    return dict(extra_args)
  names = {p.name for p in parameters}
  return {k: v for k, v in extra_args.items() if k in names}


def _default_asam_mask(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def _refuse_masked(params) -> None:
  """ACME re-evaluates the loss: it needs every parameter, not a part.

  ``optax.masked``, ``optax.multi_transform`` and ``optax.partition`` hand
  the inner transformation the parameters with ``MaskedNode`` in place of the
  others, which no loss function can be evaluated at.
  """

  def is_masked(x):
    return isinstance(x, optax.MaskedNode)

  if any(is_masked(x) for x in jax.tree.leaves(params, is_leaf=is_masked)):
    raise ValueError(
        'acme must see every parameter: it evaluates the loss at a new point '
        'of all of them, and optax.masked, optax.multi_transform and '
        'optax.partition pass it only a part. Apply acme to the whole tree; '
        'to freeze parameters, wrap them in `jax.lax.stop_gradient` in the '
        'loss, or give them their own optimizer in a separate step.'
    )


def _check_schedule_steps(value):
  """`schedule_steps` as an int, or as the array inject_hyperparams passes.

  Returns:
    The value as a Python int, or the traced array unchanged (its value cannot
    be read inside `jit`; its shape and dtype are checked).
  """
  if isinstance(value, (jax.Array, np.ndarray)):
    if np.ndim(value) != 0 or not jnp.issubdtype(value.dtype, jnp.integer):
      raise ValueError(
          '`schedule_steps` must be an integer >= 1, got an array of shape '
          f'{np.shape(value)} and dtype {value.dtype}.'
      )
    if isinstance(value, jax.core.Tracer):
      return value
    value = value.item()
  return validation.check_integer('schedule_steps', value, 1)


def _fitted_rates(diff, slope0, slope1, lr):
  """The minimisers of the cubic and of the two parabolas, as rates."""
  if jnp.finfo(jnp.result_type(lr)).bits >= 64:
    # The authors' expressions, whose rounding the float64 reference runs
    # record (their rates follow it to 1e-12).
    a3 = -(slope0 + slope1) / lr**2 - 2 * diff / lr**3
    b3 = (2 * slope0 + slope1) / lr + 3 * diff / lr**2
    c3 = -slope0
    a2_new, b2_new = -slope1 / lr - diff / lr**2, slope1 + 2 * diff / lr
    a2_old, b2_old = slope0 / lr + diff / lr**2, -slope0
    return (
        (-b3 + jnp.sqrt(b3**2 - 3 * a3 * c3)) / (3 * a3),
        -b2_new / a2_new / 2,
        -b2_old / a2_old / 2,
    )
  # Below float64, lr**3 leaves the range for rates under about 1e-10 or over
  # about 1e10: the same fits in units x = rate / lr, where the slopes are
  # s * lr and every minimiser is in [0, 1].
  unit_slope0, unit_slope1 = slope0 * lr, slope1 * lr
  a = -(unit_slope0 + unit_slope1) - 2 * diff  # a x^3 + b x^2 - unit_slope0 x
  b = 2 * unit_slope0 + unit_slope1 + 3 * diff
  root = jnp.sqrt(b**2 + 3 * a * unit_slope0)
  # (root - b) / (3 a) loses its digits to cancellation when b > 0; there the
  # same minimiser is unit_slope0 / (b + root).
  cubic = jnp.where(b > 0, unit_slope0 / (b + root), (root - b) / (3 * a))
  parabola_new = (unit_slope1 + 2 * diff) / (unit_slope1 + diff) / 2
  parabola_old = unit_slope0 / (unit_slope0 + diff) / 2
  return lr * cubic, lr * parabola_new, lr * parabola_old


def step_size_table(loss0, loss1, slope0, slope1, learning_rate, b1):
  r"""The new learning rate from the values and slopes at the two points.

  The slopes are :math:`s = \sum m \cdot g / D`, positive when the step
  direction :math:`-m/D` descends. In float64 the fits use the authors'
  coefficients; in lower precision they are solved for the rate in units of
  the current one, where float32 holds them for any rate it can represent.

  Returns:
    ``(new_rate, fitted_rate, branch)``: the rate the adapted one moves
    toward, the fit's minimiser used by the leap when the look point was worse,
    and the row of the table taken.
  """
  lr = learning_rate
  better = loss1 <= loss0
  diff = loss1 - loss0
  # max, not the larger magnitude: with negative losses every change counts.
  significant = jnp.abs(diff) > jnp.maximum(loss0, loss1) / _SIGNIFICANCE
  cubic, parabola_new, parabola_old = _fitted_rates(diff, slope0, slope1, lr)

  cubic_branch = jnp.where(
      better, AcmeBranch.CUBIC_BETTER, AcmeBranch.CUBIC_WORSE
  )
  branch = jnp.select(
      [
          ~significant,
          (slope0 > 0) & (slope1 < 0),
          better & (slope1 < 0),
          ~better & (slope0 > 0),
          better & (slope0 > 0) & (slope1 > 0),
          ~better & (slope0 < 0) & (slope1 < 0),
      ],
      [
          AcmeBranch.NOT_SIGNIFICANT,
          cubic_branch,
          AcmeBranch.PARABOLA_NEW,
          AcmeBranch.PARABOLA_OLD,
          AcmeBranch.GROW,
          AcmeBranch.SHRINK,
      ],
      default=AcmeBranch.OTHERWISE,
  )
  keep = jnp.where(better, lr, 0.0)
  fitted = jnp.select(
      [
          (branch == AcmeBranch.CUBIC_BETTER)
          | (branch == AcmeBranch.CUBIC_WORSE),
          branch == AcmeBranch.PARABOLA_NEW,
          branch == AcmeBranch.PARABOLA_OLD,
      ],
      [cubic, parabola_new, parabola_old],
      default=keep,
  )
  new = jnp.select(
      [
          branch == AcmeBranch.NOT_SIGNIFICANT,
          branch == AcmeBranch.GROW,
          branch == AcmeBranch.SHRINK,
          branch == AcmeBranch.OTHERWISE,
      ],
      [
          jnp.where(better, 2 * lr, lr),
          jnp.minimum(lr * (1 + slope1 / slope0), lr * (2 - b1) / (1 - b1)),
          jnp.maximum(-lr * slope1 / slope0, lr * (0.5 - b1) / (1 - b1)),
          keep,
      ],
      default=fitted,
  )
  return new, fitted, branch


def acme(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    adapt_learning_rate: bool = True,
    adam: bool = True,
    asam: bool = False,
    rho: float = 1.0,
    eta: float = 0.0,
    nesterov: bool = False,
    bias_correction: bool = True,
    schedule_steps: int = 50_000,
    max_learning_rate: float = 1e6,
    asam_mask: Any | Callable[[optax.Params], Any] | None = None,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""ACME: Adam (or SGD) with a step size fitted from a second evaluation.

  With :math:`D = (\sqrt{v / c_2} + \epsilon)\, c_1` (Adam) or :math:`c_1`
  (SGD), :math:`c_i = 1 - \beta_i^t`, one step from :math:`p_0` with loss
  :math:`L_0` and gradient :math:`g_0`:

  1. update the moments with a damping factor :math:`f \le 1` that keeps the
     new momentum's step no longer than the old one's;
  2. look: :math:`p_1 = p_0 - \eta\, m / D`, evaluate :math:`L_1, g_1` there;
  3. fit a cubic to :math:`L_0, L_1` and the slopes
     :math:`s_i = \sum m \cdot g_i / D`, and move the rate toward its
     minimiser: :math:`\eta \leftarrow \min(\beta_1 \eta + (1 - \beta_1)
     \eta_{new}, \eta_{max})`;
  4. leap from :math:`p_0` by :math:`\gamma\,\eta_{fit}` (or :math:`\gamma\eta`)
     along :math:`-m / D`, :math:`\gamma = \frac{2(1-\beta_1)(1+2\beta_1)}
     {(1+\beta_1)(2-\beta_1)}` times a cosine factor; if :math:`L_1 < L_0`,
     update the moments once more with :math:`g_1`.

  The moments are initialised once, at the first call, as in the authors'
  code: :math:`m = (1 - \beta_1) g_0` and :math:`v` the mean of
  :math:`g_0^2` over each leaf.

  With ``asam`` the gradient that enters the moments is taken at
  :math:`p_0 + e`, :math:`e = \rho\, h w^2 / \|h w\|`, :math:`h = g_0 / D`,
  :math:`w = |p_0| + \eta_{asam}` on the leaves of ``asam_mask``. Without
  ``adapt_learning_rate`` the step is the look alone (Adam/SGD with the damped
  moments, with Nesterov momentum if asked) and the rate is fixed, or follows
  a schedule.

  **Non-finite values.** A step in which the loss at either point, a slope,
  the rate, a sum over the moments or the gradients, or a moment it would
  store is not finite is rejected, as in the authors' code: the parameters
  stay, :math:`m` is multiplied by :math:`1 - \beta_1`, the rate by
  :math:`\beta_1`, :math:`t` returns to 1 (the bias corrections and the
  cosine factor restart), :math:`v` is kept, ``branch`` is ``REJECTED`` and
  ``num_rejected`` grows; the next step goes on from these moments. A NaN or
  infinite entry of any gradient, a NaN or infinite loss at either point, and
  gradients whose squares overflow (entries above about 1.8e19 in float32)
  all end there. Moments that a non-finite value spoiled are the ones from
  before the step instead. Where the authors' code would store a NaN, this
  does not: a first call whose gradient gives moments that are not finite
  leaves them uninitialised (``step`` stays 0), and the next call initialises
  them. The authors' code exits the program in some of these cases; this
  never does. It also rejects a step whose fitted rate is not finite, which
  the authors' code would carry.

  **Departures that only remove traps.** Where the authors' code would be
  stuck for good, this goes on: a momentum of exactly zero (all its entries
  underflowed, or a first gradient of zero) takes the new gradient undamped,
  where the damping factor would be 0 for ever; with ``eps=0`` an entry whose
  second moment is 0 contributes nothing to the sums and the step rather than
  0 / 0; and the adapted rate is at most ``max_learning_rate``: on a plateau
  where the loss does not change, the table doubles the rate every step, and
  after a thousand such steps it would overflow, leaving every later step
  rejected (a value the reference runs never come near). A leaf without
  elements, or a tree without leaves, is a valid parameter tree. Long runs of
  rejections still shrink the rate by :math:`\beta_1` each, and a rate that
  underflows to 0 stays there.

  **Precision.** Moments are kept in ``mu_dtype`` and ``nu_dtype``; by
  default those are float32 for 16-bit parameters (float16, bfloat16) and the
  parameters' dtype otherwise. Every sum, moment update and step is computed in
  float32 at least (a float16 gradient of 300 has a square beyond float16's
  range), and the updates have the parameters' dtype. The adapted rate and the
  step-size table are in the default float dtype.

  ``update`` needs ``value``, the loss at ``params`` (a scalar: the mean over
  the batch), and ``value_fn``, a function of the parameters that re-evaluates
  the loss on the same minibatch (without updating BatchNorm statistics).
  Extra arguments that ``value_fn`` names in its signature are passed on to
  it; others are ignored. :func:`acme_step` builds the whole jitted step from a
  loss function.

  **Compositions.** Transformations *before* ACME in a chain change only
  :math:`g_0` (clipping it, for instance, is meaningful): the re-evaluated
  gradients :math:`g_1` and the ASAM gradient come from ``value_fn`` and are not
  transformed. Transformations *after* ACME are not meaningful: ACME returns
  the step it has already evaluated the loss at, and rescaling it invalidates
  the fit. ``optax.masked``, ``optax.multi_transform`` and ``optax.partition``
  give ACME part of the parameters, at which the loss cannot be evaluated:
  they are refused. ``optax.apply_if_finite`` works. Under
  ``optax.MultiSteps`` ACME runs at every k-th call with the averaged gradient
  as :math:`g_0` (so :math:`s_0` and the moments use it) and the ``value`` and
  ``value_fn`` of that last micro-batch: :math:`L_0`, :math:`L_1` and
  :math:`g_1` all come from the last micro-batch. Under
  ``optax.inject_hyperparams`` every float and ``schedule_steps`` may be
  injected; the flags are booleans and stay static by themselves (pass
  ``mu_dtype`` and ``nu_dtype`` as ``static_args`` if you set them).

  Args:
    learning_rate: the initial rate; the adapted one is
      ``state.adapted_learning_rate``, so under ``optax.inject_hyperparams``
      the injected value sets the start only. With
      ``adapt_learning_rate=False`` it may be an optax schedule of the step
      count (``state.count``), which then sets the rate of every step; a
      schedule is refused when the rate is adapted, since the adaptation and
      the internal cosine factor already set it.
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to :math:`\sqrt{v / c_2}`.
    weight_decay: multiplies the parameters by :math:`1 - a \lambda` after the
      leap (the look, without
      ``adapt_learning_rate``), :math:`a` the step taken.
    adapt_learning_rate: adapt the rate (two evaluations per step) or not
      (one).
    adam: Adam's denominator, or SGD with momentum.
    asam: evaluate the gradient at an adaptive adversarial point (one more
      evaluation per step).
    rho: ASAM's radius.
    eta: ASAM's offset to :math:`|p|`.
    nesterov: Nesterov momentum in the look (without
      ``adapt_learning_rate``) and the leap.
    bias_correction: Adam's bias corrections and the :math:`1-\beta_1` scaling
      of the first momentum.
    schedule_steps: length of the internal cosine factor on the leap.
    max_learning_rate: the largest adapted rate (see above). Raise it for SGD
      (``adam=False``) on a loss whose gradients are tiny, where the rate must
      grow large.
    asam_mask: which leaves are weights for ASAM (a tree of booleans or a
      function of the parameters); by default those of rank >= 2. The authors'
      code treats every parameter named ``weight`` as one, BatchNorm scales
      included: pass a mask to reproduce that.
    mu_dtype: dtype of the first moment; None for the default above.
    nu_dtype: dtype of the second moment; None for the default above.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax, jax.numpy as jnp, optax_adaptive
    >>> def loss_fn(params, x, y):
    ...   return jnp.mean((x @ params['w'] - y) ** 2)
    >>> x = jax.random.normal(jax.random.key(0), (32, 4))
    >>> y = x @ jnp.array([1.0, -2.0, 0.5, 3.0])
    >>> optimizer = optax_adaptive.acme(learning_rate=0.01)
    >>> step = optax_adaptive.acme_step(loss_fn, optimizer)
    >>> params = {'w': jnp.zeros(4)}
    >>> opt_state = optimizer.init(params)
    >>> for _ in range(200):
    ...   params, opt_state, _, _ = step(params, opt_state, x, y)
    >>> print(bool(loss_fn(params, x, y) < 1e-3))
    True
    >>> print(bool(opt_state.adapted_learning_rate > 0.01))
    True

  References:
    ACME (ICASSP 2025 submission), code: `ignasi00/acme
    <https://github.com/ignasi00/acme>`_; Kwon, Kim, Park and Choi, `ASAM:
    Adaptive sharpness-aware minimization <https://arxiv.org/abs/2102.11600>`_,
    ICML 2021.
  """
  if callable(learning_rate):
    if adapt_learning_rate:
      raise ValueError(
          '`learning_rate` of acme is the initial rate, a float: acme adapts '
          'the rate itself, and its leap follows an internal cosine factor '
          'over `schedule_steps`. A schedule is taken with '
          '`adapt_learning_rate=False`.'
      )
  else:
    validation.check_positive('learning_rate', learning_rate)
  validation.check_beta('b1', b1)
  validation.check_beta('b2', b2)
  validation.check_non_negative('eps', eps)
  validation.check_non_negative('weight_decay', weight_decay)
  validation.check_non_negative('rho', rho)
  validation.check_non_negative('eta', eta)
  validation.check_positive('max_learning_rate', max_learning_rate)
  schedule_steps = _check_schedule_steps(schedule_steps)

  def rate_at(count):
    """The rate of step `count` when it is a schedule, else the given rate."""
    return learning_rate(count) if callable(learning_rate) else learning_rate

  def init_fn(params):
    _refuse_masked(params)
    float_dtype = jnp.result_type(float)
    return AcmeState(
        count=jnp.zeros([], jnp.int32),
        mu=numerics.zeros_like_moments(params, mu_dtype),
        nu=numerics.zeros_like_moments(params, nu_dtype) if adam else None,
        adapted_learning_rate=jnp.asarray(rate_at(0), float_dtype),
        step=jnp.zeros([], jnp.int32),
        schedule_factor=jnp.ones([], float_dtype),
        branch=jnp.array(AcmeBranch.NO_ACME, jnp.int32),
        num_rejected=jnp.zeros([], jnp.int32),
    )

  def internal_schedule(t):
    """The cosine factor on the leap: 1 at t = 0, 0.01 at `schedule_steps`."""
    cosine = (1 + jnp.cos(math.pi * t / schedule_steps)) / 2
    return _SCHEDULE_FLOOR + (1 - _SCHEDULE_FLOOR) * cosine

  def update_fn(
      updates, state, params=None, *, value=None, value_fn=None, **extra_args
  ):
    if params is None or value is None or value_fn is None:
      raise ValueError(
          'acme needs the parameters, the loss and a way to re-evaluate it: '
          'call `update(grads, state, params, value=loss, value_fn=f)` with '
          '`f(params)` the loss on the same minibatch (see `acme_step`).'
      )
    _refuse_masked(params)
    validation.check_scalar_loss(value, 'acme')
    value_and_grad = jax.value_and_grad(
        functools.partial(value_fn, **_value_fn_kwargs(value_fn, extra_args))
    )

    def loss_and_grad(wide_params):
      """The loss and its gradient at a point computed in float32 or wider."""
      loss, grads = value_and_grad(optax.tree.cast_like(wide_params, params))
      return loss.astype(lr.dtype), _widened(grads)

    lr = state.adapted_learning_rate
    if callable(learning_rate):
      lr = jnp.asarray(rate_at(state.count), lr.dtype)
    loss0 = jnp.asarray(value).astype(lr.dtype)
    grads0, params0 = _widened(updates), _widened(params)
    initialized = state.step > 0
    t = jnp.maximum(state.step, 1).astype(lr.dtype)
    c1, c2 = (1 - b1**t, 1 - b2**t) if bias_correction else (1.0, 1.0)

    def denominators(nu):
      if adam:
        return jax.tree.map(lambda v: (jnp.sqrt(v / c2) + eps) * c1, nu)
      return jax.tree.map(lambda _: jnp.asarray(c1, lr.dtype), grads0)

    def storable(mu, nu):
      """Whether the moments are finite in the dtypes the state keeps."""
      finite = _all_finite(optax.tree.cast_like(mu, state.mu))
      if adam:
        finite &= _all_finite(optax.tree.cast_like(nu, state.nu))
      return finite

    def average(mu, nu, grads):
      """The damped moment update; also says whether it is finite."""
      scale = denominators(nu) if adam else jax.tree.map(lambda _: 1.0, grads)
      pg = _weighted_sum(mu, grads, scale)
      pp = _weighted_sum(mu, mu, scale)
      gg = _weighted_sum(grads, grads, scale)
      root = jnp.sqrt((2 - b1**2) * gg * pp + b1**2 * pg**2)
      k = (b1 * pg - root) / (gg * (b1 - 1))
      # k >= 0 in exact arithmetic (pg**2 <= pp * gg); a negative k comes from
      # products that underflow when the gradient is negligible beside the
      # momentum, where the exact k is large: no damping, as for k >= 1. A
      # zero momentum (pp = 0) gives k = 0, which would keep it zero for good:
      # it takes the gradient undamped instead.
      damping = jnp.where((pp > 0) & (k >= 0) & (k < 1), k, 1.0)
      damped = jax.tree.map(lambda g: damping * g, grads)
      mu = optax.tree.update_moment(damped, mu, b1, 1)
      if adam:
        nu = optax.tree.update_moment_per_elem_norm(damped, nu, b2, 2)
      finite = (
          jnp.isfinite(pg)
          & jnp.isfinite(pp)
          & jnp.isfinite(gg)
          & storable(mu, nu)
      )
      return mu, nu, finite

    # The authors initialise the moments once, when the state is empty; a
    # rejection does not empty it.
    first_mu = optax.tree.scale((1 - b1) if bias_correction else 1.0, grads0)
    mu0 = optax.tree.where(initialized, _widened(state.mu), first_mu)
    nu0 = None
    if adam:
      # A leaf without elements has a NaN mean square and nothing to fill.
      first_nu = jax.tree.map(
          lambda g: jnp.full_like(g, jnp.mean(jnp.square(g))), grads0
      )
      nu0 = optax.tree.where(initialized, _widened(state.nu), first_nu)
    start_finite = initialized | storable(mu0, nu0)

    direction_grads = grads0
    if asam:
      h = jax.tree.map(_divide, grads0, denominators(nu0)) if adam else grads0
      mask = asam_mask(params) if callable(asam_mask) else asam_mask
      mask = _default_asam_mask(params) if mask is None else mask
      weights = jax.tree.map(
          lambda p, is_weight: jnp.abs(p) + eta if is_weight else 1.0,
          params0,
          mask,
      )
      hw = jax.tree.map(jnp.multiply, h, weights)
      norm = optax.tree.norm(hw) + 1e-16
      perturbation = jax.tree.map(lambda x, w: rho * x * w / norm, hw, weights)
      _, direction_grads = loss_and_grad(optax.tree.add(params0, perturbation))

    mu1, nu1, avg_finite = average(mu0, nu0, direction_grads)
    look_denominators = denominators(nu1)
    look_scale = b1 if (nesterov and not adapt_learning_rate) else 1.0
    params1 = jax.tree.map(
        lambda p, m, d: p - lr * look_scale * _divide(m, d),
        params0,
        mu1,
        look_denominators,
    )

    if not adapt_learning_rate:
      if nesterov:
        params1 = jax.tree.map(
            lambda p, g, d: p - lr * (1 - b1) * _divide(g, d),
            params1,
            direction_grads,
            look_denominators,
        )
      params1 = optax.tree.scale(1 - lr * weight_decay, params1)
      # The loss is not read here, but a non-finite one means the gradient
      # cannot be trusted either: reject, as when the rate is adapted.
      accepted = avg_finite & jnp.isfinite(loss0)
      new_params, mu, nu = params1, mu1, nu1
      new_lr, schedule_factor = lr, state.schedule_factor
      branch = jnp.asarray(AcmeBranch.NO_ACME, jnp.int32)
    else:
      loss1, grads1 = loss_and_grad(params1)
      slope0 = _weighted_sum(mu1, grads0, look_denominators)
      slope1 = _weighted_sum(mu1, grads1, look_denominators)
      pp = _weighted_sum(mu1, mu1, look_denominators)
      gg = _weighted_sum(grads1, grads1, look_denominators)
      target_lr, fitted_lr, branch = step_size_table(
          loss0, loss1, slope0, slope1, lr, b1
      )

      worse = loss1 > loss0
      gamma = (
          2
          * (1 - b1)
          / (1 + b1)
          * (1 + 2 * b1)
          / (2 - b1)
          * state.schedule_factor
      )
      leap = jnp.where(worse, fitted_lr, lr) * gamma
      leap_scale = b1 if nesterov else 1.0
      new_params = jax.tree.map(
          lambda p, m, d: p - leap * leap_scale * _divide(m, d),
          params0,
          mu1,
          look_denominators,
      )
      if nesterov:
        nesterov_grads = optax.tree.where(worse, grads0, grads1)
        new_params = jax.tree.map(
            lambda p, g, d: p - leap * (1 - b1) * _divide(g, d),
            new_params,
            nesterov_grads,
            look_denominators,
        )
      new_params = optax.tree.scale(1 - leap * weight_decay, new_params)
      new_lr = jnp.minimum(b1 * lr + (1 - b1) * target_lr, max_learning_rate)
      schedule_factor = internal_schedule(t)

      improved = loss1 < loss0
      mu2, nu2, second_avg_finite = average(mu1, nu1, grads1)
      mu = optax.tree.where(improved, mu2, mu1)
      nu = optax.tree.where(improved, nu2, nu1) if adam else None
      accepted = (
          avg_finite
          & jnp.isfinite(loss0)
          & jnp.isfinite(loss1)
          & jnp.isfinite(slope0)
          & jnp.isfinite(slope1)
          & jnp.isfinite(lr)
          & jnp.isfinite(pp)
          & jnp.isfinite(gg)
          & jnp.isfinite(new_lr)
          & (second_avg_finite | ~improved)
      )

    # A rejected step keeps the parameters and decays the moments it had
    # reached; moments that a non-finite value spoiled are those from before
    # the step (the state's, or the initial ones).
    kept_mu = optax.tree.where(
        avg_finite, mu1, optax.tree.where(start_finite, mu0, state.mu)
    )
    rejected_mu = optax.tree.scale(1 - b1, kept_mu)
    new_mu = optax.tree.where(accepted, mu, rejected_mu)
    new_nu = None
    if adam:
      kept_nu = optax.tree.where(
          avg_finite, nu1, optax.tree.where(start_finite, nu0, state.nu)
      )
      new_nu = optax.tree.cast_like(
          optax.tree.where(accepted, nu, kept_nu), state.nu
      )
    new_params = optax.tree.where(accepted, new_params, params0)
    new_state = AcmeState(
        count=optax.safe_increment(state.count),
        mu=optax.tree.cast_like(new_mu, state.mu),
        nu=new_nu,
        adapted_learning_rate=jnp.where(accepted, new_lr, b1 * lr).astype(
            lr.dtype
        ),
        step=jnp.where(
            accepted,
            jnp.maximum(state.step, 1) + 1,
            start_finite.astype(jnp.int32),
        ).astype(jnp.int32),
        schedule_factor=jnp.where(
            accepted,
            schedule_factor,
            1.0 if adapt_learning_rate else state.schedule_factor,
        ).astype(lr.dtype),
        branch=jnp.where(accepted, branch, AcmeBranch.REJECTED).astype(
            jnp.int32
        ),
        num_rejected=state.num_rejected + (~accepted).astype(jnp.int32),
    )
    new_updates = jax.tree.map(
        lambda new, old, p: (new - old).astype(p.dtype),
        new_params,
        params0,
        params,
    )
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_donatable(params, opt_state) -> None:
  """Refuses what `acme_step` cannot donate, before XLA does, less clearly.

  Raises:
    ValueError: an array was already donated (deleted) by an earlier call, or
      the same array appears twice among the parameters and the state.
  """
  seen: dict[int, str] = {}
  for name, tree in (('params', params), ('opt_state', opt_state)):
    for path, leaf in jax.tree.leaves_with_path(tree):
      if not isinstance(leaf, jax.Array) or isinstance(leaf, jax.core.Tracer):
        continue
      where = name + jax.tree_util.keystr(path)
      if leaf.is_deleted():
        raise ValueError(
            f'{where} was deleted: acme_step donates the buffers of the '
            'parameters and the optimizer state to the step, so the arrays '
            'passed to one call cannot be used again. Pass the ones the call '
            'returned, or pass copies (`jax.tree.map(jnp.copy, params)`) '
            'where you need to keep the originals.'
        )
      if id(leaf) in seen:
        raise ValueError(
            f'{seen[id(leaf)]} and {where} are the same array: acme_step '
            'donates the buffers of the parameters and the optimizer state, '
            'and one buffer cannot be donated twice. For tied weights keep '
            'one leaf and use it in both places in the model, or pass copies '
            '(`jax.tree.map(jnp.copy, params)`).'
        )
      seen[id(leaf)] = where


def acme_step(
    loss_fn: Callable[..., Any],
    optimizer: optax.GradientTransformationExtraArgs,
    *,
    has_aux: bool = False,
) -> Callable[..., tuple[Any, Any, jax.Array, Any]]:
  """The whole ACME training step, jitted: the authors' closure as one function.

  Args:
    loss_fn: ``loss_fn(params, *batch)`` returning the loss, or ``(loss, aux)``
      with ``has_aux``. For a model with BatchNorm, let ``batch`` carry the
      statistics and ``aux`` the updated ones: only the first evaluation's
      ``aux`` is returned, so the extra evaluations never update them.
    optimizer: :func:`acme`, alone or after gradient transformations.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    ``step(params, opt_state, *batch) -> (params, opt_state, loss, aux)``,
    jitted; ``loss`` is the loss at the parameters passed in, ``aux`` is None
    without ``has_aux``. The buffers of ``params`` and ``opt_state`` are
    donated: use the returned ones, and do not pass the same array twice
    (tied weights); both are refused with a message.

  Example:
    >>> import jax, jax.numpy as jnp, optax_adaptive
    >>> loss_fn = lambda params, x: jnp.sum((params - x) ** 2)
    >>> optimizer = optax_adaptive.acme(learning_rate=0.1)
    >>> step = optax_adaptive.acme_step(loss_fn, optimizer)
    >>> params = jnp.zeros(3)
    >>> state = optimizer.init(params)
    >>> params, state, _, _ = step(params, state, jnp.ones(3))
    >>> print(f'{loss_fn(params, jnp.ones(3)):.3f}')  # from 3.000
    2.993
    >>> print(f'{state.adapted_learning_rate:.3f}')  # both slopes descend: GROW
    0.110
  """

  def step(params, opt_state, *batch):
    if has_aux:
      (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, *batch
      )

      def value_fn(p):
        return loss_fn(p, *batch)[0]

    else:
      loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
      aux = None

      def value_fn(p):
        return loss_fn(p, *batch)

    updates, opt_state = optimizer.update(
        grads, opt_state, params, value=loss, value_fn=value_fn
    )
    return optax.apply_updates(params, updates), opt_state, loss, aux

  jitted_step = jax.jit(step, donate_argnums=(0, 1))

  @functools.wraps(step)
  def checked_step(params, opt_state, *batch):
    _check_donatable(params, opt_state)
    return jitted_step(params, opt_state, *batch)

  return checked_step
