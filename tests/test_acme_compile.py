"""ACME's compiled step stays linear in the number of parameter leaves.

Its tree-wide scalars (sums over every leaf, the losses, the tests on them)
are read by every leaf's update; fused into each of them, they made the
optimized program, and its compile time, grow with the square of the number
of leaves. The sizes here are of the optimized program (no timing): what
``benchmarks/acme_compile.py`` times.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_adaptive
from optax_adaptive._src import numerics


def _optimized_program_lines(num_leaves: int, **kwargs) -> int:
  params = {f'w{i:02d}': jnp.full((4, 4), i + 1.0) for i in range(num_leaves)}

  def loss_fn(params):
    return sum(jnp.sum((x - 1.0) ** 2) for x in jax.tree.leaves(params))

  optimizer = optax_adaptive.acme(0.01, **kwargs)

  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(
        grads, opt_state, params, value=loss, value_fn=loss_fn
    )
    return optax.apply_updates(params, updates), opt_state

  compiled = jax.jit(step).lower(params, optimizer.init(params)).compile()
  return compiled.as_text().count('\n')


@pytest.mark.parametrize(
    'kwargs',
    [{}, {'adapt_learning_rate': False}],
    ids=['adapted', 'not_adapted'],
)
def test_the_optimized_program_grows_linearly_with_the_leaves(kwargs):
  lines = {n: _optimized_program_lines(n, **kwargs) for n in (2, 4, 8)}
  first, second = lines[4] - lines[2], (lines[8] - lines[4]) / 2
  # Linear: every two more leaves add the same lines (measured: within 2%,
  # with ASAM and SGD too); the quadratic program added 26-35% more at each
  # doubling.
  assert second <= 1.1 * first, lines


@pytest.mark.parametrize('jit', [False, True])
def test_settled_scalars_keep_their_values(jit):
  values = (
      jnp.float32(1.5),
      jnp.float32(jnp.nan),
      jnp.float32(-jnp.inf),
      jnp.asarray(True),
      jnp.int32(-7),
  )
  settle = jax.jit(numerics.settled) if jit else numerics.settled
  settled = settle(*values)
  for before, after in zip(values, settled):
    assert after.dtype == before.dtype and after.shape == ()
    np.testing.assert_array_equal(after, before)
  assert settle(jnp.float32(2.0)) == 2.0  # one scalar: not a tuple


def test_settled_scalars_batch_under_vmap():
  batch = jnp.array([1.0, jnp.nan, -3.0])
  flags = jnp.array([True, False, True])
  values, settled_flags = jax.vmap(numerics.settled)(batch, flags)
  np.testing.assert_array_equal(values, batch)
  np.testing.assert_array_equal(settled_flags, flags)
