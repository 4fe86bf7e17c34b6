"""``python -m experiments robustness``: the methods, the grid, the defaults.

Every method runs at its documented defaults but for ``learning_rate``, which
the grid sets; :data:`METHODS` says what that argument is for each method
(for several it multiplies a step the method estimates itself). The grid's
settings are a frozen :class:`Grid`, saved as ``grid.json`` in the working
directory so that ``--resume`` can refuse a grid of other settings.
"""

import dataclasses
import json
import math
from typing import Any, NamedTuple

TASKS = ('digits', 'ptb')

# The panels of the figure, in order.
FAMILIES = (
    'optax_adaptive',
    'optax: a rate to tune',
    'optax.contrib: learning-rate-free',
    'optax.contrib: Polyak step from the loss',
)


class Method(NamedTuple):
  """A method of the grid, as the table describes it.

  Attributes:
    family: its panel in the figure, one of :data:`FAMILIES`.
    construction: how it is built, ``RATE`` standing for the grid's rate.
    rate_meaning: what ``learning_rate`` is to it.
  """

  family: str
  construction: str
  rate_meaning: str


_OURS, _TUNED, _FREE, _POLYAK = FAMILIES
METHODS: dict[str, Method] = {
    'adaloss': Method(
        _OURS,
        'optax_adaptive.adaloss(RATE)',
        'eta in the step eta / b_t, b_t^2 = 1 + sum of the losses',
    ),
    'adagrad_norm': Method(
        _OURS,
        'optax_adaptive.adagrad_norm(RATE)',
        'eta in eta / b_t, b_t^2 = 1 + sum of squared gradient norms',
    ),
    'acme': Method(
        _OURS,
        'optax_adaptive.acme(RATE)',
        'the first step; then fitted from a second loss evaluation',
    ),
    'acme_asam': Method(
        _OURS,
        'optax_adaptive.acme(RATE, asam=True)',
        'as acme; the gradient taken at an adversarial point (ASAM)',
    ),
    'adamw': Method(
        _OURS, 'optax_adaptive.adamw(RATE)', "Adam's step (weight decay 0)"
    ),
    'adam': Method(_TUNED, 'optax.adam(RATE)', 'the step'),
    'sgd': Method(
        _TUNED, 'optax.sgd(RATE, momentum=0.9)', 'the step (momentum 0.9)'
    ),
    'schedule_free_adamw': Method(
        _TUNED,
        'optax.contrib.schedule_free_adamw(RATE)',
        'the step; evaluated at schedule_free_eval_params',
    ),
    'prodigy': Method(
        _FREE,
        'optax.contrib.prodigy(RATE)',
        'multiplies the estimated step (default 1)',
    ),
    'dadapt_adamw': Method(
        _FREE,
        'optax.contrib.dadapt_adamw(RATE)',
        'multiplies the estimated step (default 1)',
    ),
    'dog': Method(
        _FREE,
        'optax.contrib.dog(RATE)',
        'multiplies the distance-over-gradients step (default 1)',
    ),
    'dowg': Method(
        _FREE,
        'optax.contrib.dowg(RATE)',
        'multiplies the distance-over-gradients step (default 1)',
    ),
    'mechanize': Method(
        _FREE,
        'optax.contrib.mechanize(optax.adam(RATE))',
        "Adam's rate; Mechanic learns a scale on its steps",
    ),
    'cocob': Method(
        _FREE,
        'optax.contrib.cocob(RATE)',
        'scales the gradients before the bet, which ignores their scale',
    ),
    'momo': Method(
        _POLYAK,
        'optax.contrib.momo(RATE)',
        'the cap on the Polyak step (default 1)',
    ),
    'momo_adam': Method(
        _POLYAK,
        'optax.contrib.momo_adam(RATE)',
        'the cap on the Polyak step (default 1e-2)',
    ),
}

# The list; ASAM's third evaluation per step makes acme_asam the
# dearest method, and it is left to --methods.
DEFAULT_METHODS = tuple(name for name in METHODS if name != 'acme_asam')
# The method every time ratio is relative to; always run.
REFERENCE_METHOD = 'adam'
# 1e-4 to 10, one point per half decade.
DEFAULT_RATES = tuple(float(f'{10 ** (k / 2):.4g}') for k in range(-8, 3))


@dataclasses.dataclass(frozen=True)
class Grid:
  """What a robustness grid trains: the same for every method.

  Attributes:
    task: ``'digits'`` (the small convnet on scikit-learn's digits) or
      ``'ptb'`` (a small AWD-LSTM on the PTB text of ``--data``).
    rates: the initial learning rates.
    seeds: the seeds; each fixes the initialisation, the data order and the
      dropout masks.
    epochs: passes over the training data.
    batch_size: examples per step (columns of the token stream for ``ptb``).
    max_steps_per_epoch: shortens every epoch (None: the whole split).
    bptt: ``ptb``'s window length in tokens.
    embed_size: ``ptb``'s embedding size.
    hidden_size: ``ptb``'s hidden LSTM size.
    num_layers: ``ptb``'s LSTM layers.
  """

  task: str = 'digits'
  rates: tuple[float, ...] = DEFAULT_RATES
  seeds: tuple[int, ...] = (0, 1, 2)
  epochs: int = 5
  batch_size: int = 64
  max_steps_per_epoch: int | None = None
  bptt: int = 35
  embed_size: int = 100
  hidden_size: int = 200
  num_layers: int = 2

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(
          f'Unknown task {self.task!r}; choose one of {", ".join(TASKS)}.'
      )
    if not self.rates or not all(
        math.isfinite(rate) and rate > 0 for rate in self.rates
    ):
      raise ValueError(
          f'Every rate must be a finite number > 0, got {list(self.rates)}.'
      )
    if len(set(self.rates)) != len(self.rates):
      raise ValueError(f'The rates must be distinct, got {list(self.rates)}.')
    if not self.seeds:
      raise ValueError('At least one seed is needed.')
    for name in ('epochs', 'batch_size', 'bptt', 'embed_size', 'hidden_size'):
      if getattr(self, name) < 1:
        raise ValueError(f'`{name}` must be at least 1.')
    if self.num_layers < 1:
      raise ValueError('`num_layers` must be at least 1.')
    if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
      raise ValueError('`max_steps_per_epoch` must be at least 1.')

  def to_json(self) -> dict[str, Any]:
    """The settings as a JSON object, those a task does not use left out.

    Example:
      >>> sorted(Grid(rates=(0.1,), seeds=(0,)).to_json())
      ['batch_size', 'epochs', 'max_steps_per_epoch', 'rates', 'seeds', 'task']
    """
    settings = dataclasses.asdict(self)
    if self.task != 'ptb':
      for name in ('bptt', 'embed_size', 'hidden_size', 'num_layers'):
        del settings[name]
    return json.loads(json.dumps(settings))

  def changed_settings(self, saved: dict[str, Any]) -> list[str]:
    """The settings in which this grid differs from a saved ``grid.json``.

    Example:
      >>> saved = Grid(epochs=2).to_json()
      >>> Grid(epochs=3, seeds=(0,)).changed_settings(saved)
      ['epochs', 'seeds']
    """
    wanted = self.to_json()
    return sorted(
        key
        for key in saved.keys() | wanted.keys()
        if saved.get(key) != wanted.get(key)
    )
