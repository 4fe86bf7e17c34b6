"""AdaDiff (Huang et al., 2021) on CIFAR: the authors' classification script.

The flags of ``cifar-classification/main.py`` (deerOfHd/AdaDiff_v1, in the
layout of AdaBelief's CIFAR script). Every method takes PyTorch's
``weight_decay`` as an L2 term in the gradient; the rate is multiplied by
``lr_gamma`` every ``decay_epoch`` epochs.
"""

from experiments.configs.default import Config

# The script's `--optim` names and the methods here: AdaDiff, and the
# baselines from optax.
OPTIMIZERS = {
    'adadiff': 'adadiff',
    'adam': 'adam',
    'adabelief': 'adabelief',
    'sgd': 'sgd',
}
# The authors' normalisation, for CIFAR-10 and CIFAR-100 alike.
CIFAR_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
MODELS = ('resnet34', 'resnet18', 'densenet121', 'vgg11', 'vgg16')


def adam_type_kwargs(
    method: str, beta1: float, beta2: float, eps: float
) -> dict[str, float]:
  """optax's arguments of an Adam-type `method` from the authors' flags.

  Their AdaBelief adds ``eps`` inside the square root as well as outside it.

  Example:
    >>> adam_type_kwargs('adabelief', 0.9, 0.999, 1e-16)['eps_root']
    1e-16
  """
  kwargs = {'b1': beta1, 'b2': beta2, 'eps': eps}
  return {**kwargs, 'eps_root': eps} if method == 'adabelief' else kwargs


def get_config(
    *,
    optim: str = 'sgd',
    model: str = 'resnet34',
    lr: float = 0.1,
    lr_gamma: float = 0.1,
    decay_epoch: int = 150,
    total_epoch: int = 200,
    eps: float = 1e-8,
    momentum: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.999,
    batchsize: int = 128,
    weight_decay: float = 5e-4,
    dataset: str = 'digits',
    run: int = 0,
    **overrides,
) -> Config:
  """The run of the authors' script with these flags.

  Args:
    optim: ``'adadiff'``, ``'adam'``, ``'adabelief'`` or ``'sgd'``.
    model: ``'resnet34'``, ``'resnet18'``, ``'densenet121'``, ``'vgg11'``,
      ``'vgg16'``, or another key of ``experiments.models.MODELS``.
    lr: the initial rate.
    lr_gamma: the rate's decay factor.
    decay_epoch: its period, in epochs.
    total_epoch: epochs.
    eps: the adaptive methods' epsilon.
    momentum: SGD's momentum.
    beta1: the first moment's decay.
    beta2: the second moment's decay.
    batchsize: batch size.
    weight_decay: L2 weight decay.
    dataset: ``'cifar10'``, ``'cifar100'`` or ``'digits'``.
    run: the run's index, its seed.
    **overrides: other :class:`Config` fields.

  Returns:
    The configuration.

  Example:
    >>> config = get_config(optim='adadiff', lr=1e-3)
    >>> config.optimizer, config.optimizer_kwargs
    ('adadiff', {'b1': 0.9, 'b2': 0.999, 'eps': 1e-08, 'weight_decay': 0.0005})
  """
  if optim not in OPTIMIZERS:
    raise ValueError(
        f'Unknown optimizer {optim!r}; choose one of {", ".join(OPTIMIZERS)}.'
    )
  method = OPTIMIZERS[optim]
  if method == 'sgd':
    kwargs = {'momentum': momentum or None}
  else:
    kwargs = adam_type_kwargs(method, beta1, beta2, eps)
  return Config(**{
      'dataset': dataset,
      'mean_std': None if dataset == 'digits' else CIFAR_MEAN_STD,
      'model': model,
      'optimizer': method,
      'learning_rate': lr,
      'optimizer_kwargs': {**kwargs, 'weight_decay': weight_decay},
      'schedule': 'step',
      'schedule_kwargs': {'step_epochs': decay_epoch, 'gamma': lr_gamma},
      'batch_size': batchsize,
      'num_epochs': total_epoch,
      'seed': run,
      **overrides,
  })
