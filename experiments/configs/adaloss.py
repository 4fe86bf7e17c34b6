"""Wu, Xie, Du and Ward (AAAI 2022): AdaLoss and its three baselines.

The authors' ``train.py`` (gail-yxie/adaloss) reads a JSON configuration
(``-c``) whose ``train_loss`` and ``optimizer`` sections pick the method, and
lets flags override some of its entries. :func:`read_authors_config` reads
that layout, and refuses a key outside it (naming the closest one) rather
than ignore a typo; :func:`get_config` maps the values to a run. The four
JSON files beside this module (``configs/adaloss/*.json``) are the paper's
four methods in that layout.

=================== ================= ==============================
``train_loss.type`` ``optimizer.type`` method
=================== ================= ==============================
``AdaLoss``         ``SGD``            ``adaloss``
``PlainLossb0``     ``SGD``            ``sgd_constant``
``PlainLossSqrt``   ``SGD``            ``sgd_decay_sqrt``
``CrossEntropy``    ``Adagradnorm``    ``adagrad_norm`` (per output unit)
``CrossEntropy``    ``SGD``            ``sgd`` (PyTorch's SGD)
=================== ================= ==============================
"""

from collections.abc import Mapping
import difflib
import json
import pathlib
from typing import Any

from experiments.configs.default import Config

CONFIG_DIR = pathlib.Path(__file__).parent / 'adaloss'
# The authors' timm models and the models here, with their input size.
MODELS = {'vits16r224': ('vit_s16', 224), 'swsl_resnet50': ('resnet50', 224)}
# The authors' normalisation of CIFAR-100.
CIFAR100_MEAN_STD = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
_METHODS = {
    ('AdaLoss', 'SGD'): 'adaloss',
    ('PlainLossb0', 'SGD'): 'sgd_constant',
    ('PlainLossSqrt', 'SGD'): 'sgd_decay_sqrt',
    ('CrossEntropy', 'Adagradnorm'): 'adagrad_norm',
    ('CrossEntropy', 'SGD'): 'sgd',
}
_SCHEDULERS = ('StepLR',)

_NUMBER = (int, float)
# Every key of the authors' configurations, with the type of its value where
# a run reads it and None where it is accepted and ignored (what steers
# PyTorch, logging, the authors' file layout): a key outside this layout is a
# typo, and is refused.
_LAYOUT = {
    'name': str,
    'n_gpu': None,
    'seed': int,
    'arch': {'type': str, 'args': {'num_classes': None}},
    'num_classes': None,
    'data_loader': {
        'type': None,
        'args': {
            'data_dir': None,
            'batch_size': int,
            'shuffle': None,
            'validation_split': None,
            'num_workers': None,
            'pin_memory': None,
        },
    },
    'optimizer': {
        'type': str,
        'args': {
            'lr': _NUMBER,
            'momentum': _NUMBER,
            'weight_decay': _NUMBER,
            'initial_accumulator_value': _NUMBER,
        },
    },
    'train_loss': {
        'type': str,
        'args': {'alpha': _NUMBER, 'b0': _NUMBER, 'cc': _NUMBER, 'beta': None},
    },
    'val_loss': None,
    'metrics': None,
    'lr_scheduler': {'type': str, 'args': {'step_size': int, 'gamma': _NUMBER}},
    'trainer': {
        'epochs': int,
        'alg': None,
        'save_dir': None,
        'save_period': None,
        'verbosity': None,
        'label_dir': None,
        'monitor': None,
        'early_stop': None,
        'tensorboard': None,
        'mlflow': None,
    },
}
_REQUIRED = (
    'arch.type',
    'data_loader.args.batch_size',
    'optimizer.type',
    'optimizer.args.lr',
    'train_loss.type',
    'trainer.epochs',
)


def _closest(word: str, choices) -> str | None:
  close = difflib.get_close_matches(str(word), list(choices), n=1)
  return close[0] if close else None


def _check_layout(
    value: Mapping[str, Any],
    layout: Mapping[str, Any],
    source: str,
    where: str = '',
) -> None:
  """Refuses a key outside `layout` or a value of another type."""
  prefix = f'{where}.' if where else ''
  for key, entry in value.items():
    name = prefix + key
    if key not in layout:
      close = _closest(key, layout)
      raise ValueError(
          f'{source}: unknown key {name!r}; '
          + (
              f'did you mean {prefix + close!r}?'
              if close
              else f'{where or "the top level"} takes {", ".join(layout)}.'
          )
      )
    expected = layout[key]
    if isinstance(expected, dict):
      if not isinstance(entry, dict):
        raise ValueError(
            f'{source}: {name!r} must be a JSON object, not {entry!r}.'
        )
      _check_layout(entry, expected, source, name)
    elif expected is not None and (
        isinstance(entry, bool) or not isinstance(entry, expected)
    ):
      kind = {str: 'a string', int: 'an integer'}.get(expected, 'a number')
      raise ValueError(f'{source}: {name!r} must be {kind}, not {entry!r}.')


def _unknown_type(source: str, name: str, value: str, known) -> ValueError:
  close = _closest(value, known)
  return ValueError(
      f'{source}: unknown {name} {value!r}; '
      + (
          f'did you mean {close!r}?'
          if close
          else f'the authors\' code has {", ".join(known)}.'
      )
  )


def find_authors_config(path: str) -> pathlib.Path:
  """`path`, or if there is no such file, the bundled file of its name.

  The authors' README runs ``-c ./configs/config_cifar100_adaloss.json``
  from their repository's root; here their four files are in
  :data:`CONFIG_DIR`.

  Args:
    path: the ``-c`` argument.

  Returns:
    The file to read.

  Raises:
    FileNotFoundError: if neither `path` nor a bundled file of its name
      exists; the message lists the bundled files.

  Example:
    >>> path = find_authors_config('./configs/config_cifar100_adaloss.json')
    >>> path == CONFIG_DIR / 'config_cifar100_adaloss.json'
    True
  """
  given = pathlib.Path(path)
  if given.exists():
    return given
  bundled = CONFIG_DIR / given.name
  if bundled.is_file():
    return bundled
  names = ', '.join(sorted(p.name for p in CONFIG_DIR.glob('*.json')))
  raise FileNotFoundError(
      f'No configuration file {path}, nor one of that name among the '
      f'bundled {names} (in {CONFIG_DIR}).'
  )


def read_authors_config(path: str | pathlib.Path) -> dict[str, Any]:
  """The entries of an authors' JSON configuration that a run depends on.

  Args:
    path: a JSON file in the layout of the authors' ``configs/``.

  Returns:
    Keyword arguments of :func:`get_config`.

  Raises:
    FileNotFoundError: if there is no such file.
    ValueError: for a file that is not JSON, or not in that layout: a key
      outside it (the message names the closest key of the layout), a value
      of the wrong type, a missing entry, or a method or schedule that the
      authors' code does not have.

  Example:
    >>> path = CONFIG_DIR / 'config_cifar100_adaloss.json'
    >>> values = read_authors_config(path)
    >>> values['method'], values['eta'], values['b0'], values['epochs']
    ('adaloss', 0.1, 1.0, 10)
  """
  try:
    text = pathlib.Path(path).read_text()
  except FileNotFoundError:
    raise FileNotFoundError(f'No configuration file {path}.') from None
  try:
    raw = json.loads(text)
  except json.JSONDecodeError as error:
    raise ValueError(
        f'{path} is not valid JSON: {error.msg} at line '
        f'{error.lineno}, column {error.colno}.'
    ) from None
  if not isinstance(raw, dict):
    raise ValueError(f'{path} must hold a JSON object, not {raw!r}.')
  _check_layout(raw, _LAYOUT, str(path))
  scheduler = raw.get('lr_scheduler')
  required = _REQUIRED + (
      ('lr_scheduler.type', 'lr_scheduler.args.step_size')
      if scheduler is not None
      else ()
  )
  for name in required:
    entry = raw
    for key in name.split('.'):
      entry = entry.get(key) if isinstance(entry, dict) else None
    if entry is None:
      raise ValueError(f'{path}: {name!r} is missing; a run needs it.')

  loss, optimizer = raw['train_loss'], raw['optimizer']
  loss_args, optimizer_args = loss.get('args', {}), optimizer['args']
  kind = (loss['type'], optimizer['type'])
  if kind not in _METHODS:
    loss_types, optimizer_types = (sorted(set(t)) for t in zip(*_METHODS))
    if kind[0] not in loss_types:
      raise _unknown_type(path, 'train_loss.type', kind[0], loss_types)
    if kind[1] not in optimizer_types:
      raise _unknown_type(path, 'optimizer.type', kind[1], optimizer_types)
    raise ValueError(
        f'{path}: no method has train_loss.type {kind[0]!r} with '
        f"optimizer.type {kind[1]!r}; the authors' methods are "
        + ', '.join(f'{loss} with {opt}' for loss, opt in _METHODS)
        + '.'
    )
  values = {
      'method': _METHODS[kind],
      'name': raw.get('name', 'adaloss'),
      'seed': raw.get('seed', 123),
      'model': raw['arch']['type'],
      'batch_size': raw['data_loader']['args']['batch_size'],
      'eta': optimizer_args['lr'],
      'momentum': optimizer_args.get('momentum', 0.0),
      'weight_decay': optimizer_args.get('weight_decay', 0.0),
      'b0': loss_args.get('b0', 1.0),
      'alpha': loss_args.get('alpha', 1.0),
      'cc': loss_args.get('cc', 0.0),
      'epochs': raw['trainer']['epochs'],
  }
  if 'initial_accumulator_value' in optimizer_args:
    values['adanormb0'] = optimizer_args['initial_accumulator_value']
  if scheduler is not None:
    if scheduler['type'] not in _SCHEDULERS:
      raise _unknown_type(
          path, 'lr_scheduler.type', scheduler['type'], _SCHEDULERS
      )
    values['step_size'] = scheduler['args']['step_size']
    values['gamma'] = scheduler['args'].get('gamma', 0.1)
  return values


def get_config(
    *,
    method: str = 'adaloss',
    eta: float = 0.1,
    b0: float = 1.0,
    alpha: float = 1.0,
    cc: float = 0.0,
    weight_decay: float = 1e-4,
    momentum: float = 0.0,
    adanormb0: float | None = None,
    batch_size: int = 128,
    epochs: int = 10,
    model: str = 'vits16r224',
    seed: int = 123,
    step_size: int = 100,
    gamma: float = 0.1,
    dataset: str = 'digits',
    data_dir: str | None = None,
    pretrained: str | None = None,
    name: str = 'adaloss',
    **overrides,
) -> Config:
  """The run of the authors' ``train.py`` with these values.

  CIFAR runs train on the fixed 45k images of ``train45k`` and evaluate on
  ``val5k`` and ``test``, as the paper does; digits runs on its own split.
  The schedule is the configurations' ``StepLR`` (per epoch).

  Args:
    method: ``'adaloss'``, ``'sgd_constant'``, ``'sgd_decay_sqrt'``,
      ``'adagrad_norm'`` or ``'sgd'``.
    eta: the learning rate :math:`\\eta` (``--eta``).
    b0: :math:`b_0`.
    alpha: AdaLoss's and SGD-DecaySqrt's :math:`\\alpha`.
    cc: AdaLoss's :math:`c`.
    weight_decay: L2 weight decay.
    momentum: SGD's momentum (``sgd`` only; the paper uses 0).
    adanormb0: AdaGrad-Norm's :math:`b_0` when it differs from ``b0`` (the
      older ``--adanormb0`` flag).
    batch_size: batch size.
    epochs: epochs.
    model: ``'vits16r224'``, ``'swsl_resnet50'`` or a key of
      ``experiments.models.MODELS``.
    seed: the random seed.
    step_size: the ``StepLR`` period, in epochs.
    gamma: the ``StepLR`` factor.
    dataset: ``'cifar100'``, ``'cifar10'`` or ``'digits'``.
    data_dir: the TFDS data directory.
    pretrained: the checkpoint to fine-tune (the paper fine-tunes timm's
      ImageNet models), e.g. ``'timm:vit_small_patch16_224.augreg_in21k'``.
    name: the experiment's name.
    **overrides: other :class:`Config` fields.

  Returns:
    The configuration.

  Example:
    >>> config = get_config(method='sgd_decay_sqrt', b0=10.0, model='resnet20')
    >>> config.optimizer, config.optimizer_kwargs['b0'], config.image_size
    ('sgd_decay_sqrt', 10.0, 32)
  """
  del name  # names the run's folder (see `run_name`), not the run
  if method == 'adaloss':
    kwargs = {'b0': b0, 'alpha': alpha, 'c': cc}
  elif method == 'sgd_constant':
    kwargs = {'b0': b0}
  elif method == 'sgd_decay_sqrt':
    kwargs = {'b0': b0, 'alpha': alpha}
  elif method == 'adagrad_norm':
    kwargs = {'b0': b0 if adanormb0 is None else adanormb0}
  elif method == 'sgd':
    kwargs = {'momentum': momentum or None}
  else:
    raise ValueError(
        f'Unknown AdaLoss method {method!r}; choose one of '
        f'{", ".join(_METHODS.values())}.'
    )
  if momentum and method != 'sgd':
    raise ValueError(f'{method} takes no momentum here (the paper uses 0).')
  model_name, image_size = MODELS.get(model, (model, 32))
  cifar = dataset != 'digits'
  return Config(**{
      'dataset': dataset,
      'train_split': 'train45k' if cifar else 'train',
      'eval_splits': ('val5k', 'test') if cifar else ('test',),
      'data_dir': data_dir,
      'image_size': image_size,
      'mean_std': CIFAR100_MEAN_STD if dataset == 'cifar100' else None,
      'model': model_name,
      'pretrained': pretrained,
      'optimizer': method,
      'learning_rate': eta,
      'optimizer_kwargs': {**kwargs, 'weight_decay': weight_decay},
      'schedule': 'step',
      'schedule_kwargs': {'step_epochs': step_size, 'gamma': gamma},
      'batch_size': batch_size,
      'num_epochs': epochs,
      'seed': seed,
      **overrides,
  })


def run_name(name: str, model: str, b0: float) -> str:
  """The authors' experiment name, without their timestamp.

  Example:
    >>> run_name('cifar100_adaloss', 'vits16r224', 1.0)
    'cifar100_adaloss_vits16r224_b0_1.0'
  """
  return f'{name}_{model}_b0_{b0}'
