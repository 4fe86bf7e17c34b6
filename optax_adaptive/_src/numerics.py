"""Helpers shared by the methods: dtypes of the state, finite scaling, sums."""

import jax
import jax.numpy as jnp


def default_float(value) -> jax.Array:
  """`value` as the default float dtype (float64 under `jax_enable_x64`)."""
  return jnp.asarray(value, dtype=jnp.result_type(float))


def moment_dtype(param_dtype, dtype=None) -> jnp.dtype:
  """The dtype of a moment (or accumulator) of a `param_dtype` parameter.

  `dtype` when given; otherwise at least float32. Half-precision parameters
  (float16, bfloat16) get float32 moments: float16 cannot hold the square of a
  gradient above 256, nor an `eps` of 1e-8, and bfloat16's three significant
  digits would lose a moment's small increments.
  """
  if dtype is not None:
    return jax.dtypes.canonicalize_dtype(dtype)
  return jnp.promote_types(param_dtype, jnp.float32)


def zeros_like_moments(params, dtype=None):
  """Zeros shaped like each leaf, in `moment_dtype` of that leaf's dtype."""
  return jax.tree.map(
      lambda p: jnp.zeros_like(p, dtype=moment_dtype(p.dtype, dtype)), params
  )


def scale_finite_entries(tree, scale, usable=True):
  """Multiplies every leaf by a scalar, keeping each leaf's dtype.

  Entries whose product is not finite are zero, and so is every entry where
  `usable` (a scalar or an array that broadcasts against the leaf) is False.
  `jnp.where` rather than a multiplication by zero: `0 * nan` is NaN.
  """

  def scale_leaf(x):
    scaled = x * scale
    return jnp.where(usable & jnp.isfinite(scaled), scaled, 0).astype(x.dtype)

  return jax.tree.map(scale_leaf, tree)


def widened(tree):
  """Every leaf in float32 at least: half-precision products overflow.

  A float16 gradient of 300 has a square beyond float16's range; moments,
  sums and steps are computed in float32 (float64 stays float64).
  """
  return jax.tree.map(
      lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32)), tree
  )


def divide_or_zero(numerator, denominator):
  """``numerator / denominator``, 0 where the denominator is 0.

  With ``eps=0`` an entry whose gradient has been zero has a zero
  denominator, and its numerator (a moment, or a gradient now moving) is
  finite: that entry contributes nothing rather than a NaN. A non-finite
  numerator stays non-finite, so the guard still rejects it.
  """
  return jnp.where(denominator > 0, numerator / denominator, numerator * 0)


def tree_sum(tree, dtype) -> jax.Array:
  """The sum of every element of every leaf; 0 for a tree without leaves."""
  return sum(
      (jnp.sum(x) for x in jax.tree.leaves(tree)), start=jnp.zeros([], dtype)
  )


def weighted_sum(a, b, denominators) -> jax.Array:
  """:math:`\\sum a \\cdot b / D` over every element of every leaf.

  Low-precision leaves (bfloat16, float16) are summed in float32: the slopes
  and the damping factor are differences of these sums, which bfloat16's three
  significant digits would swamp (the authors' code sums in float64).
  """

  def term(x, y, d):
    dtype = jnp.promote_types(jnp.result_type(x, y, d), jnp.float32)
    return divide_or_zero(
        x.astype(dtype) * y.astype(dtype), jnp.asarray(d, dtype)
    )

  terms = jax.tree.map(term, a, b, denominators)
  dtype = jnp.result_type(jnp.float32, *jax.tree.leaves(terms))
  return tree_sum(terms, dtype)


def settled(*scalars):
  """The scalars, computed once, for every leaf's update to read.

  A scalar that combines every leaf (a tree-wide sum, a loss, a test on them)
  is a chain of cheap operations, and XLA fuses such a chain into each of its
  consumers: every leaf's update would recompute the whole chain, and the
  program would grow with the square of the number of leaves
  (``optimization_barrier`` does not stop this fusion). A sort is never fused
  into its consumers: sorting the scalars along their own positions, which
  leaves every value in place, makes XLA compute them once.

  Returns:
    The scalars, unchanged: a tuple when more than one is given.
  """
  positions = jnp.arange(2)
  pairs = [jnp.broadcast_to(x, (2,)) for x in scalars]
  settled = [x[0] for x in jax.lax.sort((positions, *pairs), num_keys=1)[1:]]
  return settled[0] if len(settled) == 1 else tuple(settled)
