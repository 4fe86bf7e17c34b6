"""AdaDiff: its second moment, the eps quirk and its textbook form."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_adaptive


def test_second_moment_tracks_the_change_of_the_gradient():
  b1, b2, eps = 0.9, 0.99, 1e-8
  tx = optax_adaptive.scale_by_adadiff(b1, b2, eps)
  params = jnp.zeros(2)
  state = tx.init(params)
  g1, g2 = jnp.array([1.0, -2.0]), jnp.array([3.0, -2.0])
  _, state = tx.update(g1, state)
  updates, state = tx.update(g2, state)
  v1 = (1 - b2) * (g1**2 + g1**2) + eps
  v2 = b2 * v1 + (1 - b2) * (g2**2 + (g2 - g1) ** 2) + eps
  m2 = b1 * (1 - b1) * g1 + (1 - b1) * g2
  np.testing.assert_allclose(state.nu, v2, rtol=1e-6)
  np.testing.assert_allclose(state.previous_updates, g2)
  np.testing.assert_allclose(
      updates, np.sqrt(1 - b2**2) / (1 - b1**2) * m2 / np.sqrt(v2), rtol=1e-5
  )


def test_eps_accumulates_in_the_state_by_default():
  b2, eps = 0.9, 1e-3
  faithful = optax_adaptive.scale_by_adadiff(b2=b2, eps=eps)
  textbook = optax_adaptive.scale_by_adadiff(
      b2=b2, eps=eps, accumulate_eps=False
  )
  params = jnp.zeros(1)
  s1, s2 = faithful.init(params), textbook.init(params)
  for _ in range(3):
    u1, s1 = faithful.update(jnp.zeros(1), s1)
    u2, s2 = textbook.update(jnp.zeros(1), s2)
  np.testing.assert_allclose(s1.nu, eps * (1 + b2 + b2**2), rtol=1e-6)
  np.testing.assert_allclose(s2.nu, 0.0)
  chex.assert_trees_all_close((u1, u2), (jnp.zeros(1), jnp.zeros(1)))


def test_textbook_form_is_bias_corrected_moments_over_sqrt_plus_eps():
  b1, b2, eps = 0.8, 0.95, 1e-3
  tx = optax_adaptive.scale_by_adadiff(b1, b2, eps, accumulate_eps=False)
  params = jnp.zeros(2)
  g = jnp.array([0.5, -1.5])
  updates, _ = tx.update(g, tx.init(params))
  v_hat = 2 * g**2  # (1 - b2)(g² + g²) / (1 - b2)
  np.testing.assert_allclose(updates, g / (np.sqrt(v_hat) + eps), rtol=1e-6)


def test_weight_decay_is_part_of_the_remembered_gradient():
  params = jnp.array([2.0])
  tx = optax_adaptive.adadiff(0.1, weight_decay=0.5)
  _, state = tx.update(jnp.array([1.0]), tx.init(params), params)
  np.testing.assert_allclose(
      optax.tree.get(state, 'previous_updates'), [1.0 + 0.5 * 2.0]
  )


def test_recombines_in_a_chain_with_clipping():
  tx = optax.chain(
      optax.clip_by_global_norm(1.0),
      optax_adaptive.scale_by_adadiff(),
      optax.scale_by_learning_rate(1e-3),
  )
  params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)}
  state = tx.init(params)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, value=1.0))
  for _ in range(3):
    updates, state = step(
        jax.tree.map(lambda x: 100 * jnp.ones_like(x), params), state, params
    )
  chex.assert_tree_all_finite(updates)
  chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)


def test_moment_dtypes():
  params = {'w': jnp.ones(3, jnp.float32)}
  tx = optax_adaptive.adadiff(0.1, mu_dtype=jnp.bfloat16, nu_dtype=jnp.float32)
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(params, state, params)
  assert optax.tree.get(state, 'mu')['w'].dtype == jnp.bfloat16
  assert optax.tree.get(state, 'previous_updates')['w'].dtype == jnp.bfloat16
  assert optax.tree.get(state, 'nu')['w'].dtype == jnp.float32
  assert updates['w'].dtype == jnp.float32


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(learning_rate=-1.0), 'learning_rate'),
        (dict(b1=-0.1), 'b1'),
        (dict(b2=1.5), 'b2'),
        (dict(eps=-1e-8), 'eps'),
        (dict(weight_decay=-0.1), 'weight_decay'),
    ],
)
def test_invalid_hyperparameters_name_the_argument(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optax_adaptive.adadiff(**kwargs)
