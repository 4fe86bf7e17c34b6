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

from experiments.configs.default import Config

MODELS = ('WRN', 'Pyramid')


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
          'acme': acme,
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
