"""Every invalid hyperparameter is refused by name; every valid one runs."""

import functools
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_adaptive

# The allowed range of each kind of hyperparameter.
RANGES = {
    'non_negative': lambda x: math.isfinite(x) and x >= 0,
    'positive': lambda x: math.isfinite(x) and x > 0,
    'beta': lambda x: 0 <= x < 1,
    'finite': math.isfinite,
}
ADAM_FAMILY = dict(
    learning_rate='non_negative',
    b1='beta',
    b2='beta',
    eps='non_negative',
    weight_decay='non_negative',
)
SPECS = {
    'adaloss': dict(
        learning_rate='non_negative',
        b0='positive',
        alpha='non_negative',
        c='finite',
        weight_decay='non_negative',
    ),
    'sgd_constant': dict(
        learning_rate='non_negative', b0='positive', weight_decay='non_negative'
    ),
    'sgd_decay_sqrt': dict(
        learning_rate='non_negative',
        b0='positive',
        alpha='non_negative',
        weight_decay='non_negative',
    ),
    'adagrad_norm': dict(
        learning_rate='non_negative', b0='positive', eps='non_negative'
    ),
    'adam_l2': ADAM_FAMILY,
    # The decay multiplier learning_rate(t) / learning_rate(0) needs a rate > 0.
    'adamw': dict(ADAM_FAMILY, learning_rate='positive'),
    'adam_prox': dict(ADAM_FAMILY, learning_rate='positive'),
    'adadiff': ADAM_FAMILY,
}
DEFAULTS = dict(learning_rate=0.1, b0=1.0)

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 1 - 1e-16, -1e-300, 1e-300, 1e300]),
)


def _two_steps(tx):
  params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)}

  def loss_fn(p):
    return jnp.sum((p['w'] - 0.5) ** 2) + jnp.sum(p['b'] ** 2)

  state = tx.init(params)
  for _ in range(2):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, value=loss)
    params = optax.apply_updates(params, updates)
  return params, state


# Values such as 1e300 are valid and overflow float32 when cast; that is the
# user's choice to make, and a warning, not an error.
@pytest.mark.filterwarnings(
    'ignore:overflow encountered in cast:RuntimeWarning'
)
@hypothesis.settings(
    deadline=None,
    max_examples=150,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
@hypothesis.given(data=st.data())
def test_invalid_values_raise_naming_the_argument_and_valid_values_run(data):
  name = data.draw(st.sampled_from(sorted(SPECS)), label='optimizer')
  argument = data.draw(st.sampled_from(sorted(SPECS[name])), label='argument')
  value = data.draw(values, label='value')
  kwargs = {k: v for k, v in DEFAULTS.items() if k in SPECS[name]}
  kwargs[argument] = value
  factory = getattr(optax_adaptive, name)
  if RANGES[SPECS[name][argument]](value):
    _two_steps(factory(**kwargs))
  else:
    with pytest.raises(ValueError, match=f'`{argument}`'):
      factory(**kwargs)


def test_a_schedule_is_checked_at_its_first_step():
  with pytest.raises(ValueError, match='learning_rate'):
    optax_adaptive.adam_l2(lambda count: -0.1 + 0.01 * count)


@pytest.mark.parametrize('axis', [2, -3])
def test_an_output_axis_outside_a_kernel_is_refused_at_init(axis):
  tx = optax_adaptive.adagrad_norm(0.1, granularity='rows', axis=axis)
  with pytest.raises(ValueError, match='`axis`.*kernel'):
    tx.init({'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)})


def test_an_unknown_granularity_lists_the_choices():
  with pytest.raises(ValueError, match="'global', 'rows'"):
    optax_adaptive.scale_by_adagrad_norm(granularity='per-layer')


# Every float hyperparameter of every method, the scale-free family's
# base_learning_rate and ACME's too, with a value that is valid as a scalar.
ARRAY_ARGUMENTS = {
    **{name: dict.fromkeys(spec) for name, spec in SPECS.items()},
    'acme': dict.fromkeys(
        ['learning_rate', 'b1', 'b2', 'eps', 'weight_decay', 'rho', 'eta']
    ),
}
ARRAY_ARGUMENTS['adamw']['base_learning_rate'] = None
ARRAY_ARGUMENTS['adam_prox']['base_learning_rate'] = None


@pytest.mark.parametrize(
    'name, argument',
    [
        (name, argument)
        for name, arguments in sorted(ARRAY_ARGUMENTS.items())
        for argument in arguments
    ],
)
def test_an_array_valued_hyperparameter_is_refused_by_name(name, argument):
  kwargs = {
      k: v
      for k, v in DEFAULTS.items()
      if k in ARRAY_ARGUMENTS[name] or k == 'learning_rate'
  }
  kwargs[argument] = jnp.array([0.1, 0.2])
  with pytest.raises(ValueError, match=f'`{argument}` must be a scalar'):
    getattr(optax_adaptive, name)(**kwargs)


@pytest.mark.parametrize('axis', [np.int64(0), np.int32(-1), jnp.asarray(0)])
def test_an_integer_axis_may_be_a_numpy_or_jax_integer(axis):
  tx = optax_adaptive.adagrad_norm(0.1, granularity='rows', axis=axis)
  _, state = _two_steps(tx)
  assert state[0].accumulator['w'].shape == ((1, 3) if int(axis) else (2, 1))


@pytest.mark.parametrize('axis', [True, np.bool_(False), 1.0, jnp.ones(2, int)])
def test_an_axis_that_is_not_one_integer_is_refused(axis):
  with pytest.raises(ValueError, match='`axis` must be an integer'):
    optax_adaptive.adagrad_norm(0.1, granularity='rows', axis=axis)


def test_adaloss_refuses_a_loss_that_is_not_a_scalar_before_any_work():
  tx = optax_adaptive.adaloss(learning_rate=0.1)
  params = jnp.zeros(2)
  traces = []

  @jax.jit
  def step(state, value):
    traces.append(None)
    return tx.update(jnp.ones(2), state, params, value=value)

  state = tx.init(params)
  with pytest.raises(ValueError, match='pass the mean over the batch'):
    step(state, jnp.ones(8))
  traces.clear()
  for loss in (1.0, 2.0, 3.0):
    _, state = step(state, jnp.float32(loss))
  assert len(traces) == 1


@pytest.mark.parametrize('name', sorted(SPECS))
def test_injected_hyperparameters_are_not_read_on_the_host_under_jit(name):
  kwargs = {k: v for k, v in DEFAULTS.items() if k in SPECS[name]}
  tx = optax.inject_hyperparams(getattr(optax_adaptive, name))(**kwargs)
  params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)}
  step = jax.jit(functools.partial(tx.update, value=jnp.float32(1.0)))
  grads = jax.tree.map(jnp.ones_like, params)
  state = jax.device_put(tx.init(params))
  _, state = step(grads, state, params)
  with jax.transfer_guard('disallow'):
    _, state = step(grads, state, params)
