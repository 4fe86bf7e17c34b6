"""AdaDiff (Huang et al., 2021) on Penn Treebank: the authors' LSTM script.

The flags of ``nlp/main.py`` (deerOfHd/AdaDiff_v1, AdaBelief's copy of
AWD-LSTM's ``main.py``), with its defaults. Every method takes PyTorch's
``weight_decay`` (``--wdecay``) as an L2 term in the gradient, after the
gradient is clipped (``--clip``); the rate is divided by 10 after each epoch
of ``--when``.

The script's ``ada2`` is AdaDiff (its second moment averages
:math:`g_t^2 + (g_t - g_{t-1})^2` and accumulates ``eps``, as
``optax_adaptive.adadiff``); its other optimizers (``ada1``, ``ada3``,
``ada4``, ``eadam``, ``radam``) are not provided here.
"""

from collections.abc import Sequence

from experiments.configs.adadiff_cifar import adam_type_kwargs
from experiments.configs.language_model import Config

# The script's `--optimizer` names and the methods of experiments.optimizers.
OPTIMIZERS = {
    'adadiff': 'adadiff',
    'ada2': 'adadiff',
    'adam': 'adam',
    'adabelief': 'adabelief',
    'sgd': 'sgd',
}


def get_config(
    *,
    optimizer: str = 'sgd',
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    wdecay: float = 1.2e-6,
    clip: float | None = None,
    when: Sequence[int] = (-1,),
    nlayers: int = 3,
    emsize: int = 400,
    nhid: int = 1150,
    dropout: float = 0.4,
    dropouth: float = 0.3,
    dropouti: float = 0.65,
    dropoute: float = 0.1,
    wdrop: float = 0.5,
    batch_size: int = 80,
    bptt: int = 70,
    epochs: int = 8000,
    seed: int = 1111,
    alpha: float = 2.0,
    beta: float = 1.0,
    **overrides,
) -> Config:
  """The run of the authors' script with these flags.

  Args:
    optimizer: ``'adadiff'`` (or the script's name for it, ``'ada2'``),
      ``'adam'``, ``'adabelief'`` or ``'sgd'`` (plain SGD, as the script's
      ``torch.optim.SGD`` without momentum).
    lr: the initial rate.
    beta1: the first moment's decay (adaptive methods).
    beta2: the second moment's decay (adaptive methods).
    eps: the adaptive methods' epsilon (AdaBelief's inside and outside the
      square root, as its PyTorch code adds it).
    wdecay: L2 weight decay.
    clip: gradient clipping by global norm (None or 0: none).
    when: epochs after which the rate is divided by 10.
    nlayers: LSTM layers.
    emsize: embedding size.
    nhid: hidden size.
    dropout: output dropout.
    dropouth: dropout between LSTM layers.
    dropouti: input (embedding) dropout.
    dropoute: word dropout on the embedding matrix.
    wdrop: DropConnect on the hidden-to-hidden matrices.
    batch_size: training batch size (columns of the token stream).
    bptt: base window length.
    epochs: epochs.
    seed: the random seed.
    alpha: AR weight.
    beta: TAR weight.
    **overrides: other :class:`Config` fields.

  Returns:
    The configuration.

  Example:
    >>> config = get_config(optimizer='adabelief', lr=0.01, eps=1e-12)
    >>> config.optimizer, config.optimizer_kwargs['eps_root']
    ('adabelief', 1e-12)
  """
  if optimizer not in OPTIMIZERS:
    raise ValueError(
        f'Unknown optimizer {optimizer!r}; choose one of '
        f'{", ".join(OPTIMIZERS)}.'
    )
  method = OPTIMIZERS[optimizer]
  kwargs = (
      {} if method == 'sgd' else adam_type_kwargs(method, beta1, beta2, eps)
  )
  return Config(**{
      'embed_size': emsize,
      'hidden_size': nhid,
      'num_layers': nlayers,
      'dropout': dropout,
      'dropouth': dropouth,
      'dropouti': dropouti,
      'dropoute': dropoute,
      'wdrop': wdrop,
      'optimizer': method,
      'learning_rate': lr,
      'optimizer_kwargs': {**kwargs, 'weight_decay': wdecay},
      'clip': clip,
      'lr_decay_epochs': tuple(when),
      'alpha': alpha,
      'beta': beta,
      'batch_size': batch_size,
      'bptt': bptt,
      'num_epochs': epochs,
      'seed': seed,
      **overrides,
  })
