"""Adam-L2, AdamW and AdamProx: scale-freeness and the relation to optax."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_adaptive


def _quadratic_problem():
  matrix = jax.random.normal(jax.random.key(0), (6, 4))
  target = jax.random.normal(jax.random.key(1), (6,))
  params = {'w': jax.random.normal(jax.random.key(2), (4,)), 'b': jnp.ones(())}

  def loss_fn(p):
    return jnp.mean((matrix @ p['w'] + p['b'] - target) ** 2)

  return params, loss_fn


def _trajectory(tx, loss_fn, params, steps=15):
  state = tx.init(params)
  out = []
  for _ in range(steps):
    grads = jax.grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out


@pytest.mark.parametrize('scale', [1e-3, 10.0, 1e4])
@pytest.mark.parametrize('name', ['adamw', 'adam_prox'])
def test_updates_do_not_change_when_the_loss_is_rescaled(name, scale):
  with jax.enable_x64(True):
    params, loss_fn = _quadratic_problem()
    params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
    tx = getattr(optax_adaptive, name)(
        optax.cosine_decay_schedule(0.05, 15), eps=0.0, weight_decay=0.1
    )
    plain = _trajectory(tx, loss_fn, params)
    scaled = _trajectory(tx, lambda p: scale * loss_fn(p), params)
  chex.assert_trees_all_close(plain, scaled, rtol=1e-10, atol=1e-12)


def test_adam_l2_is_not_scale_free():
  params, loss_fn = _quadratic_problem()
  tx = optax_adaptive.adam_l2(0.05, eps=0.0, weight_decay=0.1)
  plain = _trajectory(tx, loss_fn, params)[-1]
  scaled = _trajectory(tx, lambda p: 100.0 * loss_fn(p), params)[-1]
  assert not np.allclose(plain['w'], scaled['w'], rtol=1e-3)


def test_adam_l2_is_l2_penalty_then_optax_adam():
  params, loss_fn = _quadratic_problem()
  ours = _trajectory(
      optax_adaptive.adam_l2(0.05, weight_decay=0.1), loss_fn, params
  )
  theirs = _trajectory(
      optax.chain(optax.add_decayed_weights(0.1), optax.adam(0.05)),
      loss_fn,
      params,
  )
  chex.assert_trees_all_close(ours, theirs, rtol=1e-6)


def test_adamw_equals_optax_adamw_with_decay_divided_by_the_initial_rate():
  params, loss_fn = _quadratic_problem()
  schedule = optax.cosine_decay_schedule(0.05, 15)
  ours = _trajectory(
      optax_adaptive.adamw(schedule, weight_decay=0.2), loss_fn, params
  )
  theirs = _trajectory(
      optax.adamw(schedule, weight_decay=0.2 / 0.05), loss_fn, params
  )
  chex.assert_trees_all_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_decay_with_learning_rate_gives_optax_adamw():
  params, loss_fn = _quadratic_problem()
  schedule = optax.cosine_decay_schedule(0.05, 15)
  ours = _trajectory(
      optax_adaptive.adamw(
          schedule, weight_decay=0.2, decay_with_learning_rate=True
      ),
      loss_fn,
      params,
  )
  theirs = _trajectory(optax.adamw(schedule, weight_decay=0.2), loss_fn, params)
  chex.assert_trees_all_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_adam_prox_is_the_proximal_step_of_the_adam_step():
  params, loss_fn = _quadratic_problem()
  schedule = optax.linear_schedule(0.05, 0.01, 10)
  prox = optax_adaptive.adam_prox(schedule, weight_decay=0.3)
  adam = optax.adam(schedule)
  prox_state, adam_state = prox.init(params), adam.init(params)
  for t in range(5):
    grads = jax.grad(loss_fn)(params)
    adam_step, adam_state = adam.update(grads, adam_state, params)
    updates, prox_state = prox.update(grads, prox_state, params)
    decay = 0.3 * schedule(t) / schedule(0)
    expected = jax.tree.map(
        lambda p, u, decay=decay: (p + u) / (1 + decay), params, adam_step
    )
    params = optax.apply_updates(params, updates)
    chex.assert_trees_all_close(params, expected, rtol=1e-6)
    np.testing.assert_allclose(
        optax.tree.get(prox_state, 'decay'), decay, rtol=1e-6
    )


@pytest.mark.parametrize('name', ['adam_l2', 'adamw', 'adam_prox'])
def test_mask_leaves_unselected_leaves_undecayed(name):
  params = {'w': jnp.ones(3), 'b': jnp.ones(3)}
  zero = jax.tree.map(jnp.zeros_like, params)
  tx = getattr(optax_adaptive, name)(
      0.1, weight_decay=0.5, mask={'w': True, 'b': False}
  )
  updates, _ = tx.update(zero, tx.init(params), params)
  chex.assert_trees_all_close(updates['b'], jnp.zeros(3))
  assert np.all(np.asarray(updates['w']) < 0)


def test_injected_learning_rate_changes_move_the_decay_multiplier():
  """Under inject_hyperparams the base rate is the one injected at init."""
  params = jnp.ones(2)
  tx = optax.inject_hyperparams(optax_adaptive.adamw)(
      learning_rate=0.1, weight_decay=0.5
  )
  state = tx.init(params)
  state.hyperparams['learning_rate'] = jnp.asarray(0.05)
  updates, state = tx.update(jnp.zeros(2), state, params)
  np.testing.assert_allclose(updates, -0.5 * 0.5 * params, rtol=1e-6)
  np.testing.assert_allclose(optax.tree.get(state, 'decay'), 0.25, rtol=1e-6)


def test_warmup_from_zero_needs_a_base_learning_rate():
  warmup = optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 50)
  with pytest.raises(ValueError, match='base_learning_rate'):
    optax_adaptive.adamw(warmup, weight_decay=0.1)
  tx = optax_adaptive.adamw(warmup, weight_decay=0.1, base_learning_rate=0.1)
  params = jnp.ones(2)
  state = tx.init(params)
  for t in range(6):
    updates, state = tx.update(jnp.zeros(2), state, params)
    np.testing.assert_allclose(
        updates, -0.1 * warmup(t) / 0.1 * params, rtol=1e-5, atol=1e-8
    )


@pytest.mark.parametrize('name', ['adam_l2', 'adamw', 'adam_prox'])
def test_moment_dtypes(name):
  params = {'w': jnp.ones(3, jnp.float32)}
  tx = getattr(optax_adaptive, name)(
      0.1, mu_dtype=jnp.bfloat16, nu_dtype=jnp.float16
  )
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(params, state, params)
  assert optax.tree.get(state, 'mu')['w'].dtype == jnp.bfloat16
  assert optax.tree.get(state, 'nu')['w'].dtype == jnp.float16
  assert updates['w'].dtype == jnp.float32


@pytest.mark.parametrize('name', ['adam_l2', 'adamw', 'adam_prox'])
@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(learning_rate=-1.0), 'learning_rate'),
        (dict(learning_rate=0.1, b1=1.0), 'b1'),
        (dict(learning_rate=0.1, b2=-0.1), 'b2'),
        (dict(learning_rate=0.1, eps=-1.0), 'eps'),
        (dict(learning_rate=0.1, weight_decay=-1.0), 'weight_decay'),
    ],
)
def test_invalid_hyperparameters_name_the_argument(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    getattr(optax_adaptive, name)(**kwargs)
