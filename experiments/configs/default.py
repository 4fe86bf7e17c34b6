"""The configuration of a training run, with the defaults of a first run.

A :class:`Config` is a frozen dataclass: everything a run depends on, written
as ``config.json`` beside the run's metrics. The papers' modules in this
package (``scale_free``, ``adaloss``, ``acme``, ``adadiff_cifar``) build one
from each paper's own flags.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import json
from typing import Any

RUN_CONTROLS = (
    'resume',
    'progress_bar',
    'max_steps',
    'checkpoint_every_steps',
    'data_dir',
    'micro_batch',
)
"""The fields of a :class:`Config` that steer a run but not what it trains: a
run resumes under other values of these (more steps, another data folder,
micro-batches that fit another machine)."""


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a training run depends on.

  Attributes:
    dataset: ``'digits'``, ``'cifar10'`` or ``'cifar100'``.
    train_split: the split trained on (``'train'``, ``'train45k'``).
    eval_splits: the splits evaluated at every evaluation; metrics are named
      after them (``test_*``, ``val_*`` for ``val5k``, ``train_eval_*`` for a
      training split evaluated without augmentation).
    data_dir: where TFDS keeps prepared datasets (None: its default).
    image_size: side the images are resized to (224 for ViT-S/16, ResNet-50).
    cutout: side of the Cutout square in training (0: none).
    mean_std: per-channel ``(mean, std)`` to normalise with, where a paper's
      code uses other values than the dataset's own (None: its own).
    model: a key of ``experiments.models.MODELS``.
    model_kwargs: overrides of the model family's arguments.
    pretrained: a checkpoint to start from (a file or ``timm:NAME``; see
      ``experiments.pretrained``), or None for a fresh initialisation.
    optimizer: a key of ``experiments.optimizers.METHODS``.
    learning_rate: the base learning rate.
    optimizer_kwargs: the method's other arguments.
    schedule: ``'constant'``, ``'cosine'`` or ``'step'``; stepped once per
      epoch, as the papers' PyTorch schedulers are.
    schedule_kwargs: ``final_fraction`` (cosine's floor relative to the base
      rate), ``step_epochs`` and ``gamma`` (step decay).
    batch_size: the global batch size; a multiple of the number of devices.
    micro_batch: compute each step's loss and gradient this many examples
      of the global batch at a time, summing them (None: the whole batch at
      once); a divisor of ``batch_size`` and a multiple of the number of
      devices. Same loss and gradient up to float32 rounding, but BatchNorm
      normalises each micro-batch with its own statistics.
    num_epochs: epochs to train.
    max_steps: stop after this many steps in all (None: no limit).
    max_steps_per_epoch: shorten every epoch to this many steps (None: the
      whole split), for quick runs and tests.
    eval_every_epochs: evaluate every this many epochs, and after the last.
    checkpoint_every_steps: also checkpoint every this many steps (0: only
      at evaluations and at the end).
    loss_multiplier: multiplies the training loss (the scale-free paper's
      check of scale-freeness); the logged losses are not multiplied.
    label_smoothing: of the training loss.
    seed: initialisation, data order and augmentation.
    store_stats: save parameters, gradients and updates every
      ``store_stats_interval`` steps of an epoch to ``stats/step_*.npz``.
    store_stats_interval: see ``store_stats``.
    progress_bar: show a progress bar per epoch (only on a terminal).
    resume: continue from the latest checkpoint in the working directory;
      without it, a directory that has checkpoints is refused.
  """

  dataset: str = 'digits'
  train_split: str = 'train'
  eval_splits: tuple[str, ...] = ('test',)
  data_dir: str | None = None
  image_size: int = 32
  cutout: int = 0
  mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None
  model: str = 'resnet8'
  model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  pretrained: str | None = None
  optimizer: str = 'adamw'
  learning_rate: float = 1e-3
  optimizer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  schedule: str = 'constant'
  schedule_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  batch_size: int = 64
  micro_batch: int | None = None
  num_epochs: int = 4
  max_steps: int | None = None
  max_steps_per_epoch: int | None = None
  eval_every_epochs: int = 1
  checkpoint_every_steps: int = 0
  loss_multiplier: float = 1.0
  label_smoothing: float = 0.0
  seed: int = 0
  store_stats: bool = False
  store_stats_interval: int = 1
  progress_bar: bool = True
  resume: bool = False

  def to_json(self) -> dict[str, Any]:
    """The fields as JSON values (tuples become lists)."""
    return dataclasses.asdict(self)


def get_config(**overrides) -> Config:
  """The first run's configuration: ResNet-8 with AdamW on digits.

  Args:
    **overrides: fields of :class:`Config` to change.

  Returns:
    The configuration.

  Example:
    >>> get_config(num_epochs=2).num_epochs
    2
  """
  return Config(**overrides)


def changed_settings(saved: Mapping[str, Any], config: Config) -> list[str]:
  """The fields in which `config` differs from a run's saved ``config.json``.

  Args:
    saved: the JSON object of a run's ``config.json``.
    config: the configuration of a run in the same folder.

  Returns:
    The names of the differing fields, sorted, :data:`RUN_CONTROLS` left out.

  Example:
    >>> saved = get_config(max_steps=5).to_json()
    >>> changed_settings(saved, get_config(num_epochs=8))
    ['num_epochs']
  """
  # Both through JSON, so that tuples compare with the lists saved for them.
  saved, wanted = (json.loads(json.dumps(c)) for c in (saved, config.to_json()))
  return sorted(
      k
      for k in saved.keys() | wanted.keys()
      if k not in RUN_CONTROLS and saved.get(k) != wanted.get(k)
  )


def settings_key(config, fields: Sequence[str]) -> str:
  """The `fields` of `config` as one JSON string, a key for caches.

  The training loops compile their steps once per key, so that runs of the
  same settings in a process (a resumed run, the same settings again) share
  them.

  Args:
    config: a run's configuration (this module's :class:`Config` or another
      dataclass of JSON values, such as the language model's).
    fields: the names of the fields the cached value depends on.

  Returns:
    The JSON object of those fields, its keys sorted.

  Example:
    >>> settings_key(get_config(), ('optimizer', 'learning_rate'))
    '{"learning_rate": 0.001, "optimizer": "adamw"}'
  """
  return json.dumps({k: getattr(config, k) for k in fields}, sort_keys=True)
