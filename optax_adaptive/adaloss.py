"""AdaLoss and the step-size rules it is compared with.

AdaLoss (Wu, Xie, Du and Ward, AAAI 2022) divides the learning rate by
:math:`b_t`, where :math:`b_t^2` accumulates the *loss*: one scalar of state,
whatever the model size. Its baselines are AdaGrad-Norm (the same rule with the
squared gradient norm), SGD with a constant step :math:`\\eta / b_0` and SGD
with a :math:`1/\\sqrt{t}` step.

Each method is a ``scale_by_*`` building block and an alias that chains it with
optax's weight decay and learning rate, in the order of the authors' code.

Non-finite inputs. None of these rules writes a NaN or an infinity into its
state. What each one skips follows what its state accumulates:

- AdaLoss's accumulator sums the loss: a step whose loss is not finite, or would
  overflow the accumulator, is skipped whole (accumulator kept, zero update).
- AdaGrad-Norm's accumulator sums squared gradients: a step (``'global'``) or an
  output unit (``'rows'``) whose sum of squares is not finite, because of a NaN
  or infinite gradient entry or one whose square overflows (about 1.8e19 in
  float32 and bfloat16), is skipped (accumulator kept, zero update).
- Every rule also gives a zero update to a gradient entry whose scaled value is
  not finite, so a NaN entry never reaches the parameters.

The L2 weight decay of the aliases is added after the scaling and does not read
the gradient: it still applies on a skipped step. Wrap an alias in
:func:`optax.apply_if_finite` to skip every step with any non-finite gradient
entry instead (it reads the gradient once more).
"""

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_adaptive import _validation

_GRANULARITIES = ('global', 'rows')


def _default_float(value) -> jax.Array:
  """`value` as the default float dtype (float64 under `jax_enable_x64`)."""
  return jnp.asarray(value, dtype=jnp.result_type(float))


def _scale_finite_entries(tree, scale, usable=True):
  """Multiplies every leaf by a scalar, keeping each leaf's dtype.

  Entries whose product is not finite are zero, and so is every entry where
  `usable` (a scalar or an array that broadcasts against the leaf) is False.
  `jnp.where` rather than a multiplication by zero: `0 * nan` is NaN.
  """
  def scale_leaf(x):
    scaled = x * scale
    return jnp.where(usable & jnp.isfinite(scaled), scaled, 0).astype(x.dtype)

  return jax.tree.map(scale_leaf, tree)


class ScaleByAdaLossState(NamedTuple):
  """State of :func:`scale_by_adaloss`.

  Attributes:
    count: number of steps taken.
    accumulator: :math:`b_t^2 = b_0^2 + \\alpha \\sum_i |L_i - c|`.
    scale: the last step's factor :math:`1 / b_t`; the effective step size is
      the learning rate times ``scale``.
  """
  count: chex.Array
  accumulator: chex.Array
  scale: chex.Array


def scale_by_adaloss(
    b0: float = 1.0,
    alpha: float = 1.0,
    c: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates by :math:`1/b_t`, where :math:`b_t^2` accumulates the loss.

  With :math:`L_t` the loss of step :math:`t` (passed to ``update`` as
  ``value``):

  .. math::
    b_t^2 = b_{t-1}^2 + \alpha |L_t - c|, \qquad
    u_t = g_t / b_t, \qquad b_0^2 = \texttt{b0}^2.

  The accumulator is updated before it scales the step, as in the authors'
  code.

  Non-finite inputs: a step whose loss is NaN or infinite, or would overflow
  the accumulator, is skipped: the accumulator stays as it was and the updates
  are zero (it would otherwise end the run with a step size of zero or NaN for
  good). A gradient entry that is not finite gets a zero update; the others
  step. ``count`` counts skipped steps too.

  Args:
    b0: initial value of :math:`b`, > 0.
    alpha: weight of the loss in the accumulator, >= 0.
    c: offset subtracted from the loss, for losses whose minimum is not zero.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose ``update`` needs the
    keyword ``value``, the loss at the current parameters.

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
  """
  _validation.check_positive('b0', b0)
  _validation.check_non_negative('alpha', alpha)
  _validation.check_finite('c', c)

  def init_fn(params):
    del params
    accumulator = _default_float(b0) ** 2
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
          '`update(grads, state, params, value=loss)`.')
    accumulator = (state.accumulator + alpha * jnp.abs(value - c)).astype(
        state.accumulator.dtype)
    usable = jnp.isfinite(accumulator)
    accumulator = jnp.where(usable, accumulator, state.accumulator)
    scale = jax.lax.rsqrt(accumulator)
    updates = _scale_finite_entries(updates, scale, usable)
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

  Non-finite inputs: a NaN or infinite loss skips the gradient step (the
  accumulator is kept); a NaN or infinite gradient entry gets no gradient step
  while the others do. The weight decay, which reads neither, still applies.
  See :func:`scale_by_adaloss`.

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
  """
  _validation.check_learning_rate(learning_rate)
  _validation.check_non_negative('weight_decay', weight_decay)
  return optax.chain(
      scale_by_adaloss(b0=b0, alpha=alpha, c=c),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate),
  )


def _scale_finite(step_size: float) -> optax.GradientTransformationExtraArgs:
  """`optax.scale` that gives a zero update to an entry that is not finite."""

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return _scale_finite_entries(updates, step_size), state

  return optax.GradientTransformationExtraArgs(
      optax.init_empty_state, update_fn)


def sgd_constant(
    learning_rate: optax.ScalarOrSchedule,
    b0: float,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD with the constant step :math:`\eta / b_0`, AdaLoss's first baseline.

  .. math::
    p_{t+1} = p_t - \eta_t \left(g_t / b_0 + \lambda p_t\right).

  Non-finite inputs: a gradient entry that is not finite (or whose scaled value
  overflows) gets no gradient step; the weight decay still applies to it. The
  loss is not read.

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
  """
  _validation.check_learning_rate(learning_rate)
  _validation.check_positive('b0', b0)
  _validation.check_non_negative('weight_decay', weight_decay)
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
  count: chex.Array
  scale: chex.Array


def scale_by_decay_sqrt(
    b0: float = 1.0,
    alpha: float = 1.0,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates by :math:`1 / \sqrt{b_0^2 + \alpha t}` at step :math:`t \ge 1`.

  Non-finite inputs: a gradient entry whose scaled value is not finite gets a
  zero update. The state depends on the step count alone.

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
  """
  _validation.check_positive('b0', b0)
  _validation.check_non_negative('alpha', alpha)

  def init_fn(params):
    del params
    return ScaleByDecaySqrtState(
        count=jnp.zeros([], jnp.int32),
        scale=jax.lax.rsqrt(_default_float(b0) ** 2),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    count = optax.safe_increment(state.count)
    scale = jax.lax.rsqrt(_default_float(b0) ** 2 + alpha * count)
    return _scale_finite_entries(updates, scale), ScaleByDecaySqrtState(
        count=count, scale=scale.astype(state.scale.dtype))

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

  Non-finite inputs: a gradient entry that is not finite gets no gradient step;
  the weight decay still applies to it. The loss is not read.

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
  """
  _validation.check_learning_rate(learning_rate)
  _validation.check_non_negative('weight_decay', weight_decay)
  return optax.chain(
      scale_by_decay_sqrt(b0=b0, alpha=alpha),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate),
  )


class ScaleByAdaGradNormState(NamedTuple):
  """State of :func:`scale_by_adagrad_norm`.

  Attributes:
    count: number of steps taken.
    accumulator: :math:`b_t^2`: one scalar with ``granularity='global'``; with
      ``'rows'``, per leaf, one value per output unit (shaped to broadcast
      against the leaf) or one per element for leaves of rank < 2.
  """
  count: chex.Array
  accumulator: Any


def _check_output_axis(params, axis: int) -> None:
  for path, leaf in jax.tree.leaves_with_path(params):
    if leaf.ndim >= 2 and not -leaf.ndim <= axis < leaf.ndim:
      raise ValueError(
          f'`axis` must index an axis of every parameter of rank >= 2, got '
          f'{axis} for {jax.tree_util.keystr(path)} of shape {leaf.shape}.')


def _row_axes(ndim: int, axis: int) -> tuple[int, ...]:
  """The axes summed into one accumulator per output unit of a leaf."""
  if ndim < 2:
    return ()
  output_axis = axis % ndim
  return tuple(a for a in range(ndim) if a != output_axis)


def scale_by_adagrad_norm(
    b0: float = 1.0,
    granularity: str = 'global',
    axis: int = -1,
    eps: float = 1e-10,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates by the accumulated squared gradient norm (AdaGrad-Norm).

  .. math::
    b_t^2 = b_{t-1}^2 + \|g_t\|^2, \qquad u_t = g_t / (b_t + \epsilon).

  With ``granularity='global'`` (the paper's theory) :math:`\|g_t\|^2` is the
  squared norm of the whole gradient tree and :math:`b` is one scalar. With
  ``'rows'`` (the authors' experiment code) each leaf keeps one accumulator per
  output unit: the sum of squares over every other axis of that leaf. Leaves of
  rank < 2 (biases) accumulate elementwise.

  Non-finite inputs: an accumulator whose new value would not be finite (a NaN
  or infinite gradient entry, or squares that overflow: entries above about
  1.8e19 in float32) stays as it was, and the entries it scales get a zero
  update: the whole step with ``'global'``, that output unit with ``'rows'``.
  ``count`` counts skipped steps too.

  Args:
    b0: :math:`b_0 > 0`.
    granularity: ``'global'`` or ``'rows'``.
    axis: the output axis of each leaf, for ``'rows'``. Flax kernels keep it
      last (the default); PyTorch layouts keep it first (``axis=0``).
    eps: added to :math:`b_t` before dividing.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax.numpy as jnp, optax_adaptive
    >>> tx = optax_adaptive.scale_by_adagrad_norm(b0=1.0)
    >>> params = jnp.zeros(2)
    >>> updates, state = tx.update(jnp.array([2.0, 2.0]), tx.init(params))
    >>> print(state.accumulator, updates)
    9.0 [0.6666667 0.6666667]

  References:
    Ward, Wu and Bottou, `AdaGrad stepsizes: sharp convergence over nonconvex
    landscapes <https://arxiv.org/abs/1806.01811>`_, ICML 2019.
  """
  _validation.check_positive('b0', b0)
  _validation.check_choice('granularity', granularity, _GRANULARITIES)
  _validation.check_non_negative('eps', eps)

  def init_fn(params):
    initial = _default_float(b0) ** 2
    if granularity == 'global':
      return ScaleByAdaGradNormState(
          count=jnp.zeros([], jnp.int32), accumulator=initial)
    _check_output_axis(params, axis)

    def leaf_accumulator(p):
      shape = tuple(1 if a in _row_axes(p.ndim, axis) else n
                    for a, n in enumerate(p.shape))
      dtype = jnp.promote_types(p.dtype, jnp.float32)
      if shape == p.shape:
        # Elementwise: `full_like` keeps the parameter's sharding.
        return jnp.full_like(p, initial, dtype)
      return jnp.full(shape, initial, dtype)

    return ScaleByAdaGradNormState(
        count=jnp.zeros([], jnp.int32),
        accumulator=jax.tree.map(leaf_accumulator, params))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    count = optax.safe_increment(state.count)
    if granularity == 'global':
      accumulator = state.accumulator + optax.tree.norm(updates, squared=True)
      accumulator = accumulator.astype(state.accumulator.dtype)
      usable = jnp.isfinite(accumulator)
      accumulator = jnp.where(usable, accumulator, state.accumulator)
      denominator = jnp.sqrt(accumulator) + eps
      updates = _scale_finite_entries(updates, 1.0 / denominator, usable)
      return updates, ScaleByAdaGradNormState(count, accumulator)

    def leaf_increment(g, acc):
      squares = jnp.square(g.astype(acc.dtype))
      return jnp.sum(squares, axis=_row_axes(g.ndim, axis), keepdims=True)

    increments = jax.tree.map(leaf_increment, updates, state.accumulator)
    usable = jax.tree.map(lambda acc, inc: jnp.isfinite(acc + inc),
                          state.accumulator, increments)
    # Adding a zero increment rather than selecting the old accumulator: under
    # explicit sharding a select needs both sides sharded alike, and the
    # increment takes its gradient's sharding while the initial accumulator
    # may not.
    accumulator = jax.tree.map(
        lambda acc, inc, ok: acc + jnp.where(ok, inc, 0),
        state.accumulator, increments, usable)
    updates = jax.tree.map(
        lambda g, acc, ok: jnp.where(
            ok, g / (jnp.sqrt(acc) + eps), 0).astype(g.dtype),
        updates, accumulator, usable)
    return updates, ScaleByAdaGradNormState(count, accumulator)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adagrad_norm(
    learning_rate: optax.ScalarOrSchedule,
    b0: float = 1.0,
    granularity: str = 'global',
    axis: int = -1,
    eps: float = 1e-10,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaGrad-Norm: SGD whose step shrinks with the accumulated gradient norm.

  .. math::
    b_t^2 = b_{t-1}^2 + \|g_t\|^2, \qquad
    p_{t+1} = p_t - \eta_t \, g_t / (b_t + \epsilon).

  The nearest optax built-in is :func:`optax.adagrad`, which keeps one
  accumulator per parameter instead of one per tree (``'global'``) or per
  output unit (``'rows'``); see :func:`scale_by_adagrad_norm`.

  Non-finite inputs: a gradient with a NaN or infinite entry, or one whose
  squared norm overflows, is skipped (accumulator kept, zero update): the whole
  step with ``'global'``, the output units it touches with ``'rows'``. The loss
  is not read.

  Args:
    learning_rate: :math:`\eta_t`, a float or an optax schedule.
    b0: :math:`b_0 > 0`.
    granularity: ``'global'`` (one scalar) or ``'rows'`` (one per output unit).
    axis: the output axis of each leaf for ``'rows'``; -1 for Flax kernels.
    eps: added to :math:`b_t` before dividing.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_adaptive
    >>> params = {'w': jnp.ones((3, 2)), 'b': jnp.zeros(2)}
    >>> tx = optax_adaptive.adagrad_norm(0.1, b0=0.1, granularity='rows')
    >>> state = tx.init(params)
    >>> print(jax.tree.map(jnp.shape, state[0].accumulator))
    {'b': (2,), 'w': (1, 2)}

  References:
    Ward, Wu and Bottou, `AdaGrad stepsizes: sharp convergence over nonconvex
    landscapes <https://arxiv.org/abs/1806.01811>`_, ICML 2019;
    Wu, Xie, Du and Ward, AdaLoss, AAAI 2022 (the baseline's ``'rows'`` form).
  """
  _validation.check_learning_rate(learning_rate)
  return optax.chain(
      scale_by_adagrad_norm(b0=b0, granularity=granularity, axis=axis, eps=eps),
      optax.scale_by_learning_rate(learning_rate),
  )
