"""Checks of hyperparameters at construction, and of the loss at each update.

Every check names the argument and the allowed range. A hyperparameter must be a
scalar: an array of several values is refused rather than broadcast. Values that
are not known at construction (tracers, as under `optax.inject_hyperparams`
inside `jit`, or schedules) are checked for their shape only: their value cannot
be read without a host round trip.
"""

import math
import numbers
from typing import Any

import jax
import numpy as np


def _concrete_float(name: str, value: Any) -> float | None:
  """Returns `value` as a Python float, or None when it is not known yet.

  Raises:
    ValueError: `value` is not a scalar.
  """
  if callable(value):
    return None
  if np.ndim(value) != 0:
    raise ValueError(
        f'`{name}` must be a scalar, got an array of shape '
        f'{np.shape(value)}: {value!r}.'
    )
  if isinstance(value, jax.core.Tracer):
    return None
  return float(np.asarray(value))


def check_finite(name: str, value: Any) -> None:
  x = _concrete_float(name, value)
  if x is not None and not math.isfinite(x):
    raise ValueError(f'`{name}` must be a finite number, got {value!r}.')


def check_non_negative(name: str, value: Any) -> None:
  x = _concrete_float(name, value)
  if x is not None and not (math.isfinite(x) and x >= 0):
    raise ValueError(f'`{name}` must be a finite number >= 0, got {value!r}.')


def check_positive(name: str, value: Any) -> None:
  x = _concrete_float(name, value)
  if x is not None and not (math.isfinite(x) and x > 0):
    raise ValueError(f'`{name}` must be a finite number > 0, got {value!r}.')


def check_beta(name: str, value: Any) -> None:
  x = _concrete_float(name, value)
  if x is not None and not 0 <= x < 1:
    raise ValueError(f'`{name}` must be in [0, 1), got {value!r}.')


def check_learning_rate(value: Any) -> None:
  """A learning rate is a float >= 0 or a schedule (checked at step 0)."""
  if callable(value):
    value = value(0)
  check_non_negative('learning_rate', value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(
        f'`{name}` must be one of {", ".join(map(repr, choices))}, got'
        f' {value!r}.'
    )


def check_integer(name: str, value: Any, minimum: int | None = None) -> Any:
  """Returns `value` as a Python int: an integer (NumPy's or a JAX scalar too).

  Booleans are refused: `True` is an `int` to Python, never a count here. A
  traced integer (injected by `optax.inject_hyperparams` inside `jit`) is
  returned as it is, its dtype and shape checked: its value cannot be read
  without a host round trip.
  """
  dtype = getattr(value, 'dtype', None)
  if (
      isinstance(value, (bool, np.bool_))
      or np.ndim(value) != 0
      or not (
          isinstance(value, numbers.Integral)
          or (dtype is not None and np.issubdtype(dtype, np.integer))
      )
  ):
    raise ValueError(f'`{name}` must be an integer, got {value!r}.')
  if isinstance(value, jax.core.Tracer):
    return value
  if minimum is not None and value < minimum:
    raise ValueError(
        f'`{name}` must be an integer >= {minimum}, got {value!r}.'
    )
  return int(value)


def check_scalar_loss(value: Any, method: str) -> None:
  """Refuses a loss that is not a scalar: a per-example loss left unreduced.

  The shape is static, so this reads nothing from the device, under `jit` too.
  """
  if np.ndim(value) != 0:
    raise ValueError(
        f'{method} needs the loss of the step as a scalar `value`, got shape '
        f'{np.shape(value)}: pass the mean over the batch (for instance '
        '`jnp.mean(per_example_losses)`).'
    )
