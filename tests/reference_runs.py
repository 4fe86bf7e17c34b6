"""Replays the reference trajectories recorded with the authors' PyTorch code.

The cases live in `tests/testdata/reference`: runs of the authors' code, which
its `regenerate.py` makes again, in the format its README gives. Each case
trains a one-conv, one-dense classifier in PyTorch layouts for a few steps;
`replay` runs the same steps through an optax transformation and returns what
the reference stored.
"""

import dataclasses
import functools
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

REFERENCE_DIR = pathlib.Path(__file__).parent / 'testdata' / 'reference'


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  optimizer: str
  hparams: dict[str, Any]
  steps: int
  loss_multiplier: float
  schedule: tuple[float, ...] | None
  arrays: dict[str, np.ndarray]

  @property
  def param_names(self) -> list[str]:
    return sorted(
        k[len('init/') :] for k in self.arrays if k.startswith('init/')
    )

  def init_params(self, dtype) -> dict[str, jax.Array]:
    return {
        n: jnp.asarray(self.arrays[f'init/{n}'], dtype)
        for n in self.param_names
    }

  def learning_rate(self):
    """The learning rate as the library takes it: a float or a schedule."""
    if self.schedule is None:
      return self.hparams['learning_rate']
    table = jnp.asarray(self.schedule)
    return lambda count: table[jnp.minimum(count, len(self.schedule) - 1)]


def load_cases() -> dict[str, Case]:
  specs = json.loads((REFERENCE_DIR / 'cases.json').read_text())
  cases = {}
  for spec in specs:
    with np.load(REFERENCE_DIR / f'{spec["name"]}.npz') as data:
      arrays = {k: data[k] for k in data.files}
    cases[spec['name']] = Case(
        name=spec['name'],
        optimizer=spec['optimizer'],
        hparams=dict(spec['hparams']),
        steps=spec['steps'],
        loss_multiplier=spec.get('loss_multiplier', 1.0),
        schedule=tuple(spec['schedule']) if 'schedule' in spec else None,
        arrays=arrays,
    )
  return cases


def loss_fn(params, x, y, loss_multiplier=1.0):
  """Reference model: conv (OIHW, VALID) + ReLU + dense, mean cross-entropy."""
  h = jax.lax.conv_general_dilated(
      x,
      params['conv.weight'],
      (1, 1),
      'VALID',
      dimension_numbers=('NCHW', 'OIHW', 'NCHW'),
  )
  if 'conv.bias' in params:
    h = h + params['conv.bias'][None, :, None, None]
  h = jax.nn.relu(h).reshape(x.shape[0], -1)
  logits = h @ params['fc.weight'].T
  if 'fc.bias' in params:
    logits = logits + params['fc.bias']
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return loss_multiplier * loss


def replay(
    case: Case,
    optimizer: optax.GradientTransformationExtraArgs,
    dtype=jnp.float64,
    steps: int | None = None,
):
  """Runs `steps` reference steps; returns (trajectories, losses, states).

  Every step passes the minibatch loss as `value` and a re-evaluation of the
  loss on the same minibatch as `value_fn`, so any method of the library can be
  replayed here, whatever extra arguments it uses.
  """
  steps = case.steps if steps is None else steps
  x_all = jnp.asarray(case.arrays['X'], dtype)
  y_all = jnp.asarray(case.arrays['y'])
  params = case.init_params(dtype)
  state = optimizer.init(params)
  batch_loss = functools.partial(loss_fn, loss_multiplier=case.loss_multiplier)

  @jax.jit
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(batch_loss)(params, x, y)
    updates, state = optimizer.update(
        grads, state, params, value=loss, value_fn=lambda p: batch_loss(p, x, y)
    )
    return optax.apply_updates(params, updates), state, loss

  trajectories = {n: [] for n in params}
  losses, states = [], []
  for rows in case.arrays['batches'][:steps]:
    params, state, loss = step(params, state, x_all[rows], y_all[rows])
    for n in params:
      trajectories[n].append(params[n])
    losses.append(loss)
    states.append(state)
  trajectories = {n: np.stack(v) for n, v in trajectories.items()}
  return trajectories, np.asarray(losses), states
