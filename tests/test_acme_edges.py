"""ACME at its edges: rejections, extreme rates, empty and half-precision
trees, and the wrappers and inputs around it.

test_acme.py has the table and the jitted step; test_parity.py the reference
runs. The steps around a rejection are compared value by value with
acme_spec, a NumPy transcription of docs/specification.md#spec-acme.
"""

import functools

import acme_spec
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_acme

import optax_adaptive
from optax_adaptive._src import acme_table, numerics

Branch = optax_adaptive.AcmeBranch


def _regression(dtype=jnp.float32):
  x = jax.random.normal(jax.random.key(0), (64, 4), dtype)
  y = x @ jnp.array([1.0, -2.0, 0.5, 3.0], dtype)
  params = {'w': jnp.zeros((4,), dtype), 'b': jnp.zeros((), dtype)}

  def loss_fn(params, x, y):
    return jnp.mean((x @ params['w'] + params['b'] - y) ** 2)

  return params, loss_fn, (x, y)


def _train(optimizer, loss_fn, params, batches):
  """Runs `acme_step` on `batches`; returns params, state, losses, branches."""
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

  def as_np(tree):
    if tree is None:
      return None
    return {k: np.asarray(x, np.float64) for k, x in tree.items()}

  return acme_spec.SpecState(
      as_np(state.mu),
      as_np(state.nu),
      float(state.adapted_learning_rate),
      int(state.step),
      float(state.schedule_factor),
  )


def _compare(params, state, spec_params, spec_state, what):
  for k in spec_params:
    np.testing.assert_allclose(
        params[k],
        spec_params[k],
        rtol=1e-10,
        atol=1e-14,
        err_msg=f'{what}: params {k}',
    )
    np.testing.assert_allclose(
        state.mu[k],
        spec_state.m[k],
        rtol=1e-10,
        atol=1e-14,
        err_msg=f'{what}: mu {k}',
    )
    if spec_state.v is not None:
      np.testing.assert_allclose(
          state.nu[k],
          spec_state.v[k],
          rtol=1e-10,
          atol=1e-14,
          err_msg=f'{what}: nu {k}',
      )
  np.testing.assert_allclose(
      state.adapted_learning_rate,
      spec_state.lr,
      rtol=1e-10,
      err_msg=f'{what}: rate',
  )
  assert int(state.step) == spec_state.t, what
  np.testing.assert_allclose(
      state.schedule_factor,
      spec_state.sched,
      rtol=1e-12,
      err_msg=f'{what}: schedule factor',
  )


def _replay_against_spec(
    loss_fn,
    batches,
    params,
    expect_accepted,
    asam_weights=(),
    **hyperparameters,
):
  """Runs the library and the transcription side by side, in float64."""
  with jax.enable_x64(True):
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    optimizer = optax_adaptive.acme(**hyperparameters)
    update = jax.jit(optimizer.update, static_argnames='value_fn')
    state = optimizer.init(params)
    spec_params = {k: np.asarray(x) for k, x in params.items()}
    spec_state = acme_spec.SpecState(lr=hyperparameters['learning_rate'])
    spec_kwargs = {
        k: v for k, v in hyperparameters.items() if k != 'learning_rate'
    }
    spec_kwargs['weights'] = asam_weights
    branches = []
    for i, batch in enumerate(batches):
      value_fn = functools.partial(loss_fn, batch=batch)
      loss, grads = jax.value_and_grad(value_fn)(params)
      updates, state = update(
          grads, state, params, value=loss, value_fn=value_fn
      )
      params = optax.apply_updates(params, updates)

      def spec_loss_and_grad(p, value_fn=value_fn):
        loss, grads = jax.value_and_grad(value_fn)(
            {k: jnp.asarray(x) for k, x in p.items()}
        )
        return float(loss), {k: np.asarray(g) for k, g in grads.items()}

      spec_loss, spec_grads = spec_loss_and_grad(spec_params)
      spec_params, spec_state, accepted = acme_spec.step(
          spec_params,
          spec_state,
          spec_loss,
          spec_grads,
          spec_loss_and_grad,
          **spec_kwargs,
      )
      assert accepted == expect_accepted[i], f'step {i}: {accepted}'
      assert (int(state.branch) != Branch.REJECTED) == accepted, f'step {i}'
      _compare(params, state, spec_params, spec_state, f'step {i}')
      branches.append(int(state.branch))
    return state, branches


def _bounded(loss_fn, radius):
  """`loss_fn`, infinite beyond `radius` of the origin."""

  def bounded(params, batch):
    loss = loss_fn(params, *batch)
    return jnp.where(optax.tree.norm(params) > radius, jnp.inf, loss)

  return bounded


def test_a_rejected_first_step_initialises_once_and_the_next_go_on():
  params, loss_fn, batch = _regression()
  # The first look (rate 20) leaves the ball, the second (rate 18, momentum
  # shrunk tenfold) stays in it: one rejection, then accepted steps.
  state, _ = _replay_against_spec(
      _bounded(loss_fn, 1.0),
      [batch] * 3,
      params,
      [False, True, True],
      learning_rate=20.0,
  )
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
      poisonable,
      batches,
      params,
      [True] * 3 + [False] + [True] * 2,
      learning_rate=0.05,
      schedule_steps=4,
      adam=adam,
      nesterov=not adam,
      weight_decay=0.0 if adam else 1e-3,
  )


@pytest.mark.parametrize(
    'hyperparameters',
    [
        dict(learning_rate=3.0),  # the look is worse: leap with the fitted rate
        dict(learning_rate=0.01),  # better: leap with the rate
        dict(
            learning_rate=3.0,
            adam=False,
            nesterov=True,
            weight_decay=1e-2,
            bias_correction=False,
        ),
        dict(
            learning_rate=0.01,
            adapt_learning_rate=False,
            asam=True,
            nesterov=True,
            rho=0.1,
            eta=0.01,
        ),
        dict(
            learning_rate=0.01,
            adapt_learning_rate=False,
            adam=False,
            asam=True,
            nesterov=True,
            rho=0.1,
            weight_decay=1e-2,
        ),
        dict(learning_rate=3.0, asam=True, nesterov=True, rho=0.1, eta=0.01),
    ],
    ids=[
        'worse',
        'better',
        'sgd_nesterov_wd',
        'asam_nesterov_no_acme',
        'sgd_asam_nesterov_no_acme',
        'asam_nesterov_worse',
    ],
)
def test_steps_match_the_transcription(hyperparameters):
  x = jax.random.normal(jax.random.key(1), (32, 3))
  y = jnp.tanh(x @ jnp.array([1.0, -1.0, 2.0]))
  params = {'kernel': 0.1 * jnp.ones((3, 2)), 'out': jnp.ones((2,))}

  def loss_fn(params, batch):
    x, y = batch
    return jnp.mean((jnp.tanh(x @ params['kernel']) @ params['out'] - y) ** 2)

  _, branches = _replay_against_spec(
      loss_fn,
      [(x, y)] * 4,
      params,
      [True] * 4,
      asam_weights=('kernel',),
      **hyperparameters,
  )
  worse = {Branch.CUBIC_WORSE, Branch.PARABOLA_OLD, Branch.SHRINK}
  if hyperparameters['learning_rate'] > 1:
    assert worse & set(branches), branches  # the fitted rate led a leap
  elif hyperparameters.get('adapt_learning_rate', True):
    assert not worse & set(branches), branches


# The table: its significance threshold, and float32 at any rate.


@pytest.mark.parametrize(
    'loss0, loss1, significant',
    [
        (10.0, 9.9990005, False),  # |d| = 9.995e-4 < max / 1e4 = 1e-3
        (10.0, 9.998, True),
        (-1.0, -1.0, True),  # max < 0: every change counts, none too
        (-1.0, -0.99995, True),
        (-1e-5, 1e-9, True),
        (1e-5, -1e-9, True),
        (1e-5, 1e-5 * (1 - 5e-5), False),
    ],
)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.float64])
def test_significance_is_against_the_larger_loss_of_either_sign(
    loss0, loss1, significant, dtype
):
  assert (
      test_acme.table_oracle(loss0, loss1, 1.0, 1.0, 0.1, 0.9)[2] != 0
  ) == significant
  with jax.enable_x64(dtype == jnp.float64):
    _, _, branch = acme_table.step_size_table(
        *(jnp.asarray(v, dtype) for v in (loss0, loss1, 1.0, 1.0, 0.1)), 0.9
    )
  assert (int(branch) != Branch.NOT_SIGNIFICANT) == significant


def _magnitudes(low, high):
  return st.floats(low, high).map(lambda e: 10.0**e)


def _signed(magnitude):
  return st.tuples(st.sampled_from([-1.0, 1.0]), magnitude).map(
      lambda t: t[0] * t[1]
  )


@hypothesis.settings(deadline=None, max_examples=300)
@hypothesis.given(
    loss0=_signed(_magnitudes(-2, 2)),
    loss1=_signed(_magnitudes(-2, 2)),
    unit_slope0=_signed(_magnitudes(-2, 1)),
    unit_slope1=_signed(_magnitudes(-2, 1)),
    lr=_magnitudes(-12, 12),
    b1=st.sampled_from([0.0, 0.5, 0.9]),
)
def test_float32_table_matches_the_float64_transcription_at_any_rate(
    loss0, loss1, unit_slope0, unit_slope1, lr, b1
):
  """Every row, for rates from 1e-12 to 1e12 and losses of either sign.

  The slopes are drawn per unit of the rate (s * lr), the scale at which a
  step of that rate moves the loss; inputs are rounded to float32 first, and
  draws within float32's rounding of the significance threshold are skipped
  (there the row itself may differ).
  """

  def f32(v):
    return float(np.float32(v))

  loss0, loss1, lr = f32(loss0), f32(loss1), f32(lr)
  slope0, slope1 = f32(unit_slope0 / lr), f32(unit_slope1 / lr)
  threshold = max(loss0, loss1) / 1e4
  hypothesis.assume(
      abs(abs(loss1 - loss0) - threshold)
      > 1e-5 * (abs(threshold) + abs(loss1 - loss0))
  )
  try:
    expected = test_acme.table_oracle(loss0, loss1, slope0, slope1, lr, b1)
  except ZeroDivisionError:  # a cubic without a cubic term: no oracle there
    hypothesis.assume(False)
  new, fitted, branch = acme_table.step_size_table(
      *(jnp.float32(v) for v in (loss0, loss1, slope0, slope1, lr)), b1
  )
  assert int(branch) == expected[2]
  np.testing.assert_allclose(
      [float(new), float(fitted)], expected[:2], rtol=1e-5, atol=0
  )


# The guards of docs/specification.md#spec-acme-rejection beyond the losses,
# slopes and rate: each is the only one to fire here.


def _one_update(optimizer, params, grads, loss0, value_fn, state=None):
  state = optimizer.init(params) if state is None else state
  return jax.jit(optimizer.update, static_argnames='value_fn')(
      grads, state, params, value=loss0, value_fn=value_fn
  )


def _assert_rejected(updates, state):
  assert int(state.branch) == Branch.REJECTED
  chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, updates))
  chex.assert_tree_all_finite(state)


def test_a_look_gradient_whose_squares_overflow_is_rejected():
  """gg overflows; the losses, the slopes and pp are finite; L1 > L0."""
  params = jnp.zeros(3)
  # The step direction is +1 per entry, along which the loss grows 1e20-fold.
  updates, state = _one_update(
      optax_adaptive.acme(learning_rate=0.01),
      params,
      -jnp.ones(3),
      jnp.float32(0.0),
      lambda p: 1e20 * jnp.sum(p),
  )
  _assert_rejected(updates, state)


def test_a_momentum_whose_squares_overflow_at_the_look_is_rejected():
  """pp overflows at the look only: SGD sums with D = 1 in the damped update
  and D = 1 - b1**t = 0.19 at the look; the gradients are orthogonal to the
  momentum, and the look is worse, so no second update reads pp either."""
  optimizer = optax_adaptive.acme(learning_rate=30.0, adam=False)
  params = jnp.zeros(2)
  state = optimizer.init(params)._replace(
      mu=jnp.array([1e19, 0.0]), step=jnp.asarray(2, jnp.int32)
  )

  def value_fn(p):
    return 0.5 * (p[1] - 1.0) ** 2

  loss0, grads = jax.value_and_grad(value_fn)(params)
  updates, new_state = _one_update(
      optimizer, params, grads, loss0, value_fn, state
  )
  _assert_rejected(updates, new_state)


def test_a_second_moment_that_overflows_its_dtype_after_an_improvement():
  """nu in float16, near its largest value: the update with g1 at the
  improved look point overflows it, while every sum is float32 and finite."""
  optimizer = optax_adaptive.acme(learning_rate=0.01, nu_dtype=jnp.float16)
  params = jnp.zeros(3)
  state = optimizer.init(params)._replace(
      mu=jnp.full(3, -1e4),
      nu=jnp.full(3, 65000, jnp.float16),
      step=jnp.asarray(1, jnp.int32),
  )
  # The step moves +; the loss falls along it, steeply at the look.

  def value_fn(p):
    return -jnp.sum(p) - 1e5 * jnp.sum(p**2)

  updates, new_state = _one_update(
      optimizer, params, -jnp.ones(3), jnp.float32(0.0), value_fn, state
  )
  _assert_rejected(updates, new_state)
  assert new_state.nu.dtype == jnp.float16


def test_bfloat16_leaves_are_summed_in_float32():
  ones = jnp.ones(1001, jnp.bfloat16)
  total = numerics.weighted_sum(ones, ones, jnp.ones((), jnp.bfloat16))
  assert total.dtype == jnp.float32 and float(total) == 1001.0  # bf16: 1000


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_no_reduction_of_an_update_runs_in_half_precision(dtype):
  params = {'w': jnp.zeros((8, 4), dtype), 'b': jnp.zeros(4, dtype)}

  def value_fn(p):
    return sum(
        jnp.sum((x.astype(jnp.float32) - 1) ** 2) for x in jax.tree.leaves(p)
    )

  optimizer = optax_adaptive.acme(
      0.01, asam=True, mu_dtype=dtype, nu_dtype=dtype
  )
  grads = jax.grad(value_fn)(params)
  jaxpr = jax.make_jaxpr(
      functools.partial(optimizer.update, value_fn=value_fn)
  )(grads, optimizer.init(params), params, value=jnp.float32(1.0))

  def reductions(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name.startswith('reduce'):
        yield eqn
      for sub in jax.core.jaxprs_in_params(eqn.params):
        yield from reductions(sub)

  found = list(reductions(jaxpr.jaxpr))
  assert found
  for eqn in found:
    assert all(
        v.aval.dtype.itemsize >= 4
        for v in eqn.invars
        if jnp.issubdtype(v.aval.dtype, jnp.floating)
    ), eqn


# No permanent traps.


def test_a_tree_without_leaves_steps_without_error():
  optimizer = optax_adaptive.acme(0.01)

  def loss_fn(params, x):
    del params  # the tree has no leaves for the loss to depend on
    return jnp.sum(x**2)

  _, state, losses, branches = _train(
      optimizer, loss_fn, {}, [(jnp.ones(2),)] * 25
  )
  assert np.all(branches >= 0) and np.all(np.isfinite(losses))
  chex.assert_tree_all_finite(state)


def test_a_zero_size_leaf_and_an_empty_subtree_train():
  params, loss_fn, batch = _regression()
  params = dict(params, empty=jnp.zeros((0, 3)), nothing={})
  _, _, losses, branches = _train(
      optax_adaptive.acme(0.01), loss_fn, params, [batch] * 60
  )
  _assert_trains(losses, branches)


def test_eps_zero_with_a_leaf_whose_first_gradient_is_zero_trains():
  params, loss_fn, batch = _regression()

  def late_bias(params, x, y, use_bias):
    # The bias has a zero gradient at the first step only.
    return loss_fn(dict(params, b=params['b'] * use_bias), x, y)

  batches = [(*batch, jnp.float32(i > 0)) for i in range(60)]
  _, state, losses, branches = _train(
      optax_adaptive.acme(0.01, eps=0.0), late_bias, params, batches
  )
  _assert_trains(losses, branches)
  assert float(state.nu['b']) > 0


def test_training_resumes_after_a_thousand_flat_steps():
  params, loss_fn, (x, y) = _regression()

  def plateau(params, x, y, flat):
    return jnp.where(flat, 2.0 + 0.0 * params['b'], loss_fn(params, x, y))

  optimizer = optax_adaptive.acme(0.01)
  step = optax_adaptive.acme_step(plateau, optimizer)
  state = optimizer.init(params)
  flat = jax.jit(
      lambda p, s: jax.lax.fori_loop(
          0, 1000, lambda _, c: step.__wrapped__(*c, x, y, True)[:2], (p, s)
      )
  )
  params, state = flat(params, state)
  assert float(state.adapted_learning_rate) == 1e6  # doubled up to the cap
  losses, branches = [], []
  for _ in range(40):
    params, state, loss, _ = step(params, state, x, y, False)
    losses.append(float(loss))
    branches.append(int(state.branch))
  _assert_trains(np.array(losses), np.array(branches))


# Half precision.


def test_a_float16_model_with_large_gradients_and_zeros_trains():
  params, loss_fn, (x, y) = _regression(jnp.float16)
  params = dict(params, unused=jnp.zeros((2, 2), jnp.float16))

  def scaled(params, x, y):
    # Gradients up to about 1e4, beyond float16's square root of its range.
    return 1500.0 * loss_fn(params, x, y) + 0.0 * jnp.sum(params['unused'])

  optimizer = optax_adaptive.acme(0.01)
  state = optimizer.init(params)
  assert {x.dtype for x in jax.tree.leaves((state.mu, state.nu))} == {
      jnp.dtype(jnp.float32)
  }
  grads = jax.grad(scaled)(params, x, y)
  assert float(jnp.max(jnp.abs(grads['w']))) > 5e3
  new_params, state, losses, branches = _train(
      optimizer, scaled, params, [(x, y)] * 60
  )
  assert np.all(branches >= 0), branches
  _assert_trains(losses, branches)
  chex.assert_trees_all_equal_dtypes(new_params, params)
  chex.assert_tree_all_finite(state)


# Inputs.


def test_a_loss_that_is_not_a_scalar_is_refused():
  params, loss_fn, (x, y) = _regression()
  optimizer = optax_adaptive.acme(0.01)
  grads = jax.grad(loss_fn)(params, x, y)
  with pytest.raises(ValueError, match='mean'):
    optimizer.update(
        grads,
        optimizer.init(params),
        params,
        value=jnp.ones(4),
        value_fn=lambda p: loss_fn(p, x, y),
    )


@pytest.mark.parametrize('steps', [np.int64(100), np.int32(1), 7])
def test_schedule_steps_takes_numpy_integers(steps):
  optax_adaptive.acme(schedule_steps=steps)


@pytest.mark.parametrize(
    'steps', [True, np.bool_(True), 10.0, 0, np.array([3, 4])]
)
def test_schedule_steps_refuses_what_is_not_a_count(steps):
  with pytest.raises(ValueError, match='schedule_steps'):
    optax_adaptive.acme(schedule_steps=steps)


@pytest.mark.parametrize(
    'wrap',
    [
        lambda tx: optax.masked(tx, {'w': True, 'b': False}),
        lambda tx: optax.multi_transform(
            {'a': tx, 'f': optax.set_to_zero()}, {'w': 'a', 'b': 'f'}
        ),
        lambda tx: optax.partition(
            {'a': tx, 'f': optax.set_to_zero()}, {'w': 'a', 'b': 'f'}
        ),
    ],
    ids=['masked', 'multi_transform', 'partition'],
)
def test_wrappers_that_hide_parameters_say_what_to_do(wrap):
  params, _, _ = _regression()
  with pytest.raises(ValueError, match='whole tree.*stop_gradient'):
    wrap(optax_adaptive.acme(0.01)).init(params)


def test_tied_weights_are_refused_with_an_explanation():
  params, loss_fn, batch = _regression()
  params = dict(params, tied=params['w'])

  def tied_loss(p, x, y):
    return loss_fn(p, x, y) + jnp.sum(p['tied'] ** 2)

  optimizer = optax_adaptive.acme(0.01)
  step = optax_adaptive.acme_step(tied_loss, optimizer)
  with pytest.raises(
      ValueError,
      match=r"params\['tied'\].*params\['w'\]|"
      r"params\['w'\].*params\['tied'\].*donate",
  ):
    step(params, optimizer.init(params), *batch)


def test_reusing_donated_arrays_is_refused_with_an_explanation():
  params, loss_fn, batch = _regression()
  optimizer = optax_adaptive.acme(0.01)
  step = optax_adaptive.acme_step(loss_fn, optimizer)
  state = optimizer.init(params)
  step(params, state, *batch)
  with pytest.raises(ValueError, match='deleted: acme_step donates'):
    step(params, state, *batch)


# Wrappers.


def test_inject_hyperparams_needs_no_static_args():
  with jax.enable_x64(True):
    params, loss_fn, (x, y) = _regression(jnp.float64)
    value_fn = functools.partial(loss_fn, x=x, y=y)
    kwargs = dict(learning_rate=0.02, b1=0.8, schedule_steps=10, nesterov=True)
    plain = optax_adaptive.acme(**kwargs)
    injected = optax.inject_hyperparams(optax_adaptive.acme)(**kwargs)
    results = []
    for tx in (plain, injected):
      p, state = params, tx.init(params)
      update = jax.jit(functools.partial(tx.update, value_fn=value_fn))
      for _ in range(12):
        loss, grads = jax.value_and_grad(value_fn)(p)
        updates, state = update(grads, state, p, value=loss)
        p = optax.apply_updates(p, updates)
      results.append((p, state))
  chex.assert_trees_all_close(results[0][0], results[1][0], rtol=1e-12)
  state = results[1][1]
  assert 'schedule_steps' in state.hyperparams
  assert 'nesterov' not in state.hyperparams  # a flag stays static
  np.testing.assert_allclose(optax.tree.get(state, 'learning_rate'), 0.02)
  np.testing.assert_allclose(
      optax.tree.get(state, 'adapted_learning_rate'),
      results[0][1].adapted_learning_rate,
      rtol=1e-12,
  )


def test_multi_steps_fits_the_averaged_gradient_to_the_last_micro_batch():
  """What the `acme` docstring says: g0 is the average; L0, L1 and g1 come
  from the last micro-batch's `value` and `value_fn`."""
  params, loss_fn, (x, y) = _regression()
  halves = [(x[:32], y[:32]), (x[32:], 2 * y[32:])]
  optimizer = optax_adaptive.acme(0.05)
  accumulated = optax.MultiSteps(optimizer, every_k_schedule=2)
  state = accumulated.init(params)
  grads = []
  for half in halves:
    value_fn = functools.partial(loss_fn, x=half[0], y=half[1])
    loss, g = jax.value_and_grad(value_fn)(params)
    grads.append(g)
    updates, state = accumulated.update(
        g, state, params, value=loss, value_fn=value_fn
    )
  averaged = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
  expected, expected_state = optimizer.update(
      averaged, optimizer.init(params), params, value=loss, value_fn=value_fn
  )
  chex.assert_trees_all_close(updates, expected, rtol=1e-6)
  chex.assert_trees_all_close(state.inner_opt_state, expected_state, rtol=1e-6)
