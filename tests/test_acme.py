"""ACME: its step-size table, its non-finite guard and its jitted training step.

Parity with the authors' code is in test_parity.py; the shared behaviour of an
optax transformation in test_common.py.
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

import optax_adaptive
from optax_adaptive._src import acme_table


def table_oracle(loss0, loss1, slope0, slope1, lr, b1):
  """docs/specification.md#spec-acme-table transcribed in plain Python floats.

  Returns ``(lr_new, lr_opt, code)``, ``code`` the authors' row number.
  """
  better = loss1 <= loss0
  significant = abs(loss0 - loss1) > max(loss0, loss1) / 1e4
  d = loss1 - loss0
  a3 = -(slope0 + slope1) / lr**2 - 2 * d / lr**3
  b3 = (2 * slope0 + slope1) / lr + 3 * d / lr**2
  c3 = -slope0
  a2, b2 = -slope1 / lr - d / lr**2, slope1 + 2 * d / lr
  a2p, b2p = slope0 / lr + d / lr**2, -slope0
  lr_opt = lr if better else 0.0
  if not significant:
    return (2 * lr if better else lr), lr_opt, 0
  if slope0 > 0 and slope1 < 0:
    lr_opt = (-b3 + (b3**2 - 3 * a3 * c3) ** 0.5) / (3 * a3)
    return lr_opt, lr_opt, 1 if better else 2
  if better and slope1 < 0:
    lr_opt = -b2 / (2 * a2)
    return lr_opt, lr_opt, 3
  if not better and slope0 > 0:
    lr_opt = -b2p / (2 * a2p)
    return lr_opt, lr_opt, 4
  if better and slope0 > 0 and slope1 > 0:
    return min(lr * (1 + slope1 / slope0), lr * (2 - b1) / (1 - b1)), lr_opt, 5
  if not better and slope0 < 0 and slope1 < 0:
    return max(-lr * slope1 / slope0, lr * (0.5 - b1) / (1 - b1)), lr_opt, 6
  return (lr if better else 0.0), lr_opt, 7


def _table(*args):
  with jax.enable_x64(True):
    new, fitted, branch = acme_table.step_size_table(
        *(jnp.float64(a) for a in args[:-1]), args[-1]
    )
    return float(new), float(fitted), int(branch)


@pytest.mark.parametrize(
    'loss0, loss1, slope0, slope1, branch',
    [
        (1.0, 1.0000001, 1.0, 1.0, 0),  # not significant
        (1.0, 0.8, 2.0, -1.0, 1),  # cubic, better
        (1.0, 1.2, 2.0, -1.0, 2),  # cubic, worse
        (1.0, 0.8, -2.0, -1.0, 3),  # parabola through the new point
        (1.0, 1.2, 2.0, 1.0, 4),  # parabola through the old point
        (1.0, 0.8, 2.0, 1.0, 5),  # grow
        (1.0, 1.2, -2.0, -1.0, 6),  # shrink
        (1.0, 0.8, -2.0, 1.0, 7),  # otherwise, better
        (1.0, 1.2, -2.0, 1.0, 7),  # otherwise, worse
    ],
)
def test_every_row_of_the_table_matches_the_transcription(
    loss0, loss1, slope0, slope1, branch
):
  expected = table_oracle(loss0, loss1, slope0, slope1, 0.1, 0.9)
  assert expected[2] == branch
  got = _table(loss0, loss1, slope0, slope1, 0.1, 0.9)
  assert got[2] == branch
  np.testing.assert_allclose(got[:2], expected[:2], rtol=1e-12)


@hypothesis.settings(deadline=None, max_examples=200)
@hypothesis.given(
    loss0=st.floats(0.01, 10),
    loss1=st.floats(0.01, 10),
    slope0=st.floats(-5, 5).filter(lambda s: abs(s) > 1e-3),
    slope1=st.floats(-5, 5).filter(lambda s: abs(s) > 1e-3),
    lr=st.floats(1e-4, 1.0),
    b1=st.sampled_from([0.0, 0.5, 0.9]),
)
def test_table_matches_the_transcription_everywhere(
    loss0, loss1, slope0, slope1, lr, b1
):
  expected = table_oracle(loss0, loss1, slope0, slope1, lr, b1)
  got = _table(loss0, loss1, slope0, slope1, lr, b1)
  assert got[2] == expected[2]
  if all(isinstance(x, float) and np.isfinite(x) for x in expected[:2]):
    np.testing.assert_allclose(got[:2], expected[:2], rtol=1e-9, atol=1e-12)


def _problem():
  x = jax.random.normal(jax.random.key(0), (64, 4))
  y = x @ jnp.array([1.0, -2.0, 0.5, 3.0])
  params = {'w': jnp.zeros((4,)), 'b': jnp.zeros(())}

  def loss_fn(params, x, y):
    return jnp.mean((x @ params['w'] + params['b'] - y) ** 2)

  return params, loss_fn, (x, y)


def _assert_clean(params, state):
  chex.assert_tree_all_finite(params)
  chex.assert_tree_all_finite(state)


def test_an_exploding_loss_at_the_look_point_is_rejected_and_training_goes_on():
  params, loss_fn, batch = _problem()

  def exploding(params, x, y):
    # Blows up beyond a radius (the optimum's norm is 3.8) that the look
    # point of a large rate crosses.
    loss = loss_fn(params, x, y)
    return jnp.where(optax.tree.norm(params) > 10.0, jnp.inf, loss)

  optimizer = optax_adaptive.acme(learning_rate=10.0, adam=False)
  step = optax_adaptive.acme_step(exploding, optimizer)
  state = optimizer.init(params)
  params, state, _, _ = step(params, state, *batch)
  assert int(state.num_rejected) == 1
  assert int(state.branch) == optax_adaptive.AcmeBranch.REJECTED
  assert int(state.step) == 1
  np.testing.assert_allclose(state.adapted_learning_rate, 10.0 * 0.9, rtol=1e-6)
  chex.assert_trees_all_close(params, jax.tree.map(jnp.zeros_like, params))
  _assert_clean(params, state)
  for _ in range(60):
    params, state, loss, _ = step(params, state, *batch)
    _assert_clean(params, state)
  assert int(state.num_rejected) > 1  # the rate shrank until a look landed
  assert int(state.branch) >= 0  # and steps are accepted again
  assert np.isfinite(float(loss))


@pytest.mark.parametrize(
    'poison, use_acme', [('value', True), ('gradient', True), ('value', False)]
)
def test_a_non_finite_start_is_rejected_without_nan_in_the_state(
    poison, use_acme
):
  params, loss_fn, (x, y) = _problem()
  optimizer = optax_adaptive.acme(
      learning_rate=0.01, adapt_learning_rate=use_acme
  )
  state = optimizer.init(params)
  step = optax_adaptive.acme_step(loss_fn, optimizer)
  params, state, _, _ = step(params, state, x, y)
  loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
  if poison == 'value':
    loss = jnp.nan
  else:
    grads = jax.tree.map(lambda g: g.at[...].set(jnp.nan), grads)
  updates, new_state = jax.jit(optimizer.update, static_argnames=('value_fn',))(
      grads,
      state,
      params,
      value=loss,
      value_fn=functools.partial(loss_fn, x=x, y=y),
  )
  chex.assert_trees_all_close(updates, jax.tree.map(jnp.zeros_like, params))
  _assert_clean(params, new_state)
  assert int(new_state.num_rejected) == 1
  assert int(new_state.step) == 1
  np.testing.assert_allclose(
      new_state.adapted_learning_rate,
      0.9 * state.adapted_learning_rate,
      rtol=1e-6,
  )
  if poison == 'gradient':
    # The damped update's sums were not finite: the previous moments decay.
    chex.assert_trees_all_close(new_state.mu, optax.tree.scale(0.1, state.mu))
    chex.assert_trees_all_close(new_state.nu, state.nu)


def test_a_training_step_has_no_host_transfer_and_compiles_once():
  params, loss_fn, batch = _problem()
  traces = []

  def counted_loss(params, x, y):
    traces.append(None)
    return loss_fn(params, x, y)

  optimizer = optax_adaptive.acme(learning_rate=0.01, asam=True)
  step = optax_adaptive.acme_step(counted_loss, optimizer)
  params = jax.device_put(params)
  state = jax.device_put(optimizer.init(params))
  batch = jax.device_put(batch)
  params, state, _, _ = step(params, state, *batch)
  traced = len(traces)
  with jax.transfer_guard('disallow'):
    for _ in range(5):
      params, state, loss, _ = step(params, state, *batch)
  assert len(traces) == traced  # no retrace: one compilation for every step
  assert int(state.count) == 6 and np.isfinite(float(loss))


def test_batch_statistics_come_from_the_first_evaluation_only():
  """The extra evaluations must not move running statistics."""

  def loss_fn(params, stats, x, y):
    mean = x.mean(axis=0)
    new_stats = {'mean': 0.9 * stats['mean'] + 0.1 * mean}
    prediction = (x - mean) @ params['w']
    return jnp.mean((prediction - y) ** 2), new_stats

  params, _, (x, y) = _problem()
  x = x + 3.0
  stats = {'mean': jnp.zeros(4)}
  optimizer = optax_adaptive.acme(learning_rate=0.01, asam=True)
  step = optax_adaptive.acme_step(loss_fn, optimizer, has_aux=True)
  state = optimizer.init(params)
  _, _, _, new_stats = step(params, state, stats, x, y)
  np.testing.assert_allclose(new_stats['mean'], 0.1 * x.mean(axis=0), rtol=1e-6)


def test_flax_nnx_batch_norm_statistics_move_once_per_step():
  nnx = pytest.importorskip('flax.nnx')

  class Model(nnx.Module):

    def __init__(self, rngs):
      self.hidden = nnx.Linear(4, 16, rngs=rngs)
      self.norm = nnx.BatchNorm(16, rngs=rngs)
      self.out = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x):
      return self.out(jax.nn.relu(self.norm(self.hidden(x))))[:, 0]

  _, _, (x, y) = _problem()
  model = Model(nnx.Rngs(0))
  reference = Model(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax_adaptive.acme(1e-2), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def value_fn(params):
      # A copy: its BatchNorm may update its own statistics, never the model's.
      return jnp.mean(
          (nnx.merge(graphdef, params, rest, copy=True)(x) - y) ** 2
      )

    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads, value=loss, value_fn=value_fn)
    return loss

  first = train_step(model, optimizer, x, y)
  reference(x)  # one forward pass in training mode
  np.testing.assert_allclose(
      model.norm.mean[...], reference.norm.mean[...], rtol=1e-6
  )
  for _ in range(50):
    last = train_step(model, optimizer, x, y)
  assert float(last) < 0.5 * float(first)


def test_asam_mask_selects_the_weights():
  params, loss_fn, batch = _problem()
  default = optax_adaptive.acme(0.01, asam=True, eta=0.1)
  explicit = optax_adaptive.acme(
      0.01, asam=True, eta=0.1, asam_mask={'w': False, 'b': False}
  )
  as_function = optax_adaptive.acme(
      0.01,
      asam=True,
      eta=0.1,
      asam_mask=lambda p: jax.tree.map(lambda x: x.ndim >= 1, p),
  )
  results = []
  for optimizer in (default, explicit, as_function):
    step = optax_adaptive.acme_step(loss_fn, optimizer)
    fresh = jax.tree.map(jnp.copy, params)  # the step donates its inputs
    new_params, _, _, _ = step(fresh, optimizer.init(fresh), *batch)
    results.append(new_params)
  # The default mask selects rank >= 2 leaves: none here, like `explicit`.
  chex.assert_trees_all_close(results[0], results[1])
  assert not np.allclose(results[0]['w'], results[2]['w'])


def test_value_fn_receives_the_extra_arguments_it_names():
  params, loss_fn, (x, y) = _problem()
  optimizer = optax_adaptive.acme(0.01)

  def value_fn(params, *, targets):
    return loss_fn(params, x, targets)

  loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
  updates, _ = optimizer.update(
      grads,
      optimizer.init(params),
      params,
      value=loss,
      value_fn=value_fn,
      targets=y,
      unrelated=1.0,
  )
  expected, _ = optimizer.update(
      grads,
      optimizer.init(params),
      params,
      value=loss,
      value_fn=lambda p: loss_fn(p, x, y),
  )
  chex.assert_trees_all_close(updates, expected)


def test_missing_loss_says_what_to_pass():
  params, _, _ = _problem()
  optimizer = optax_adaptive.acme(0.01)
  with pytest.raises(ValueError, match='value_fn'):
    optimizer.update(params, optimizer.init(params), params, value=1.0)


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(learning_rate=0.0), 'learning_rate'),
        (dict(learning_rate=-1.0), 'learning_rate'),
        (dict(b1=1.0), 'b1'),
        (dict(b2=-0.5), 'b2'),
        (dict(eps=-1.0), 'eps'),
        (dict(weight_decay=-1.0), 'weight_decay'),
        (dict(rho=-1.0), 'rho'),
        (dict(eta=float('nan')), 'eta'),
        (dict(schedule_steps=0), 'schedule_steps'),
    ],
)
def test_invalid_hyperparameters_name_the_argument(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optax_adaptive.acme(**kwargs)
