"""AdaLoss, AdaGrad-Norm and the SGD baselines: properties from the paper."""

import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_adaptive


@hypothesis.settings(deadline=None, max_examples=25)
@hypothesis.given(
    losses=st.lists(st.floats(-50, 50), min_size=1, max_size=12),
    b0=st.floats(0.01, 10),
    alpha=st.floats(0, 5),
    c=st.floats(-2, 2),
)
def test_adaloss_accumulator_is_b0_squared_plus_weighted_absolute_losses(
    losses, b0, alpha, c
):
  tx = optax_adaptive.scale_by_adaloss(b0=b0, alpha=alpha, c=c)
  params = jnp.zeros(2)
  state = tx.init(params)
  for loss in losses:
    _, state = tx.update(jnp.ones(2), state, params, value=jnp.float32(loss))
  expected = b0**2 + alpha * sum(abs(np.float32(loss) - c) for loss in losses)
  np.testing.assert_allclose(state.accumulator, expected, rtol=1e-5)
  np.testing.assert_allclose(state.scale, 1 / np.sqrt(expected), rtol=1e-5)
  assert int(state.count) == len(losses)


def test_adaloss_step_is_gradient_over_b_plus_undivided_weight_decay():
  tx = optax_adaptive.adaloss(
      learning_rate=0.5, b0=1.0, alpha=1.0, c=1.0, weight_decay=0.1
  )
  params = jnp.array([2.0, -4.0])
  grads = jnp.array([1.0, 3.0])
  updates, state = tx.update(grads, tx.init(params), params, value=4.0)
  b = np.sqrt(1.0 + abs(4.0 - 1.0))
  np.testing.assert_allclose(
      updates, -0.5 * (grads / b + 0.1 * params), rtol=1e-6
  )
  np.testing.assert_allclose(optax.tree.get(state, 'scale'), 1 / b, rtol=1e-6)


def test_adaloss_without_value_says_to_pass_the_loss():
  tx = optax_adaptive.adaloss(learning_rate=0.1)
  params = jnp.zeros(2)
  with pytest.raises(ValueError, match='value=loss'):
    tx.update(jnp.ones(2), tx.init(params), params)


@pytest.mark.parametrize('bad_loss', [jnp.nan, jnp.inf, -jnp.inf])
def test_adaloss_skips_a_non_finite_loss_and_keeps_its_accumulator(bad_loss):
  tx = optax_adaptive.adaloss(learning_rate=0.1, b0=1.0)
  params = jnp.ones(2)
  state = tx.init(params)
  step = jax.jit(tx.update)
  _, state = step(jnp.ones(2), state, params, value=jnp.float32(3.0))
  updates, skipped = step(
      jnp.ones(2), state, params, value=jnp.float32(bad_loss)
  )
  chex.assert_trees_all_close(updates, jnp.zeros(2))
  np.testing.assert_allclose(skipped[0].accumulator, 4.0)
  chex.assert_tree_all_finite(skipped)
  updates, state = step(jnp.ones(2), skipped, params, value=jnp.float32(5.0))
  np.testing.assert_allclose(state[0].accumulator, 9.0)
  np.testing.assert_allclose(updates, -0.1 / 3.0 * jnp.ones(2), rtol=1e-6)


def test_adaloss_is_robust_to_b0_where_constant_sgd_is_not():
  """The paper's claim in miniature: a tiny b0 is fixed by the loss term."""

  def loss_fn(p):
    return 0.5 * jnp.sum(jnp.array([1.0, 10.0]) * p**2)

  def final_loss(tx):
    params = jnp.array([1.0, 1.0])
    state = tx.init(params)
    for _ in range(200):
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, state = tx.update(grads, state, params, value=loss)
      params = optax.apply_updates(params, updates)
    return float(loss_fn(params))

  for b0 in (0.01, 0.1, 1.0):
    assert final_loss(optax_adaptive.adaloss(0.1, b0=b0)) < 1e-4, b0
  assert not final_loss(optax_adaptive.sgd_constant(0.1, b0=0.01)) < 1.0


def test_sgd_decay_sqrt_scale_follows_the_step_count():
  tx = optax_adaptive.sgd_decay_sqrt(learning_rate=1.0, b0=2.0, alpha=3.0)
  params = jnp.zeros(1)
  state = tx.init(params)
  for t in range(1, 5):
    updates, state = tx.update(jnp.ones(1), state, params)
    np.testing.assert_allclose(updates, -1 / np.sqrt(4.0 + 3.0 * t), rtol=1e-6)
    np.testing.assert_allclose(
        state[0].scale, 1 / np.sqrt(4.0 + 3.0 * t), rtol=1e-6
    )


def test_adagrad_norm_global_accumulates_the_squared_tree_norm():
  tx = optax_adaptive.scale_by_adagrad_norm(b0=0.5)
  params = {'a': jnp.zeros((2, 2)), 'b': jnp.zeros(3)}
  grads = {'a': jnp.full((2, 2), 1.0), 'b': jnp.full(3, 2.0)}
  state = tx.init(params)
  updates, state = tx.update(grads, state)
  updates, state = tx.update(grads, state)
  expected = 0.25 + 2 * (4 * 1.0 + 3 * 4.0)
  np.testing.assert_allclose(state.accumulator, expected, rtol=1e-6)
  np.testing.assert_allclose(
      updates['b'], 2.0 / (np.sqrt(expected) + 1e-10), rtol=1e-6
  )


@pytest.mark.parametrize('axis', [-1, 0])
def test_adagrad_norm_rows_keeps_one_accumulator_per_output_unit(axis):
  kernel_shape = (3, 3, 4, 5)  # Flax conv kernel: HWIO, the output last.
  tx = optax_adaptive.scale_by_adagrad_norm(
      b0=1.0, granularity='rows', axis=axis
  )
  params = {'kernel': jnp.zeros(kernel_shape), 'bias': jnp.zeros(5)}
  grads = {
      'kernel': jax.random.normal(jax.random.key(0), kernel_shape),
      'bias': jnp.arange(5.0),
  }
  state = tx.init(params)
  updates, state = tx.update(grads, state)
  out_axis = axis % 4
  reduce_axes = tuple(a for a in range(4) if a != out_axis)
  expected = 1.0 + np.sum(
      np.square(grads['kernel']), axis=reduce_axes, keepdims=True
  )
  np.testing.assert_allclose(state.accumulator['kernel'], expected, rtol=1e-5)
  np.testing.assert_allclose(
      state.accumulator['bias'], 1.0 + np.arange(5.0) ** 2
  )
  np.testing.assert_allclose(
      updates['kernel'],
      grads['kernel'] / (np.sqrt(expected) + 1e-10),
      rtol=1e-5,
  )


@pytest.mark.parametrize(
    'make, match',
    [
        (lambda: optax_adaptive.adaloss(-0.1), 'learning_rate'),
        (lambda: optax_adaptive.adaloss(0.1, b0=0.0), 'b0'),
        (lambda: optax_adaptive.adaloss(0.1, alpha=-1.0), 'alpha'),
        (
            lambda: optax_adaptive.adaloss(0.1, weight_decay=-1.0),
            'weight_decay',
        ),
        (lambda: optax_adaptive.adaloss(lambda count: -0.1), 'learning_rate'),
        (lambda: optax_adaptive.sgd_constant(0.1, b0=-1.0), 'b0'),
        (lambda: optax_adaptive.sgd_decay_sqrt(0.1, b0=0.0), 'b0'),
        (
            lambda: optax_adaptive.adagrad_norm(0.1, granularity='layer'),
            'granularity',
        ),
        (lambda: optax_adaptive.adagrad_norm(0.1, b0=-2.0), 'b0'),
        (lambda: optax_adaptive.adagrad_norm(0.1, eps=-1e-3), 'eps'),
    ],
)
def test_invalid_hyperparameters_name_the_argument(make, match):
  with pytest.raises(ValueError, match=match):
    make()
