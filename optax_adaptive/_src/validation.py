"""Construction-time checks of hyperparameters.

Every check names the argument and the allowed range. Values that are not known
at construction (tracers, as under `optax.inject_hyperparams` inside `jit`, or
schedules) are not checked here: they cannot be read without a host round trip.
"""

from collections.abc import Callable
import math
from typing import Any

import jax
import numpy as np


def _concrete_float(value: Any) -> float | None:
  """Returns `value` as a Python float, or None when it is not known yet."""
  if isinstance(value, jax.core.Tracer) or callable(value):
    return None
  array = np.asarray(value)
  if array.ndim != 0:
    return None
  return float(array)


def check_finite(name: str, value: Any) -> None:
  x = _concrete_float(value)
  if x is not None and not math.isfinite(x):
    raise ValueError(f'`{name}` must be a finite number, got {value!r}.')


def check_non_negative(name: str, value: Any) -> None:
  x = _concrete_float(value)
  if x is not None and not (math.isfinite(x) and x >= 0):
    raise ValueError(f'`{name}` must be a finite number >= 0, got {value!r}.')


def check_positive(name: str, value: Any) -> None:
  x = _concrete_float(value)
  if x is not None and not (math.isfinite(x) and x > 0):
    raise ValueError(f'`{name}` must be a finite number > 0, got {value!r}.')


def check_beta(name: str, value: Any) -> None:
  x = _concrete_float(value)
  if x is not None and not 0 <= x < 1:
    raise ValueError(f'`{name}` must be in [0, 1), got {value!r}.')


def check_learning_rate(value: Any) -> None:
  """A learning rate is a float >= 0 or a schedule (checked at step 0)."""
  if isinstance(value, Callable):
    value = value(0)
  check_non_negative('learning_rate', value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(
        f'`{name}` must be one of {", ".join(map(repr, choices))}, got {value!r}.')
