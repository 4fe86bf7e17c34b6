"""The configuration of a language-model run: AWD-LSTM on Penn Treebank.

A :class:`Config` is a frozen dataclass, written as ``config.json`` beside the
run's metrics, like the image classifiers' ``default.Config``. Its defaults
are those of the AdaDiff authors' ``nlp/main.py`` (deerOfHd/AdaDiff_v1, which
is AdaBelief's copy of AWD-LSTM's ``main.py``); ``adadiff_ptb`` builds one
from that script's flags.
"""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a language-model run depends on.

  Attributes:
    data_dir: where TFDS keeps the prepared ``ptb`` dataset (None: its
      default).
    manual_dir: a directory with ``ptb.{train,valid,test}.txt`` (or
      AWD-LSTM's ``{train,valid,test}.txt``) to prepare the dataset from, if
      it is not prepared in ``data_dir`` yet (None: download Mikolov's
      archive).
    embed_size: the embedding size, and the last LSTM's (tied weights).
    hidden_size: the other LSTMs' hidden size.
    num_layers: number of LSTM layers.
    dropout: locked dropout on the last LSTM's output.
    dropouth: locked dropout between LSTM layers.
    dropouti: locked dropout on the embeddings.
    dropoute: embedding (word) dropout.
    wdrop: DropConnect on the hidden-to-hidden matrices.
    optimizer: a key of ``experiments.optimizers.METHODS``.
    learning_rate: the base learning rate.
    optimizer_kwargs: the method's other arguments, ``weight_decay`` (the L2
      term of PyTorch's ``weight_decay``) included.
    clip: the gradients' global norm is clipped to this (None or 0: no
      clipping).
    lr_decay_epochs: after each of these epochs (counted from 1) the rate is
      divided by 10 (AWD-LSTM's ``--when``).
    alpha: weight of activation regularisation (AR).
    beta: weight of temporal activation regularisation (TAR).
    batch_size: columns of the training data; validation uses
      ``lm_pipeline.EVAL_BATCH_SIZE`` (10), test ``TEST_BATCH_SIZE`` (1).
    bptt: the base window length.
    num_epochs: epochs to train.
    window_multiple: training windows are padded to a multiple of this many
      steps, so the jitted step compiles for a few lengths only.
    seed: initialisation, dropout masks and window lengths.
    max_steps: stop after this many steps in all (None: no limit).
    max_steps_per_epoch: end every epoch after this many windows (None: a
      whole pass over the data), for quick runs and tests.
    checkpoint_every_steps: also checkpoint every this many steps (0: only
      at the end of every epoch and of the run).
    progress_bar: show a progress bar per epoch (only on a terminal).
    resume: continue from the latest checkpoint in the working directory;
      without it, a directory that has checkpoints is refused.
  """

  data_dir: str | None = None
  manual_dir: str | None = None
  embed_size: int = 400
  hidden_size: int = 1150
  num_layers: int = 3
  dropout: float = 0.4
  dropouth: float = 0.3
  dropouti: float = 0.65
  dropoute: float = 0.1
  wdrop: float = 0.5
  optimizer: str = 'sgd'
  learning_rate: float = 1e-3
  optimizer_kwargs: dict[str, Any] = dataclasses.field(
      default_factory=lambda: {'weight_decay': 1.2e-6}
  )
  clip: float | None = None
  lr_decay_epochs: tuple[int, ...] = ()
  alpha: float = 2.0
  beta: float = 1.0
  batch_size: int = 80
  bptt: int = 70
  num_epochs: int = 8000
  window_multiple: int = 8
  seed: int = 1111
  max_steps: int | None = None
  max_steps_per_epoch: int | None = None
  checkpoint_every_steps: int = 0
  progress_bar: bool = True
  resume: bool = False

  def to_json(self) -> dict[str, Any]:
    """The fields as JSON values (tuples become lists)."""
    return dataclasses.asdict(self)


def get_config(**overrides) -> Config:
  """The authors' defaults: a 3-layer AWD-LSTM trained with SGD.

  Args:
    **overrides: fields of :class:`Config` to change.

  Returns:
    The configuration.

  Example:
    >>> get_config(num_layers=2).num_layers
    2
  """
  return Config(**overrides)
