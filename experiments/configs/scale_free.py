"""Zhuang, Liu, Cutkosky and Orabona (TMLR 2022): Adam-L2, AdamW, AdamProx.

The flags of the authors' ``src/main.py`` (zhenxun-zhuang/AdamW-Scale-free),
with their names and defaults, except ``dataset``: ``'digits'`` by default, for
a first run without data to prepare.
"""

from experiments.configs.default import Config

OPTIMIZERS = {'AdamL2': 'adam_l2', 'AdamW': 'adamw', 'AdamProx': 'adam_prox'}
MODELS = {
    'ResNet20': 'resnet20',
    'ResNet44': 'resnet44',
    'ResNet56': 'resnet56',
    'ResNet110': 'resnet110',
    'ResNet218': 'resnet218',
    'DenseNetBC100': 'densenet_bc100',
}
DATASETS = {'CIFAR10': 'cifar10', 'CIFAR100': 'cifar100', 'digits': 'digits'}
SCHEDULERS = {'None': 'constant', 'Cosine': 'cosine'}


def run_name(
    *,
    optim_method: str,
    eta0: float,
    weight_decay: float,
    scheduler: str,
    loss_multiplier: float,
    train_epochs: int,
    batchsize: int,
    validation: bool,
    dataset: str,
    model: str,
    no_batch_norm: bool,
) -> str:
  """The authors' log name of a run, which names its folder here.

  Example:
    >>> run_name(optim_method='AdamW', eta0=0.001, weight_decay=5e-05,
    ...          scheduler='None', loss_multiplier=1, train_epochs=300,
    ...          batchsize=128, validation=False, dataset='CIFAR10',
    ...          model='ResNet20', no_batch_norm=True)
    'CIFAR10_ResNet20_NoBN_AdamW_Eta0_0.001_WD_5e-05_Scheduler_None_Loss_Mul_1_Epoch_300_BatchSize_128_Test'
  """
  return (
      f'{dataset}_{model}_{"NoBN" if no_batch_norm else "BN"}_'
      f'{optim_method}_Eta0_{eta0:g}_WD_{weight_decay:g}_'
      f'Scheduler_{scheduler}_Loss_Mul_{loss_multiplier:g}_'
      f'Epoch_{train_epochs}_BatchSize_{batchsize}_'
      f'{"Validation" if validation else "Test"}'
  )


def get_config(
    *,
    optim_method: str = 'AdamProx',
    eta0: float = 0.001,
    weight_decay: float = 0.0005,
    scheduler: str = 'None',
    loss_multiplier: float = 1.0,
    train_epochs: int = 100,
    batchsize: int = 128,
    validation: bool = False,
    eval_interval: int = 10,
    store_stats: bool = False,
    store_stats_interval: int = 1,
    dataset: str = 'digits',
    dataroot: str | None = None,
    model: str = 'ResNet20',
    no_batch_norm: bool = False,
    seed: int = 0,
    **overrides,
) -> Config:
  """The run of the authors' ``main.py`` with these flags.

  The authors evaluate the training set as well as the test (or validation)
  set at every evaluation; so does this run (``train_eval_*`` metrics, on the
  training images without augmentation). ``validation`` trains on the fixed
  45k images of ``train45k`` and evaluates on ``val5k`` (CIFAR only).

  Args:
    optim_method: ``'AdamL2'``, ``'AdamW'`` or ``'AdamProx'``.
    eta0: the initial step size.
    weight_decay: :math:`\\lambda`.
    scheduler: ``'None'`` or ``'Cosine'`` (to zero over the run, per epoch).
    loss_multiplier: multiplies the training loss.
    train_epochs: epochs.
    batchsize: batch size.
    validation: hold out a validation set.
    eval_interval: evaluate every this many epochs.
    store_stats: save parameters, gradients and updates.
    store_stats_interval: every this many steps of an epoch.
    dataset: ``'CIFAR10'``, ``'CIFAR100'`` or ``'digits'``.
    dataroot: the TFDS data directory.
    model: ``'ResNet20'`` ... ``'ResNet218'``, ``'DenseNetBC100'``.
    no_batch_norm: remove every BatchNorm.
    seed: the random seed.
    **overrides: other :class:`Config` fields.

  Returns:
    The configuration.

  Example:
    >>> config = get_config(optim_method='AdamW', model='ResNet56',
    ...                     no_batch_norm=True)
    >>> config.optimizer, config.model, config.model_kwargs
    ('adamw', 'resnet56', {'batch_norm': False})
  """
  _check('optim_method', optim_method, OPTIMIZERS)
  _check('model', model, MODELS)
  _check('dataset', dataset, DATASETS)
  _check('scheduler', scheduler, SCHEDULERS)
  return Config(**{
      'dataset': DATASETS[dataset],
      'train_split': 'train45k' if validation else 'train',
      'eval_splits': ('train45k', 'val5k') if validation else ('train', 'test'),
      'data_dir': dataroot,
      'model': MODELS[model],
      'model_kwargs': {'batch_norm': not no_batch_norm},
      'optimizer': OPTIMIZERS[optim_method],
      'learning_rate': eta0,
      'optimizer_kwargs': {'weight_decay': weight_decay},
      'schedule': SCHEDULERS[scheduler],
      'batch_size': batchsize,
      'num_epochs': train_epochs,
      'eval_every_epochs': eval_interval,
      'loss_multiplier': loss_multiplier,
      'store_stats': store_stats,
      'store_stats_interval': store_stats_interval,
      'seed': seed,
      **overrides,
  })


def _check(flag: str, value: str, choices) -> None:
  if value not in choices:
    raise ValueError(
        f'Unknown {flag} {value!r}; choose one of {", ".join(choices)}.'
    )
