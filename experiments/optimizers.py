"""The optimizers the experiments compare, by the names the papers use.

The library's methods, and the baselines their papers compare with (optax's
Adam, AdaBelief and SGD with momentum). ``schedule='cosine'`` decays the rate to
zero over the run; ACME adapts its own rate and takes a constant start.
"""

from collections.abc import Callable

import optax

import optax_adaptive

FACTORIES: dict[str, Callable[..., optax.GradientTransformation]] = {
    'adaloss': optax_adaptive.adaloss,
    'adagrad_norm': optax_adaptive.adagrad_norm,
    'sgd_constant': optax_adaptive.sgd_constant,
    'sgd_decay_sqrt': optax_adaptive.sgd_decay_sqrt,
    'adam_l2': optax_adaptive.adam_l2,
    'adamw': optax_adaptive.adamw,
    'adam_prox': optax_adaptive.adam_prox,
    'adadiff': optax_adaptive.adadiff,
    'acme': optax_adaptive.acme,
    'adam': optax.adam,
    'adabelief': optax.adabelief,
    'sgd': optax.sgd,
}
SCHEDULES = ('constant', 'cosine')


def create(name: str, learning_rate: float, *, schedule: str = 'constant',
           total_steps: int = 1, **kwargs) -> optax.GradientTransformation:
  """The optimizer `name` with `learning_rate` on `schedule`."""
  if name not in FACTORIES:
    raise ValueError(f'Unknown optimizer {name!r}; choose one of '
                     f'{", ".join(sorted(FACTORIES))}.')
  if schedule not in SCHEDULES:
    raise ValueError(f'Unknown schedule {schedule!r}; choose one of '
                     f'{", ".join(SCHEDULES)}.')
  if schedule == 'cosine' and name == 'acme':
    raise ValueError('acme adapts its own rate: use schedule="constant".')
  rate = (optax.cosine_decay_schedule(learning_rate, total_steps)
          if schedule == 'cosine' else learning_rate)
  return FACTORIES[name](rate, **kwargs)
