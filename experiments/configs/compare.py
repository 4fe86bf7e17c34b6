"""``python -m experiments compare``: every method of the library on digits.

One small model, the same data, epochs and seed for every method, and fixed
settings rather than settings tuned per method: the comparison is a check of
the whole stack, not a benchmark.
"""

from typing import Any

from experiments.configs.default import Config

# The rate and the other arguments of each method. One b0 for the AdaLoss
# family, whose claim is robustness to it; SGD-Constant starts where
# SGD-DecaySqrt does. One rate for the Adam family. ACME adapts its rate from
# 1e-2, its leap's internal cosine spanning the library's default 50,000 steps
# (so not decaying within this short run).
SETTINGS: dict[str, dict[str, Any]] = {
    'adaloss': {'learning_rate': 1.0, 'optimizer_kwargs': {'b0': 1.0}},
    'adagrad_norm': {'learning_rate': 1.0, 'optimizer_kwargs': {'b0': 1.0}},
    'sgd_constant': {'learning_rate': 0.5, 'optimizer_kwargs': {'b0': 1.0}},
    'sgd_decay_sqrt': {'learning_rate': 0.5, 'optimizer_kwargs': {'b0': 1.0}},
    'adam_l2': {
        'learning_rate': 3e-3,
        'optimizer_kwargs': {'weight_decay': 5e-4},
    },
    'adamw': {
        'learning_rate': 3e-3,
        'optimizer_kwargs': {'weight_decay': 5e-4},
    },
    'adam_prox': {
        'learning_rate': 3e-3,
        'optimizer_kwargs': {'weight_decay': 5e-4},
    },
    'adadiff': {
        'learning_rate': 3e-3,
        'optimizer_kwargs': {'weight_decay': 5e-4},
    },
    'acme': {
        'learning_rate': 1e-2,
        'optimizer_kwargs': {
            'adapt_learning_rate': True,
            'adam': True,
            'schedule_steps': 50_000,
        },
    },
}


def describe(method: str) -> str:
  """The settings of `method`, for the comparison's table.

  Example:
    >>> describe('adamw')
    'lr 0.003, weight_decay 0.0005'
  """
  settings = SETTINGS[method]
  return ', '.join(
      [f'lr {settings["learning_rate"]:g}']
      + [
          f'{k} {v:g}' if isinstance(v, float) else f'{k} {v}'
          for k, v in settings['optimizer_kwargs'].items()
      ]
  )


def get_config(method: str, **overrides) -> Config:
  """The comparison's run of `method`.

  Args:
    method: a key of :data:`SETTINGS`.
    **overrides: other :class:`Config` fields (model, epochs, ...).

  Returns:
    The configuration.

  Example:
    >>> get_config('adaloss').optimizer_kwargs
    {'b0': 1.0}
  """
  if method not in SETTINGS:
    raise ValueError(
        f'Unknown optimizer {method!r}; choose one of {", ".join(SETTINGS)}.'
    )
  settings = {
      'dataset': 'digits',
      'model': 'resnet8',
      'batch_size': 64,
      'num_epochs': 4,
      'optimizer': method,
      **SETTINGS[method],
  }
  return Config(**{**settings, **overrides})
