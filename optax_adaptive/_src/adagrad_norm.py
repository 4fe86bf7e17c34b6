"""AdaGrad-Norm: a step size shrinking with the accumulated gradient norm."""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_adaptive._src import numerics, validation

_GRANULARITIES = ('global', 'rows')


class ScaleByAdaGradNormState(NamedTuple):
  """State of :func:`scale_by_adagrad_norm`.

  Attributes:
    count: number of steps taken.
    accumulator: :math:`b_t^2`: one scalar with ``granularity='global'``; with
      ``'rows'``, per leaf, one value per output unit (shaped to broadcast
      against the leaf) or one per element for leaves of rank < 2.
  """

  count: chex.Array  # shape=(), dtype=jnp.int32.
  # shape=() with 'global', the default float dtype; a tree with 'rows'.
  accumulator: chex.Array | optax.Updates


def _output_axis(axis) -> int:
  """`axis` as a Python int, to shape the accumulators at `init`."""
  if isinstance(axis, jax.core.Tracer):
    raise ValueError(
        '`axis` shapes the accumulators, so `init` must see its value: under '
        '`optax.inject_hyperparams`, call `init` outside `jax.jit` (its '
        '`update` jits with `axis` injected), or name `axis` in `static_args`.'
    )
  return axis


def _check_output_axis(params, axis: int) -> None:
  for path, leaf in jax.tree.leaves_with_path(params):
    if leaf.ndim >= 2 and not -leaf.ndim <= axis < leaf.ndim:
      raise ValueError(
          '`axis` must index an axis of every parameter of rank >= 2, got '
          f'{axis} for {jax.tree_util.keystr(path)} of shape {leaf.shape}.'
      )


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

  Non-finite inputs, for :func:`adagrad_norm` too: an accumulator whose new
  value would not be finite (a NaN or infinite gradient entry, or squares that
  overflow: entries above about 1.8e19 with float32 accumulators) stays as it
  was, and the entries it scales get a zero update: the whole step with
  ``'global'``, that output unit with ``'rows'``. ``count`` counts skipped
  steps too. The loss is not read.

  Half precision: the accumulators are at least float32 (the ``'global'`` one
  is of the default float dtype) and the squares are taken in their dtype, so
  float16 gradients of any finite size are accumulated; the updates keep the
  gradients' dtype.

  Args:
    b0: :math:`b_0 > 0`.
    granularity: ``'global'`` or ``'rows'``.
    axis: the output axis of each leaf, for ``'rows'``, an integer. Flax
      kernels keep it last (the default); PyTorch layouts keep it first
      (``axis=0``). It shapes the accumulators: ``init`` reads its value, so
      under :func:`optax.inject_hyperparams` call ``init`` outside ``jit``.
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

    Specification: :ref:`docs/specification.md#spec-adagrad-norm
    <spec-adagrad-norm>`.
  """
  validation.check_positive('b0', b0)
  validation.check_choice('granularity', granularity, _GRANULARITIES)
  axis = validation.check_integer('axis', axis)
  validation.check_non_negative('eps', eps)

  def init_fn(params):
    initial = numerics.default_float(b0) ** 2
    if granularity == 'global':
      return ScaleByAdaGradNormState(
          count=jnp.zeros([], jnp.int32), accumulator=initial
      )
    output_axis = _output_axis(axis)
    _check_output_axis(params, output_axis)

    def leaf_accumulator(p):
      shape = tuple(
          1 if a in _row_axes(p.ndim, output_axis) else n
          for a, n in enumerate(p.shape)
      )
      dtype = numerics.moment_dtype(p.dtype)
      if shape == p.shape:
        # Elementwise: `full_like` keeps the parameter's sharding.
        return jnp.full_like(p, initial, dtype)
      return jnp.full(shape, initial, dtype)

    return ScaleByAdaGradNormState(
        count=jnp.zeros([], jnp.int32),
        accumulator=jax.tree.map(leaf_accumulator, params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    count = optax.safe_increment(state.count)
    if granularity == 'global':
      # Squared in the accumulator's dtype: a float16 norm overflows at 256.
      squared_norm = optax.tree.norm(
          optax.tree.cast(updates, state.accumulator.dtype), squared=True
      )
      accumulator = (state.accumulator + squared_norm).astype(
          state.accumulator.dtype
      )
      usable = jnp.isfinite(accumulator)
      accumulator = jnp.where(usable, accumulator, state.accumulator)
      denominator = jnp.sqrt(accumulator) + eps
      updates = numerics.scale_finite_entries(
          updates, 1.0 / denominator, usable
      )
      return updates, ScaleByAdaGradNormState(count, accumulator)

    def leaf_increment(g, acc):
      # The summed axes are read from the accumulator's static shape, not from
      # `axis`, which `optax.inject_hyperparams` passes traced under `jit`.
      # Its size-1 axes are the summed ones, or axes of size 1 in the leaf too,
      # over which a sum changes nothing.
      summed = tuple(a for a, n in enumerate(acc.shape) if n == 1)
      squares = jnp.square(g.astype(acc.dtype))
      return jnp.sum(squares, axis=summed, keepdims=True)

    increments = jax.tree.map(leaf_increment, updates, state.accumulator)
    usable = jax.tree.map(
        lambda acc, inc: jnp.isfinite(acc + inc), state.accumulator, increments
    )
    # Adding a zero increment rather than selecting the old accumulator: under
    # explicit sharding a select needs both sides sharded alike, and the
    # increment takes its gradient's sharding while the initial accumulator
    # may not.
    accumulator = jax.tree.map(
        lambda acc, inc, ok: acc + jnp.where(ok, inc, 0),
        state.accumulator,
        increments,
        usable,
    )
    updates = jax.tree.map(
        lambda g, acc, ok: jnp.where(ok, g / (jnp.sqrt(acc) + eps), 0).astype(
            g.dtype
        ),
        updates,
        accumulator,
        usable,
    )
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

  Non-finite inputs and half precision: see :func:`scale_by_adagrad_norm`.

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

    Specification: :ref:`docs/specification.md#spec-adagrad-norm
    <spec-adagrad-norm>`.
  """
  validation.check_learning_rate(learning_rate)
  return optax.chain(
      scale_by_adagrad_norm(b0=b0, granularity=granularity, axis=axis, eps=eps),
      optax.scale_by_learning_rate(learning_rate),
  )
