"""Every method gives the same trajectory on one device and sharded over eight.

Global quantities (AdaGrad-Norm's norm, ACME's sums, the batch loss AdaLoss
reads) are reductions inside `jit`, so they must come out global, not per shard.

Not collected by the suite itself: ``test_sharding.py`` runs these cases in a
child process on eight host CPU devices, whatever devices the suite's process
has (one GPU, say).
"""

import functools

import chex
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest
import test_common

NUM_DEVICES = 8


def _problem():
  keys = jax.random.split(jax.random.key(0), 4)
  params = {
      'hidden': {
          'kernel': 0.3 * jax.random.normal(keys[0], (8, 16)),
          'bias': jnp.zeros(16),
      },
      'out': {
          'kernel': 0.3 * jax.random.normal(keys[1], (16, 8)),
          'bias': jnp.zeros(8),
      },
  }
  x = jax.random.normal(keys[2], (32, 8))
  y = jnp.tanh(x @ jax.random.normal(keys[3], (8, 8)))
  return params, x, y


def _loss(params, x, y, gather=False):
  if gather:
    # FSDP under explicit sharding: the model all-gathers each weight before
    # use, since a batch and a weight sharded over the same axis can't combine.
    params = jax.tree.map(lambda p: jax.sharding.reshard(p, P()), params)
  h = jnp.tanh(x @ params['hidden']['kernel'] + params['hidden']['bias'])
  return jnp.mean(
      (h @ params['out']['kernel'] + params['out']['bias'] - y) ** 2
  )


def _train(tx, params, x, y, steps=5, gather=False):
  loss_fn = functools.partial(_loss, gather=gather)

  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    batch_loss = functools.partial(loss_fn, x=x, y=y)
    updates, state = tx.update(
        grads, state, params, value=loss, value_fn=batch_loss
    )
    return optax.apply_updates(params, updates), state

  step = jax.jit(step, donate_argnums=(0, 1))
  state = jax.jit(tx.init)(params)
  trajectory = []
  for _ in range(steps):
    params, state = step(params, state, x, y)
    trajectory.append(jax.tree.map(np.asarray, params))  # the next step donates
  return trajectory, params, state


def _fsdp_sharding(mesh, tree):
  """Shards each leaf's first axis over the devices where it divides."""

  def spec(leaf):
    if leaf.ndim and leaf.shape[0] % NUM_DEVICES == 0:
      return NamedSharding(mesh, P('data'))
    return NamedSharding(mesh, P())

  return jax.tree.map(spec, tree)


# Methods with no buffer shaped like each parameter: scalars, or one value per
# output unit (AdaGrad-Norm's rows).
COMPACT_STATE = (
    'adaloss',
    'sgd_constant',
    'sgd_decay_sqrt',
    'adagrad_norm',
    'adagrad_norm_rows',
)


@test_common.parametrize_optimizers
@pytest.mark.parametrize('layout', ['data_parallel', 'fsdp'])
@pytest.mark.parametrize('axis_type', ['auto', 'explicit'])
def test_sharded_trajectory_matches_single_device(entry, layout, axis_type):
  params, x, y = _problem()
  tx = entry.factory(**entry.kwargs)
  single_device = jax.devices()[0]
  reference, _, _ = _train(
      tx,
      jax.device_put(params, single_device),
      jax.device_put(x, single_device),
      jax.device_put(y, single_device),
  )

  params, x, y = _problem()  # the first run donated its buffers
  axis_types = {
      'auto': jax.sharding.AxisType.Auto,
      'explicit': jax.sharding.AxisType.Explicit,
  }
  mesh = jax.make_mesh(
      (NUM_DEVICES,), ('data',), axis_types=(axis_types[axis_type],)
  )
  batch_sharding = NamedSharding(mesh, P('data'))
  if layout == 'fsdp':
    param_sharding = _fsdp_sharding(mesh, params)
  else:
    param_sharding = jax.tree.map(lambda _: NamedSharding(mesh, P()), params)
  sharded_params = jax.device_put(params, param_sharding)
  with jax.set_mesh(mesh):
    trajectory, final_params, state = _train(
        tx,
        sharded_params,
        jax.device_put(x, batch_sharding),
        jax.device_put(y, batch_sharding),
        gather=(axis_type == 'explicit' and layout == 'fsdp'),
    )

  chex.assert_trees_all_close(trajectory, reference, rtol=1e-6, atol=1e-6)
  for got, want in zip(
      jax.tree.leaves(final_params), jax.tree.leaves(param_sharding)
  ):
    assert got.sharding.is_equivalent_to(want, got.ndim)
  checked = _state_leaves_follow_parameter_sharding(
      state, param_sharding, params
  )
  if entry.name not in COMPACT_STATE:
    assert checked >= len(jax.tree.leaves(params))


def _state_leaves_follow_parameter_sharding(state, param_sharding, params):
  """Asserts each parameter's buffers keep its sharding; counts them."""
  by_path = {
      path: (sharding, leaf.shape)
      for (path, sharding), leaf in zip(
          jax.tree.leaves_with_path(param_sharding), jax.tree.leaves(params)
      )
  }
  checked = 0
  for path, leaf in jax.tree.leaves_with_path(state):
    for param_path, (sharding, shape) in by_path.items():
      if path[-len(param_path) :] == param_path and leaf.shape == shape:
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), path
        checked += 1
  return checked
