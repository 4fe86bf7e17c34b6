"""ACME at its edges: rejections, extreme rates, empty and half-precision
trees, and the wrappers and inputs around it.

test_acme.py has the table and the jitted step; test_parity.py the reference
runs. The steps around a rejection are compared value by value with
acme_spec, a NumPy transcription of ALGORITHMS.md.
"""

import functools

import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import acme_spec
import optax_adaptive
from optax_adaptive._src import acme as acme_module
import test_acme

Branch = optax_adaptive.AcmeBranch


def _regression(dtype=jnp.float32):
  x = jax.random.normal(jax.random.key(0), (64, 4), dtype)
  y = x @ jnp.array([1.0, -2.0, 0.5, 3.0], dtype)
  params = {'w': jnp.zeros((4,), dtype), 'b': jnp.zeros((), dtype)}

  def loss_fn(params, x, y):
    return jnp.mean((x @ params['w'] + params['b'] - y) ** 2)

  return params, loss_fn, (x, y)


def _train(optimizer, loss_fn, params, batches):
  """Runs `acme_step` over `batches`; returns params, state, losses, branches."""
  step = optax_adaptive.acme_step(loss_fn, optimizer)
  state = optimizer.init(params)
  losses, branches = [], []
  for batch in batches:
    params, state, loss, _ = step(params, state, *batch)
    losses.append(float(loss))
    branches.append(int(state.branch))
  return params, state, np.array(losses), np.array(branches)


def _assert_trains(losses, branches, accepted=20):
  assert np.sum(branches >= 0) >= accepted, branches
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], losses


# Around a rejection, value by value against the transcription.


def _spec_state(state):
  as_np = lambda tree: None if tree is None else {  # pylint: disable=g-long-lambda
      k: np.asarray(x, np.float64) for k, x in tree.items()}
  return acme_spec.SpecState(as_np(state.mu), as_np(state.nu),
                             float(state.adapted_learning_rate),
                             int(state.step), float(state.schedule_factor))


def _compare(params, state, spec_params, spec_state, what):
  for k in spec_params:
    np.testing.assert_allclose(params[k], spec_params[k], rtol=1e-10,
                               atol=1e-14, err_msg=f'{what}: params {k}')
    np.testing.assert_allclose(state.mu[k], spec_state.m[k], rtol=1e-10,
                               atol=1e-14, err_msg=f'{what}: mu {k}')
    if spec_state.v is not None:
      np.testing.assert_allclose(state.nu[k], spec_state.v[k], rtol=1e-10,
                                 atol=1e-14, err_msg=f'{what}: nu {k}')
  np.testing.assert_allclose(state.adapted_learning_rate, spec_state.lr,
                             rtol=1e-10, err_msg=f'{what}: rate')
  assert int(state.step) == spec_state.t, what
  np.testing.assert_allclose(state.schedule_factor, spec_state.sched,
                             rtol=1e-12, err_msg=f'{what}: schedule factor')


def _replay_against_spec(loss_fn, batches, params, expect_accepted,
                         **hyperparameters):
  """Runs the library and the transcription side by side, in float64."""
  with jax.enable_x64(True):
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    optimizer = optax_adaptive.acme(**hyperparameters)
    update = jax.jit(optimizer.update, static_argnames='value_fn')
    state = optimizer.init(params)
    spec_params = {k: np.asarray(x) for k, x in params.items()}
    spec_state = acme_spec.SpecState(lr=hyperparameters['learning_rate'])
    spec_kwargs = {k: v for k, v in hyperparameters.items()
                   if k != 'learning_rate'}
    for i, batch in enumerate(batches):
      value_fn = functools.partial(loss_fn, batch=batch)
      loss, grads = jax.value_and_grad(value_fn)(params)
      updates, state = update(grads, state, params, value=loss,
                              value_fn=value_fn)
      params = optax.apply_updates(params, updates)

      def spec_loss_and_grad(p, value_fn=value_fn):
        loss, grads = jax.value_and_grad(value_fn)(
            {k: jnp.asarray(x) for k, x in p.items()})
        return float(loss), {k: np.asarray(g) for k, g in grads.items()}

      spec_loss, spec_grads = spec_loss_and_grad(spec_params)
      spec_params, spec_state, accepted = acme_spec.step(
          spec_params, spec_state, spec_loss, spec_grads, spec_loss_and_grad,
          **spec_kwargs)
      assert accepted == expect_accepted[i], f'step {i}: {accepted}'
      assert (int(state.branch) != Branch.REJECTED) == accepted, f'step {i}'
      _compare(params, state, spec_params, spec_state, f'step {i}')
    return state


def _bounded(loss_fn, radius):
  """`loss_fn`, infinite beyond `radius` of the origin."""
  def bounded(params, batch):
    loss = loss_fn(params, *batch)
    return jnp.where(optax.tree.norm(params) > radius, jnp.inf, loss)
  return bounded


def test_a_rejected_first_step_initialises_once_and_the_next_go_on():
  params, loss_fn, batch = _regression()
  # The first look (rate 2) leaves the ball, the second (rate 1.8, momentum
  # shrunk tenfold) stays in it: one rejection, then accepted steps.
  state = _replay_against_spec(
      _bounded(loss_fn, 1.0), [batch] * 3, params, [False, True, True],
      learning_rate=2.0)
  assert int(state.num_rejected) == 1


@pytest.mark.parametrize('adam', [True, False])
def test_a_rejection_later_restarts_t_and_the_schedule_factor(adam):
  params, loss_fn, (x, y) = _regression()

  def poisonable(params, batch):
    x, y, poison = batch
    return loss_fn(params, x, y) + jnp.where(poison, jnp.nan, 0.0)

  batches = [(x, y, poison) for poison in (0, 0, 0, 1, 0, 0)]
  # A short cosine, so that the factor is far from 1 when the step is
  # rejected; the poisoned step spoils the sums, so the moments from before
  # it decay.
  _replay_against_spec(
      poisonable, batches, params, [True] * 3 + [False] + [True] * 2,
      learning_rate=0.05, schedule_steps=4, adam=adam, nesterov=not adam,
      weight_decay=0.0 if adam else 1e-3)


@pytest.mark.parametrize('hyperparameters', [
    dict(learning_rate=3.0),  # the look is worse: leap with the fitted rate
    dict(learning_rate=0.01),  # better: leap with the rate
    dict(learning_rate=3.0, adam=False, nesterov=True, weight_decay=1e-2,
         bias_correction=False),
    dict(learning_rate=0.01, acme=False, asam=True, nesterov=True, rho=0.1,
         eta=0.01),
    dict(learning_rate=0.01, acme=False, adam=False, asam=True, nesterov=True,
         rho=0.1, weight_decay=1e-2),
    dict(learning_rate=3.0, asam=True, nesterov=True, rho=0.1, eta=0.01),
], ids=['worse', 'better', 'sgd_nesterov_wd', 'asam_nesterov_no_acme',
        'sgd_asam_nesterov_no_acme', 'asam_nesterov_worse'])
def test_steps_match_the_transcription(hyperparameters):
  x = jax.random.normal(jax.random.key(1), (32, 3))
  y = jnp.tanh(x @ jnp.array([1.0, -1.0, 2.0]))
  params = {'kernel': 0.1 * jnp.ones((3, 2)), 'out': jnp.ones((2,))}

  def loss_fn(params, batch):
    x, y = batch
    return jnp.mean((jnp.tanh(x @ params['kernel']) @ params['out'] - y) ** 2)

  _replay_against_spec(loss_fn, [(x, y)] * 4, params, [True] * 4,
                       weights=('kernel',) if hyperparameters.get('asam')
                       else (), **hyperparameters)
