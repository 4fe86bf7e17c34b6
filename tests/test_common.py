"""The suite every library optimizer passes (after optax's contrib tests).

Each entry is built from its public alias and driven the same way: the loss is
passed as ``value`` and its function as ``value_fn``, so methods that need them
(AdaLoss, ACME) and methods that ignore them go through identical code.
"""

from collections.abc import Callable
import functools
import inspect
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_adaptive


class Entry(NamedTuple):
  name: str
  factory: Callable[..., optax.GradientTransformationExtraArgs]
  kwargs: dict[str, Any]
  rosenbrock_kwargs: dict[str, Any]
  # False where `learning_rate` is typed as a schedule but one is refused:
  # ACME adapts its rate itself, and takes a schedule only when it does not.
  takes_schedule: bool = True


OPTIMIZERS = (
    Entry(
        'adaloss',
        optax_adaptive.adaloss,
        dict(learning_rate=0.2, b0=1.0),
        dict(learning_rate=0.02, b0=5.0),
    ),
    Entry(
        'sgd_constant',
        optax_adaptive.sgd_constant,
        dict(learning_rate=0.1, b0=1.0),
        dict(learning_rate=0.002, b0=1.0),
    ),
    Entry(
        'sgd_decay_sqrt',
        optax_adaptive.sgd_decay_sqrt,
        dict(learning_rate=1.0, b0=1.0),
        dict(learning_rate=0.002, b0=1.0, alpha=1e-4),
    ),
    Entry(
        'adagrad_norm',
        optax_adaptive.adagrad_norm,
        dict(learning_rate=1.0, b0=1.0),
        dict(learning_rate=0.5, b0=1.0),
    ),
    Entry(
        'adagrad_norm_rows',
        functools.partial(optax_adaptive.adagrad_norm, granularity='rows'),
        dict(learning_rate=1.0, b0=1.0),
        dict(learning_rate=0.5, b0=1.0),
    ),
    Entry(
        'adam_l2',
        optax_adaptive.adam_l2,
        dict(learning_rate=0.01, weight_decay=1e-6),
        dict(learning_rate=0.01),
    ),
    Entry(
        'adamw',
        optax_adaptive.adamw,
        dict(learning_rate=0.01, weight_decay=1e-6),
        dict(learning_rate=0.01),
    ),
    Entry(
        'adam_prox',
        optax_adaptive.adam_prox,
        dict(learning_rate=0.01, weight_decay=1e-6),
        dict(learning_rate=0.01),
    ),
    Entry(
        'adadiff',
        optax_adaptive.adadiff,
        dict(learning_rate=0.01, weight_decay=1e-6),
        dict(learning_rate=0.01),
    ),
    Entry(
        'acme',
        optax_adaptive.acme,
        dict(learning_rate=0.01, weight_decay=1e-6),
        dict(learning_rate=0.01),
        takes_schedule=False,
    ),
    Entry(
        'acme_fixed_rate',
        functools.partial(optax_adaptive.acme, adapt_learning_rate=False),
        dict(learning_rate=0.01, weight_decay=1e-6),
        dict(learning_rate=0.01),
    ),
    Entry(
        'acme_sgd_asam_nesterov',
        functools.partial(
            optax_adaptive.acme, adam=False, asam=True, nesterov=True
        ),
        dict(learning_rate=0.01, rho=0.05),
        dict(learning_rate=0.001, rho=0.001),
        takes_schedule=False,
    ),
)
IDS = [e.name for e in OPTIMIZERS]
parametrize_optimizers = pytest.mark.parametrize('entry', OPTIMIZERS, ids=IDS)


def parabola(params):
  return sum(jnp.sum((x - 1.0) ** 2) for x in jax.tree.leaves(params))


def rosenbrock(params):
  return (1 - params['x']) ** 2 + 100 * (params['y'] - params['x'] ** 2) ** 2


def initial_params(dtype=jnp.float32):
  """A tree of a matrix, a vector and a scalar: every leaf kind a model has."""
  return {
      'dense': {
          'kernel': jnp.zeros((3, 2), dtype),
          'bias': jnp.zeros(2, dtype),
      },
      'scale': jnp.zeros((), dtype),
  }


def make_step(tx, loss_fn):
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(
        grads, state, params, value=loss, value_fn=loss_fn
    )
    return optax.apply_updates(params, updates), state

  return step


def run(tx, loss_fn, params, steps, *, jit=True):
  step = make_step(tx, loss_fn)
  state = tx.init(params)
  if not jit:
    for _ in range(steps):
      params, state = step(params, state)
    return params, state

  def body(carry, _):
    return step(*carry), None

  (params, state), _ = jax.jit(lambda c: jax.lax.scan(body, c, length=steps))(
      (params, state)
  )
  return params, state


@parametrize_optimizers
@pytest.mark.parametrize('problem', ['parabola', 'rosenbrock'])
def test_converges(entry, problem):
  if problem == 'parabola':
    params, _ = run(
        entry.factory(**entry.kwargs), parabola, initial_params(), 2000
    )
    expected = jax.tree.map(jnp.ones_like, params)
  else:
    start = {'x': jnp.array(0.0), 'y': jnp.array(0.0)}
    params, _ = run(
        entry.factory(**entry.rosenbrock_kwargs), rosenbrock, start, 20_000
    )
    expected = {'x': 1.0, 'y': 1.0}
  chex.assert_trees_all_close(params, expected, atol=1e-2)


@parametrize_optimizers
def test_jit_matches_eager(entry):
  tx = entry.factory(**entry.kwargs)
  eager, eager_state = run(tx, parabola, initial_params(), 5, jit=False)
  jitted, jitted_state = run(tx, parabola, initial_params(), 5, jit=True)
  chex.assert_trees_all_close(eager, jitted, rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(eager_state, jitted_state, rtol=1e-6, atol=1e-7)


@parametrize_optimizers
def test_inject_hyperparams_gives_the_same_step_under_jit(entry):
  """optax's check: one jitted step, plain and injected, without static_args.

  The injected state is created outside `jit`: `adagrad_norm(granularity=
  'rows')` shapes its state by `axis`, which `init` must see as a number.
  """
  tx = entry.factory(**entry.kwargs)
  injected = optax.inject_hyperparams(entry.factory)(**entry.kwargs)
  params = [-jnp.ones((2, 3)), jnp.ones((2, 5, 2))]

  def objective(params):
    return optax.tree.norm(params, squared=True)

  value, grads = jax.value_and_grad(objective)(params)
  kwargs = dict(value=value, value_fn=objective)
  updates, state = jax.jit(functools.partial(tx.update, **kwargs))(
      grads, jax.jit(tx.init)(params), params
  )
  injected_updates, injected_state = jax.jit(
      functools.partial(injected.update, **kwargs)
  )(grads, injected.init(params), params)
  chex.assert_trees_all_close(injected_updates, updates, rtol=1e-5)
  chex.assert_trees_all_close(
      injected_state.inner_state, state, rtol=1e-5, atol=1e-5
  )


def test_an_injected_axis_traced_at_init_says_how_to_create_the_state():
  injected = optax.inject_hyperparams(optax_adaptive.adagrad_norm)(
      learning_rate=0.1, granularity='rows', axis=0
  )
  with pytest.raises(ValueError, match='call `init` outside `jax.jit`'):
    jax.jit(injected.init)(initial_params())


@parametrize_optimizers
def test_inject_hyperparams_gives_the_same_trajectory(entry):
  # In float64: in float32, an injected b2 = 0.999 is rounded before 1 - b2 is
  # taken, which moves Adam-type updates by ~1e-5 relative (optax's own too).
  with jax.enable_x64(True):
    params = initial_params(jnp.float64)
    plain, _ = run(entry.factory(**entry.kwargs), parabola, params, 20)
    injected_tx = optax.inject_hyperparams(entry.factory)(**entry.kwargs)
    injected, state = run(injected_tx, parabola, params, 20)
  chex.assert_trees_all_close(plain, injected, rtol=1e-12, atol=1e-14)
  for name, value in entry.kwargs.items():
    np.testing.assert_allclose(state.hyperparams[name], value, rtol=1e-7)


def _takes_a_schedule(factory):
  """Whether `learning_rate` is typed as a schedule, as optax's suite asks."""
  annotation = inspect.signature(factory).parameters['learning_rate'].annotation
  return annotation in (optax.ScalarOrSchedule, optax.Schedule)


@parametrize_optimizers
def test_learning_rate_schedule(entry):
  learning_rate = entry.kwargs['learning_rate']
  if not (_takes_a_schedule(entry.factory) and entry.takes_schedule):
    with pytest.raises(ValueError, match='`learning_rate`.*float'):
      entry.factory(
          **dict(
              entry.kwargs, learning_rate=optax.constant_schedule(learning_rate)
          )
      )
    return
  as_float, _ = run(
      entry.factory(**entry.kwargs), parabola, initial_params(), 10
  )
  constant = dict(
      entry.kwargs, learning_rate=optax.constant_schedule(learning_rate)
  )
  as_schedule, _ = run(
      entry.factory(**constant), parabola, initial_params(), 10
  )
  chex.assert_trees_all_close(as_float, as_schedule, rtol=1e-6, atol=1e-7)

  # A schedule that drops to zero after the first step must freeze the
  # parameters from then on, whatever the method adapts.
  def one_step_only(count):
    return jnp.where(count < 1, learning_rate, 0.0)

  frozen_kwargs = dict(entry.kwargs, learning_rate=one_step_only)
  tx = entry.factory(**frozen_kwargs)
  after_one, _ = run(tx, parabola, initial_params(), 1)
  after_five, _ = run(tx, parabola, initial_params(), 5)
  chex.assert_trees_all_close(after_one, after_five, rtol=1e-6, atol=1e-6)
  assert not np.allclose(after_one['dense']['kernel'], 0.0)


@parametrize_optimizers
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_updates_keep_the_parameter_dtype(entry, dtype):
  tx = entry.factory(**entry.kwargs)
  params = initial_params(dtype)
  state = tx.init(params)
  loss, grads = jax.value_and_grad(parabola)(params)
  updates, _ = jax.jit(functools.partial(tx.update, value_fn=parabola))(
      grads, state, params, value=loss
  )
  chex.assert_trees_all_equal_dtypes(updates, params)
  chex.assert_tree_all_finite(updates)
  params, _ = run(tx, parabola, params, 3)
  chex.assert_trees_all_equal_dtypes(params, initial_params(dtype))


@parametrize_optimizers
def test_state_structure_shapes_and_dtypes_are_stable(entry):
  tx = entry.factory(**entry.kwargs)
  params = initial_params()
  state = tx.init(params)
  step = jax.jit(make_step(tx, parabola))
  for _ in range(3):
    params, new_state = step(params, state)
    chex.assert_trees_all_equal_structs(state, new_state)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)
    chex.assert_tree_all_finite(new_state)
    state = new_state
  for path, count in optax.tree.get_all_with_path(state, 'count'):
    assert int(count) == 3, path


@parametrize_optimizers
@pytest.mark.parametrize(
    'dtype', [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]
)
def test_state_shapes_and_dtypes_are_stable_under_cond(entry, dtype):
  """optax's check: both branches of a `lax.cond` must agree on the state."""
  with jax.enable_x64(dtype == jnp.float64):
    tx = entry.factory(**entry.kwargs)
    params = initial_params(dtype)
    choose = jax.random.randint(jax.random.key(0), (), 0, 2) == 0

    @jax.jit
    def step(params, state):
      loss, grads = jax.value_and_grad(parabola)(params)
      # A loss of another dtype, on purpose, as in optax's suite.
      loss = loss.astype(jnp.bfloat16 if dtype == jnp.float16 else jnp.float16)
      updates, state = jax.lax.cond(
          choose,
          lambda: tx.update(
              grads, state, params, value=loss, value_fn=parabola
          ),
          lambda: (params, state),
      )
      return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(2):
      params, new_state = step(params, state)
      chex.assert_trees_all_equal_dtypes(params, initial_params(dtype))
      state = jax.lax.cond(choose, lambda: state, lambda: new_state)  # noqa: B023


@parametrize_optimizers
def test_extra_arguments_are_accepted_without_recompilation(entry):
  tx = optax.chain(
      optax.clip_by_global_norm(10.0), entry.factory(**entry.kwargs)
  )
  params = initial_params()
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(None)
    loss, grads = jax.value_and_grad(parabola)(params)
    updates, state = tx.update(
        grads,
        state,
        params,
        value=loss,
        value_fn=parabola,
        unexpected_extra_args_your_optimizer_doesnt_expect=1,
    )
    return optax.apply_updates(params, updates), state

  reference, _ = run(tx, parabola, params, 2)
  state = tx.init(params)
  for _ in range(2):
    params, state = step(params, state)
  chex.assert_trees_all_close(params, reference, rtol=1e-6, atol=1e-7)
  assert len(traces) == 1


@parametrize_optimizers
def test_tree_map_params_reaches_the_state(entry):
  tx = entry.factory(**entry.kwargs)
  params = initial_params()
  state = tx.init(params)
  mapped = optax.tree.map_params(tx, lambda v: v, state)
  chex.assert_trees_all_equal(mapped, state)
  # A map that changes the parameter-shaped leaves changes them alone.
  marked = optax.tree.map_params(tx, lambda v: v + 1, state)
  chex.assert_trees_all_equal_structs(marked, state)
  after, _ = jax.jit(make_step(tx, parabola))(params, mapped)
  chex.assert_tree_all_finite(after)


@parametrize_optimizers
@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float32])
def test_multi_steps_applies_one_update_per_k_calls(entry, dtype):
  tx = entry.factory(**entry.kwargs)
  accumulated = optax.MultiSteps(tx, every_k_schedule=2)
  params = initial_params(dtype)
  loss, grads = jax.value_and_grad(parabola)(params)
  kwargs = dict(value=loss, value_fn=parabola)

  single, _ = jax.jit(functools.partial(tx.update, **kwargs))(
      grads, tx.init(params), params
  )
  update = jax.jit(functools.partial(accumulated.update, **kwargs))
  state = jax.jit(accumulated.init)(params)
  first, state = update(grads, state, params)
  second, state = update(grads, state, params)
  chex.assert_trees_all_equal(first, jax.tree.map(jnp.zeros_like, params))
  chex.assert_trees_all_equal_dtypes(second, params)
  tolerance = float(jnp.finfo(dtype).eps)
  chex.assert_trees_all_close(second, single, rtol=tolerance, atol=tolerance)


@parametrize_optimizers
def test_apply_if_finite_skips_a_non_finite_step(entry):
  tx = entry.factory(**entry.kwargs)
  guarded = optax.apply_if_finite(tx, max_consecutive_errors=3)
  params = initial_params()
  state = guarded.init(params)
  loss, grads = jax.value_and_grad(parabola)(params)
  bad_grads = jax.tree.map(lambda g: g.at[...].set(jnp.nan), grads)
  updates, bad_state = guarded.update(
      bad_grads, state, params, value=jnp.nan, value_fn=parabola
  )
  chex.assert_trees_all_close(updates, jax.tree.map(jnp.zeros_like, params))
  assert int(bad_state.notfinite_count) == 1
  chex.assert_trees_all_close(bad_state.inner_state, state.inner_state)
  chex.assert_tree_all_finite(bad_state.inner_state)
  good, _ = guarded.update(
      grads, bad_state, params, value=loss, value_fn=parabola
  )
  expected, _ = tx.update(
      grads, tx.init(params), params, value=loss, value_fn=parabola
  )
  chex.assert_trees_all_close(good, expected, rtol=1e-6, atol=1e-7)


@parametrize_optimizers
def test_trains_a_flax_nnx_model_through_nnx_optimizer(entry):
  nnx = pytest.importorskip('flax.nnx')
  model = nnx.Sequential(
      nnx.Linear(4, 8, rngs=nnx.Rngs(0)),
      nnx.relu,
      nnx.Linear(8, 1, rngs=nnx.Rngs(1)),
  )
  optimizer = nnx.Optimizer(model, entry.factory(**entry.kwargs), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(2), (32, 4))
  y = jnp.sin(x.sum(axis=1, keepdims=True))

  def loss_fn(model):
    return jnp.mean((model(x) - y) ** 2)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)

    def value_fn(params):
      return loss_fn(nnx.merge(graphdef, params, rest))

    optimizer.update(model, grads, value=loss, value_fn=value_fn)
    return loss

  first = float(train_step(model, optimizer))
  for _ in range(30):
    last = float(train_step(model, optimizer))
  assert last < first
  chex.assert_tree_all_finite(nnx.state(optimizer))


@parametrize_optimizers
def test_a_jitted_step_needs_no_host_transfer_and_compiles_once(entry):
  tx = entry.factory(**entry.kwargs)
  traces = []

  def counted_step(params, state):
    traces.append(None)
    return make_step(tx, parabola)(params, state)

  step = jax.jit(counted_step)
  params = jax.device_put(initial_params())
  state = jax.device_put(tx.init(params))
  params, state = step(params, state)
  with jax.transfer_guard('disallow'):
    for _ in range(3):
      params, state = step(params, state)
  assert len(traces) == 1
