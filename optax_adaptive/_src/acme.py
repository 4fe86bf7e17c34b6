"""ACME: a step size adapted from a second loss evaluation and a cubic fit.

Each step evaluates the loss and its gradient at the current parameters and
again at a look-ahead point on the same minibatch (a third time with ASAM, at an
adversarial point), fits a cubic to the two values and slopes along the step,
and moves the learning rate toward the fit's minimiser. The authors' PyTorch
code drives this with a closure and Python branches; here every branch is a
``jnp.where`` on device values, so a step is one compiled program. Its steps
are in ``acme_steps``, its step-size table in ``acme_table``.
"""

from collections.abc import Callable
import functools
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_adaptive._src import acme_steps, numerics, validation
from optax_adaptive._src.acme_steps import AcmeState
from optax_adaptive._src.acme_table import AcmeBranch


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


def _value_fn_kwargs(value_fn, extra_args) -> dict[str, Any]:
  """The extra arguments `value_fn` takes: all, or those its signature names."""
  parameters = inspect.signature(value_fn).parameters.values()
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
    return dict(extra_args)
  names = {p.name for p in parameters}
  return {k: v for k, v in extra_args.items() if k in names}


def _loss_and_grad_at(value_fn, extra_args, params, rate_dtype):
  """The loss (in the rate's dtype) and gradient (float32 at least) at a point.

  The point is in float32 or wider; `value_fn` sees it in the parameters'
  dtypes.
  """
  value_and_grad = jax.value_and_grad(
      functools.partial(value_fn, **_value_fn_kwargs(value_fn, extra_args))
  )

  def loss_and_grad(wide_params):
    loss, grads = value_and_grad(optax.tree.cast_like(wide_params, params))
    return loss.astype(rate_dtype), numerics.widened(grads)

  return loss_and_grad


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
     new momentum's squared norm :math:`\sum m^2 / D` at most twice the old
     one's;
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
    Specification: :ref:`docs/specification.md#spec-acme <spec-acme>`.

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

  settings = acme_steps.Settings(
      schedule_steps=schedule_steps,
      asam_mask=asam_mask,
      b1=b1,
      b2=b2,
      eps=eps,
      weight_decay=weight_decay,
      rho=rho,
      eta=eta,
      max_learning_rate=max_learning_rate,
      adam=adam,
      asam=asam,
      nesterov=nesterov,
      bias_correction=bias_correction,
      adapt_learning_rate=adapt_learning_rate,
  )

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
    lr = state.adapted_learning_rate
    if callable(learning_rate):
      lr = jnp.asarray(rate_at(state.count), lr.dtype)
    return acme_steps.step(
        state,
        params,
        updates,
        jnp.asarray(value).astype(lr.dtype),
        lr,
        _loss_and_grad_at(value_fn, extra_args, params, lr.dtype),
        settings,
    )

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
