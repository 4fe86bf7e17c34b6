"""Helpers shared by the step-size rules of the AdaLoss family."""

import jax
import jax.numpy as jnp


def default_float(value) -> jax.Array:
  """`value` as the default float dtype (float64 under `jax_enable_x64`)."""
  return jnp.asarray(value, dtype=jnp.result_type(float))


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

