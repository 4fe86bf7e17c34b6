"""ACME: a step size adapted from a second evaluation of the loss and a cubic fit.

Each step evaluates the loss and its gradient at the current parameters and
again at a look-ahead point on the same minibatch (a third time with ASAM, at an
adversarial point), fits a cubic to the two values and slopes along the step,
and moves the learning rate toward the fit's minimiser. The authors' PyTorch
code drives this with a closure and Python branches; here every branch is a
``jnp.where`` on device values, so a step is one compiled program.
"""

import enum
import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_adaptive._src import validation

class AcmeBranch(enum.IntEnum):
  """Values of :attr:`AcmeState.branch`: the row of the step-size table taken."""
  REJECTED = -2  # a non-finite quantity: the step was rejected
  NO_ACME = -1  # `acme=False` (the rate is not adapted), or no step yet
  NOT_SIGNIFICANT = 0  # |L1 - L0| too small to fit: double or keep
  CUBIC = 1  # slopes change sign: the cubic's minimiser
  PARABOLA_NEW = 2  # improved, still descending: parabola at the look point
  PARABOLA_OLD = 3  # worse, was descending: parabola at the start
  GROW = 4  # improved, both slopes descending: extrapolate up
  SHRINK = 5  # worse, both slopes ascending: extrapolate down
  OTHERWISE = 6  # keep the rate if improved, else zero


_SCHEDULE_FLOOR = 0.01


class AcmeState(NamedTuple):
  """State of :func:`acme`.

  Attributes:
    count: number of ``update`` calls.
    mu: first moment (per parameter).
    nu: second moment (per parameter); None without ``adam``, which never
      reads it.
    learning_rate: the adapted learning rate, to use at the next step.
    step: the algorithm's step :math:`t`, from 1; a rejected step resets it
      to 1 (it drives the bias corrections and the internal schedule).
    schedule_factor: the internal cosine factor on the leap, from 1 down to
      0.01 over ``schedule_steps``.
    branch: the row of the step-size table the last step took, an
      :class:`AcmeBranch` (0 to 6; -1 without ``acme`` and before the first
      step, -2 for a rejected step).
    num_rejected: number of steps rejected for a non-finite quantity.
  """
  count: chex.Array
  mu: optax.Updates
  nu: optax.Updates
  learning_rate: chex.Array
  step: chex.Array
  schedule_factor: chex.Array
  branch: chex.Array
  num_rejected: chex.Array


def _tree_sum(tree) -> jax.Array:
  return sum(jnp.sum(x) for x in jax.tree.leaves(tree))


def _weighted_sum(a, b, denominators) -> jax.Array:
  """:math:`\\sum a \\cdot b / D` over every element of every leaf.

  Low-precision leaves (bfloat16, float16) are summed in float32: the slopes
  and the damping factor are differences of these sums, which bfloat16's three
  significant digits would swamp (the authors' code sums in float64).
  """
  def term(x, y, d):
    dtype = jnp.promote_types(jnp.result_type(x, y, d), jnp.float32)
    return x.astype(dtype) * y.astype(dtype) / jnp.asarray(d, dtype)

  return _tree_sum(jax.tree.map(term, a, b, denominators))


def _value_fn_kwargs(value_fn, extra_args) -> dict[str, Any]:
  """The extra arguments `value_fn` takes: all, or those its signature names."""
  parameters = inspect.signature(value_fn).parameters.values()
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
    return dict(extra_args)
  names = {p.name for p in parameters}
  return {k: v for k, v in extra_args.items() if k in names}


def _default_asam_mask(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def step_size_table(loss0, loss1, slope0, slope1, learning_rate, b1):
  """The new learning rate from the values and slopes at the two points.

  The slopes are :math:`s = \\sum m \\cdot g / D`, positive when the step
  direction :math:`-m/D` descends.

  Returns:
    ``(new_rate, fitted_rate, branch)``: the rate the adapted one moves
    toward, the fit's minimiser used by the leap when the look point was worse,
    and the row of the table taken.
  """
  lr = learning_rate
  better = loss1 <= loss0
  significant = jnp.abs(loss0 - loss1) > jnp.maximum(loss0, loss1) / 1e4
  diff = loss1 - loss0
  a3 = -(slope0 + slope1) / lr**2 - 2 * diff / lr**3
  b3 = (2 * slope0 + slope1) / lr + 3 * diff / lr**2
  c3 = -slope0
  a2_new, b2_new = -slope1 / lr - diff / lr**2, slope1 + 2 * diff / lr
  a2_old, b2_old = slope0 / lr + diff / lr**2, -slope0

  branch = jnp.select(
      [~significant,
       (slope0 > 0) & (slope1 < 0),
       better & (slope1 < 0),
       ~better & (slope0 > 0),
       better & (slope0 > 0) & (slope1 > 0),
       ~better & (slope0 < 0) & (slope1 < 0)],
      [AcmeBranch.NOT_SIGNIFICANT, AcmeBranch.CUBIC, AcmeBranch.PARABOLA_NEW,
       AcmeBranch.PARABOLA_OLD, AcmeBranch.GROW, AcmeBranch.SHRINK],
      default=AcmeBranch.OTHERWISE)
  cubic = (-b3 + jnp.sqrt(b3**2 - 3 * a3 * c3)) / (3 * a3)
  parabola_new = -b2_new / a2_new / 2
  parabola_old = -b2_old / a2_old / 2
  keep = jnp.where(better, lr, 0.0)
  fitted = jnp.select(
      [branch == AcmeBranch.CUBIC, branch == AcmeBranch.PARABOLA_NEW,
       branch == AcmeBranch.PARABOLA_OLD], [cubic, parabola_new, parabola_old],
      default=keep)
  new = jnp.select(
      [branch == AcmeBranch.NOT_SIGNIFICANT,
       branch == AcmeBranch.GROW,
       branch == AcmeBranch.SHRINK,
       branch == AcmeBranch.OTHERWISE],
      [jnp.where(better, 2 * lr, lr),
       jnp.minimum(lr * (1 + slope1 / slope0), lr * (2 - b1) / (1 - b1)),
       jnp.maximum(-lr * slope1 / slope0, lr * (0.5 - b1) / (1 - b1)),
       keep],
      default=fitted)
  return new, fitted, branch


def acme(
    learning_rate: float = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    acme: bool = True,  # pylint: disable=redefined-outer-name
    adam: bool = True,
    asam: bool = False,
    rho: float = 1.0,
    eta: float = 0.0,
    nesterov: bool = False,
    bias_correction: bool = True,
    schedule_steps: int = 50_000,
    asam_mask: Any | Callable[[optax.Params], Any] | None = None,
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
     minimiser: :math:`\eta \leftarrow \beta_1 \eta + (1 - \beta_1)\eta_{new}`;
  4. leap from :math:`p_0` by :math:`\gamma\,\eta_{fit}` (or :math:`\gamma\eta`)
     along :math:`-m / D`, :math:`\gamma = \frac{2(1-\beta_1)(1+2\beta_1)}
     {(1+\beta_1)(2-\beta_1)}` times a cosine factor; if :math:`L_1 < L_0`,
     update the moments once more with :math:`g_1`.

  With ``asam`` the gradient that enters the moments is taken at
  :math:`p_0 + e`, :math:`e = \rho\, h w^2 / \|h w\|`, :math:`h = g_0 / D`,
  :math:`w = |p_0| + \eta_{asam}` on the leaves of ``asam_mask``. Without
  ``acme`` the step is the look alone (Adam/SGD with the damped moments, with
  Nesterov momentum if asked) and the rate is fixed.

  Non-finite inputs: a step in which the loss, a slope, the rate or a sum over
  the moments is not finite is rejected: the parameters stay, :math:`m` is
  multiplied by :math:`1 - \beta_1`, the rate by :math:`\beta_1`, :math:`t`
  returns to 1, and ``num_rejected`` grows. A NaN or infinite entry of either
  gradient, a NaN or infinite loss at either point, and gradients whose squares
  overflow (entries above about 1.8e19 in float32) all end there. Moments that
  a non-finite sum spoiled are left as they were before the step, and until a
  step is accepted the next one starts its moments afresh from its own
  gradient, as the first step does. The authors' code exits the program in some
  of these cases; this never does and never leaves a NaN or an infinity in the
  state. It also rejects a step whose fitted rate is not finite, which the
  authors' code would carry. Each rejection multiplies the rate by
  :math:`\beta_1`, so a long run of them (about 900 with :math:`\beta_1 = 0.9`
  in float32) leaves a rate of zero, from which it does not recover.

  ``update`` needs ``value``, the loss at ``params``, and ``value_fn``, a
  function of the parameters that re-evaluates the loss on the same minibatch
  (without updating BatchNorm statistics). Extra arguments that ``value_fn``
  names in its signature are passed on to it; others are ignored.
  :func:`acme_step` builds the whole jitted step from a loss function.

  **Compositions.** Transformations *before* ACME in a chain change only
  :math:`g_0` (clipping it, for instance, is meaningful): the re-evaluated
  gradients :math:`g_1` and the ASAM gradient come from ``value_fn`` and are not
  transformed. Transformations *after* ACME are not meaningful: ACME returns
  the step it has already evaluated the loss at, and rescaling it invalidates
  the fit. Wrappers that skip or accumulate steps (``optax.MultiSteps``,
  ``optax.apply_if_finite``) work, with the loss of the last micro-step.

  Args:
    learning_rate: the initial rate; the adapted rate lives in the state
      (``state.learning_rate``), so under ``optax.inject_hyperparams`` the
      injected value sets the start only, and
      ``optax.tree.get(state, 'learning_rate')`` finds both: read the adapted
      one as ``state.inner_state.learning_rate`` there.
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to :math:`\sqrt{v / c_2}`.
    weight_decay: multiplies the parameters by :math:`1 - a \lambda` after the
      leap (the look, without ``acme``), :math:`a` the step taken.
    acme: adapt the rate (two evaluations per step) or not (one).
    adam: Adam's denominator, or SGD with momentum.
    asam: evaluate the gradient at an adaptive adversarial point (one more
      evaluation per step).
    rho: ASAM's radius.
    eta: ASAM's offset to :math:`|p|`.
    nesterov: Nesterov momentum in the look (without ``acme``) and the leap.
    bias_correction: Adam's bias corrections and the :math:`1-\beta_1` scaling
      of the first momentum.
    schedule_steps: length of the internal cosine factor on the leap.
    asam_mask: which leaves are weights for ASAM (a tree of booleans or a
      function of the parameters); by default those of rank >= 2. The authors'
      code treats every parameter named ``weight`` as one, BatchNorm scales
      included: pass a mask to reproduce that.

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
    ...   params, opt_state, loss, _ = step(params, opt_state, x, y)
    >>> print(bool(loss < 1e-3), bool(opt_state.learning_rate > 0.01))
    True True

  References:
    ACME (ICASSP 2025 submission), code: `ignasi00/acme
    <https://github.com/ignasi00/acme>`_; Kwon, Kim, Park and Choi, `ASAM:
    Adaptive sharpness-aware minimization <https://arxiv.org/abs/2102.11600>`_,
    ICML 2021.
  """
  if callable(learning_rate):
    raise ValueError(
        '`learning_rate` of acme is the initial rate, a float: acme adapts the '
        'rate itself, and its leap follows an internal cosine factor over '
        '`schedule_steps`.')
  validation.check_positive('learning_rate', learning_rate)
  validation.check_beta('b1', b1)
  validation.check_beta('b2', b2)
  validation.check_non_negative('eps', eps)
  validation.check_non_negative('weight_decay', weight_decay)
  validation.check_non_negative('rho', rho)
  validation.check_non_negative('eta', eta)
  if not isinstance(schedule_steps, int) or schedule_steps < 1:
    raise ValueError(
        f'`schedule_steps` must be an integer >= 1, got {schedule_steps!r}.')
  use_acme = acme

  def init_fn(params):
    float_dtype = jnp.result_type(float)
    return AcmeState(
        count=jnp.zeros([], jnp.int32),
        mu=optax.tree.zeros_like(params),
        nu=optax.tree.zeros_like(params) if adam else None,
        learning_rate=jnp.asarray(learning_rate, float_dtype),
        step=jnp.ones([], jnp.int32),
        schedule_factor=jnp.ones([], float_dtype),
        branch=jnp.array(AcmeBranch.NO_ACME, jnp.int32),
        num_rejected=jnp.zeros([], jnp.int32),
    )

  def internal_schedule(t):
    """The cosine factor on the leap: 1 at t = 0, 0.01 at `schedule_steps`."""
    cosine = (1 + jnp.cos(math.pi * t / schedule_steps)) / 2
    return _SCHEDULE_FLOOR + (1 - _SCHEDULE_FLOOR) * cosine

  def update_fn(updates, state, params=None, *, value=None, value_fn=None,
                **extra_args):
    if params is None or value is None or value_fn is None:
      raise ValueError(
          'acme needs the parameters, the loss and a way to re-evaluate it: '
          'call `update(grads, state, params, value=loss, value_fn=f)` with '
          '`f(params)` the loss on the same minibatch (see `acme_step`).')
    loss_and_grad = jax.value_and_grad(
        functools.partial(value_fn, **_value_fn_kwargs(value_fn, extra_args)))
    grads0, params0, loss0 = updates, params, value
    lr = state.learning_rate
    t = state.step.astype(lr.dtype)
    c1, c2 = (1 - b1**t, 1 - b2**t) if bias_correction else (1.0, 1.0)

    def denominators(nu):
      if adam:
        return jax.tree.map(lambda v: (jnp.sqrt(v / c2) + eps) * c1, nu)
      return jax.tree.map(lambda _: jnp.asarray(c1, lr.dtype), grads0)

    def average(mu, nu, grads):
      """The damped moment update; also says whether its sums were finite."""
      scale = denominators(nu) if adam else jax.tree.map(lambda _: 1.0, grads)
      pg = _weighted_sum(mu, grads, scale)
      pp = _weighted_sum(mu, mu, scale)
      gg = _weighted_sum(grads, grads, scale)
      root = jnp.sqrt((2 - b1**2) * gg * pp + b1**2 * pg**2)
      k = (b1 * pg - root) / (gg * (b1 - 1))
      # k >= 0 in exact arithmetic (pg**2 <= pp * gg); a negative k comes from
      # products that underflow when the gradient is negligible beside the
      # momentum, where the exact k is large: no damping, as for k >= 1.
      damping = jnp.where((k >= 0) & (k < 1), k, 1.0)
      damped = jax.tree.map(lambda g: damping * g, grads)
      mu = optax.tree.update_moment(damped, mu, b1, 1)
      if adam:
        nu = optax.tree.update_moment_per_elem_norm(damped, nu, b2, 2)
      finite = jnp.isfinite(pg) & jnp.isfinite(pp) & jnp.isfinite(gg)
      return mu, nu, finite

    # The moments start from the gradient of the first step, and again at
    # every step until one is accepted: a rejected start must not leave the
    # next step with zero moments.
    first = state.count == state.num_rejected
    first_mu = optax.tree.scale((1 - b1) if bias_correction else 1.0, grads0)
    mu0 = optax.tree.where(first, first_mu, state.mu)
    nu0 = None
    start_finite = True
    if adam:
      mean_squares = jax.tree.map(lambda g: jnp.mean(jnp.square(g)), grads0)
      first_nu = jax.tree.map(jnp.full_like, grads0, mean_squares)
      nu0 = optax.tree.where(first, first_nu, state.nu)
      # An overflowing mean square would be an infinite second moment: every
      # later step of that leaf would be zero, with no sum to reject it.
      start_finite = ~first | jax.tree.reduce(
          jnp.logical_and, jax.tree.map(jnp.isfinite, mean_squares), True)

    direction_grads = grads0
    if asam:
      h = (jax.tree.map(jnp.divide, grads0, denominators(nu0)) if adam
           else grads0)
      mask = asam_mask(params0) if callable(asam_mask) else asam_mask
      mask = _default_asam_mask(params0) if mask is None else mask
      weights = jax.tree.map(
          lambda p, is_weight: jnp.abs(p) + eta if is_weight else 1.0,
          params0, mask)
      hw = jax.tree.map(jnp.multiply, h, weights)
      norm = optax.tree.norm(hw) + 1e-16
      perturbation = jax.tree.map(lambda x, w: rho * x * w / norm, hw, weights)
      _, direction_grads = loss_and_grad(
          optax.tree.add(params0, perturbation))

    mu1, nu1, avg_finite = average(mu0, nu0, direction_grads)
    avg_finite = avg_finite & start_finite
    look_denominators = denominators(nu1)
    look_scale = b1 if (nesterov and not use_acme) else 1.0
    params1 = jax.tree.map(lambda p, m, d: p - lr * look_scale * m / d,
                           params0, mu1, look_denominators)

    if not use_acme:
      if nesterov:
        params1 = jax.tree.map(lambda p, g, d: p - lr * (1 - b1) * g / d,
                               params1, direction_grads, look_denominators)
      params1 = optax.tree.scale(1 - lr * weight_decay, params1)
      # The loss is not read here, but a non-finite one means the gradient
      # cannot be trusted either: reject, as with ``acme``.
      accepted = avg_finite & jnp.isfinite(loss0)
      new_params, mu, nu = params1, mu1, nu1
      new_lr, schedule_factor = lr, state.schedule_factor
      branch = jnp.asarray(AcmeBranch.NO_ACME, jnp.int32)
      step = state.step + 1
    else:
      loss1, grads1 = loss_and_grad(params1)
      slope0 = _weighted_sum(mu1, grads0, look_denominators)
      slope1 = _weighted_sum(mu1, grads1, look_denominators)
      pp = _weighted_sum(mu1, mu1, look_denominators)
      gg = _weighted_sum(grads1, grads1, look_denominators)
      target_lr, fitted_lr, branch = step_size_table(
          loss0, loss1, slope0, slope1, lr, b1)

      worse = loss1 > loss0
      gamma = (2 * (1 - b1) / (1 + b1) * (1 + 2 * b1) / (2 - b1)
               * state.schedule_factor)
      leap = jnp.where(worse, fitted_lr, lr) * gamma
      leap_scale = b1 if nesterov else 1.0
      new_params = jax.tree.map(lambda p, m, d: p - leap * leap_scale * m / d,
                                params0, mu1, look_denominators)
      if nesterov:
        nesterov_grads = optax.tree.where(worse, grads0, grads1)
        new_params = jax.tree.map(lambda p, g, d: p - leap * (1 - b1) * g / d,
                                  new_params, nesterov_grads, look_denominators)
      new_params = optax.tree.scale(1 - leap * weight_decay, new_params)
      new_lr = b1 * lr + (1 - b1) * target_lr
      schedule_factor = internal_schedule(t)

      improved = loss1 < loss0
      mu2, nu2, second_avg_finite = average(mu1, nu1, grads1)
      mu = optax.tree.where(improved, mu2, mu1)
      nu = optax.tree.where(improved, nu2, nu1) if adam else None
      step = state.step + 1
      accepted = (avg_finite & jnp.isfinite(loss0) & jnp.isfinite(loss1)
                  & jnp.isfinite(slope0) & jnp.isfinite(slope1)
                  & jnp.isfinite(lr) & jnp.isfinite(pp) & jnp.isfinite(gg)
                  & jnp.isfinite(new_lr)
                  & (second_avg_finite | ~improved))

    # A rejected step keeps the parameters and decays the moments as the
    # authors' code does; moments that a non-finite sum spoiled are the
    # state's instead.
    kept_mu = optax.tree.where(avg_finite, mu1, state.mu)
    kept_nu = optax.tree.where(avg_finite, nu1, state.nu) if adam else None
    new_params = optax.tree.where(accepted, new_params, params0)
    new_state = AcmeState(
        count=optax.safe_increment(state.count),
        mu=optax.tree.cast_like(optax.tree.where(
            accepted, mu, optax.tree.scale(1 - b1, kept_mu)), state.mu),
        nu=optax.tree.cast_like(
            optax.tree.where(accepted, nu, kept_nu), state.nu) if adam else None,
        learning_rate=jnp.where(accepted, new_lr, b1 * lr).astype(lr.dtype),
        step=jnp.where(accepted, step, 1).astype(jnp.int32),
        schedule_factor=jnp.where(
            accepted, schedule_factor,
            1.0 if use_acme else state.schedule_factor).astype(lr.dtype),
        branch=jnp.where(accepted, branch, AcmeBranch.REJECTED).astype(jnp.int32),
        num_rejected=state.num_rejected + (~accepted).astype(jnp.int32),
    )
    new_updates = jax.tree.map(lambda new, old: (new - old).astype(old.dtype),
                               new_params, params0)
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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
    jitted, with the parameters' and the state's buffers donated; ``loss`` is
    the loss at the parameters passed in, ``aux`` is None without ``has_aux``.

  Example:
    >>> import jax, jax.numpy as jnp, optax_adaptive
    >>> loss_fn = lambda params, x: jnp.sum((params - x) ** 2)
    >>> optimizer = optax_adaptive.acme(learning_rate=0.1)
    >>> step = optax_adaptive.acme_step(loss_fn, optimizer)
    >>> params = jnp.zeros(3)
    >>> state = optimizer.init(params)
    >>> params, state, loss, _ = step(params, state, jnp.ones(3))
    >>> print(loss)
    3.0
  """
  def step(params, opt_state, *batch):
    if has_aux:
      (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, *batch)

      def value_fn(p):
        return loss_fn(p, *batch)[0]
    else:
      loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
      aux = None

      def value_fn(p):
        return loss_fn(p, *batch)

    updates, opt_state = optimizer.update(grads, opt_state, params,
                                          value=loss, value_fn=value_fn)
    return optax.apply_updates(params, updates), opt_state, loss, aux

  return jax.jit(step, donate_argnums=(0, 1))
