"""Every invalid hyperparameter is refused by name; every valid one runs."""

import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
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
ADAM_FAMILY = dict(learning_rate='non_negative', b1='beta', b2='beta',
                   eps='non_negative', weight_decay='non_negative')
SPECS = {
    'adaloss': dict(learning_rate='non_negative', b0='positive',
                    alpha='non_negative', c='finite', weight_decay='non_negative'),
    'sgd_constant': dict(learning_rate='non_negative', b0='positive',
                         weight_decay='non_negative'),
    'sgd_decay_sqrt': dict(learning_rate='non_negative', b0='positive',
                           alpha='non_negative', weight_decay='non_negative'),
    'adagrad_norm': dict(learning_rate='non_negative', b0='positive',
                         eps='non_negative'),
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
@pytest.mark.filterwarnings('ignore:overflow encountered in cast:RuntimeWarning')
@hypothesis.settings(deadline=None, max_examples=150,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
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
