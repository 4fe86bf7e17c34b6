"""ACME (ICASSP 2025 submission): the authors' CIFAR-100 script's flags.

The flags of ``icassp25/cifar100.acme.py`` (ignasi00/acme). As there, ACME,
Adam and ASAM are independent switches: with none of them the run is SGD with
momentum, and without ``acme`` the rate follows a per-epoch cosine down to
``lr / 100``, while with it the rate is ACME's own. The loss is label-smoothed
cross-entropy. ``b1`` is ``momentum``, Adam's ``b2`` is 0.999 and its bias
corrections are on with ``adam``, and ASAM perturbs every kernel and norm
scale, as the authors' code does.

Departures from the script: ``--depth`` defaults to 16 for WRN and 110 for
PyramidNet (the script's help text; its code uses 16 for both, which is not a
PyramidNet depth); ACME's internal cosine spans the run (the script fixes it to
50,000 steps, the length of its default run); CIFAR training images get
Cutout (16 pixels) but not AutoAugment, and digits neither.
"""

import inspect

from experiments.configs.default import Config

MODELS = ('WRN', 'Pyramid')
_SWITCHES = ('acme', 'adam', 'asam', 'nesterov')
# Flags named in a run's folder other than as "FLAG VALUE", or not at all:
# the network, the switches, the rate, and where the data is (the dataset
# names the folder above).
_NAMED_OTHERWISE = (
    'model',
    'depth',
    'width_alpha',
    'lr',
    'dataset',
    'data_dir',
)


def get_config(
    *,
    model: str = 'WRN',
    depth: int | None = None,
    width_alpha: int | None = None,
    bottleneck: bool = False,
    dropout: float = 0.0,
    epochs: int = 200,
    lr: float = 0.1,
    label_smoothing: float = 0.1,
    momentum: float = 0.9,
    rho: float = 1.0,
    eta: float = 0.0,
    weight_decay: float = 1e-4,
    acme: bool = False,
    asam: bool = False,
    adam: bool = False,
    nesterov: bool = False,
    batch_size: int = 200,
    dataset: str = 'digits',
    data_dir: str | None = None,
    seed: int = 42,
    **overrides,
) -> Config:
  """The run of the authors' script with these flags.

  Args:
    model: ``'WRN'`` (Wide ResNet) or ``'Pyramid'`` (PyramidNet).
    depth: the network's depth (None: 16 for WRN, 110 for PyramidNet).
    width_alpha: WRN's widening factor or PyramidNet's alpha (None: 8 for
      WRN, 40 for PyramidNet).
    bottleneck: PyramidNet's bottleneck units.
    dropout: WRN's dropout rate.
    epochs: epochs.
    lr: the initial rate.
    label_smoothing: of the cross-entropy.
    momentum: the first moment's decay.
    rho: ASAM's radius.
    eta: ASAM's offset.
    weight_decay: the decay (decoupled, by the step taken).
    acme: adapt the rate with ACME.
    asam: ASAM's adversarial gradient.
    adam: Adam's denominator and bias corrections.
    nesterov: Nesterov momentum.
    batch_size: batch size.
    dataset: ``'cifar100'``, ``'cifar10'`` or ``'digits'``.
    data_dir: the TFDS data directory.
    seed: the random seed (the script's is 42).
    **overrides: other :class:`Config` fields.

  Returns:
    The configuration.

  Example:
    >>> config = get_config(acme=True, adam=True, model='Pyramid', depth=20)
    >>> config.model_kwargs, config.schedule
    ({'depth': 20, 'alpha': 40, 'bottleneck': False}, 'constant')
  """
  if model == 'WRN':
    model_name = 'wrn16_8'
    model_kwargs = {
        'depth': depth or 16,
        'width': width_alpha or 8,
        'dropout_rate': dropout,
    }
  elif model == 'Pyramid':
    model_name = 'pyramidnet110_48'
    model_kwargs = {
        'depth': depth or 110,
        'alpha': width_alpha or 40,
        'bottleneck': bottleneck,
    }
  else:
    raise ValueError(
        f'Unknown model {model!r}; choose one of {", ".join(MODELS)}.'
    )
  return Config(**{
      'dataset': dataset,
      'data_dir': data_dir,
      'cutout': 0 if dataset == 'digits' else 16,
      'model': model_name,
      'model_kwargs': model_kwargs,
      'optimizer': 'acme',
      'learning_rate': lr,
      'optimizer_kwargs': {
          'b1': momentum,
          'b2': 0.999,
          'eps': 1e-8,
          'weight_decay': weight_decay,
          'adapt_learning_rate': acme,
          'adam': adam,
          'asam': asam,
          'rho': rho,
          'eta': eta,
          'nesterov': nesterov,
          'bias_correction': adam,
          'asam_mask': 'authors',
      },
      'schedule': 'constant' if acme else 'cosine',
      'schedule_kwargs': {} if acme else {'final_fraction': 0.01},
      'label_smoothing': label_smoothing,
      'batch_size': batch_size,
      'num_epochs': epochs,
      'seed': seed,
      **overrides,
  })


def run_name(**flags) -> str:
  """The folder name of the run of these :func:`get_config` flags.

  The network with its depth and width (or PyramidNet's alpha), the switches
  on (or ``sgd``), the rate, then every other flag whose value changes the
  run from the default's, so that runs of different settings never share a
  folder.

  Args:
    **flags: keyword arguments of :func:`get_config`.

  Returns:
    The name.

  Example:
    >>> run_name(acme=True, adam=True, lr=0.001, width_alpha=1, depth=10)
    'wrn10-1-acme-adam-lr0.001'
    >>> run_name(model='Pyramid', bottleneck=True, seed=0, rho=2.0)
    'pyramid110-40-sgd-lr0.1-bottleneck-rho2-seed0'
  """
  model_kwargs = get_config(**flags).model_kwargs
  width = model_kwargs.get('width', model_kwargs.get('alpha'))
  parts = [
      f'{flags.get("model", "WRN").lower()}{model_kwargs["depth"]}-{width}',
      *([s for s in _SWITCHES if flags.get(s)] or ['sgd']),
      f'lr{flags.get("lr", 0.1):g}',
  ]
  defaults = inspect.signature(get_config).parameters
  config = get_config(**flags)
  for name, value in sorted(flags.items()):
    if name in _NAMED_OTHERWISE + _SWITCHES or config == get_config(
        **{**flags, name: defaults[name].default}
    ):
      continue  # named already, or without effect (WRN's bottleneck, say)
    flag = name.replace('_', '-')
    parts.append(flag if value is True else f'{flag}{value:g}')
  return '-'.join(parts)
