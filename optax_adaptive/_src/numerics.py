"""Helpers shared by the methods: dtypes of the state, and finite scaling."""

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
