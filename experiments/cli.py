"""``python -m experiments``: the experiments' command line.

One command per paper, taking that paper's own flags as its authors' README
writes them, so their command lines can be pasted (``--dataset digits``, the
default, runs them on scikit-learn's digits without data to prepare):

* ``scale-free``: Adam-L2 / AdamW / AdamProx (zhenxun-zhuang/AdamW-Scale-free);
* ``adaloss``: AdaLoss and its baselines, ``-c CONFIG.json`` in the authors'
  layout (gail-yxie/adaloss); ``adaloss-table``: the paper's b0 table, every
  method at every b0 and seed (``experiments.adaloss_table``);
* ``acme``: ACME, Adam, ASAM, SGD (ignasi00/acme's CIFAR-100 script);
* ``adadiff-cifar``: AdaDiff, Adam, AdaBelief, SGD (deerOfHd/AdaDiff_v1);
* ``adadiff-ptb``: the same methods on an AWD-LSTM language model of Penn
  Treebank (the authors' ``nlp/main.py``; ``experiments.train_lm``);

and three of its own:

* ``prepare cifar10|cifar100``: the dataset, ahead of training (the training
  commands prepare it on first use; ``experiments.cifar``);
* ``compare``: every method of the library on digits, a table and a plot
  (``experiments.comparison``);
* ``plot RUN_FOLDER``: training curves of a run, the magnitude histograms of
  its ``--store-stats``, and the eta0 x weight-decay heatmap of a folder of
  runs (``experiments.plots``).

This module only parses command lines and hands them to those modules and to
the training loops.

Every training command also takes ``--workdir``, ``--resume``, ``--max-steps``,
``--max-steps-per-epoch``, ``--checkpoint-every`` and ``--no-progress``, and
all but ``adadiff-ptb`` ``--micro-batch`` (``experiments.train``). On
several hosts, run the same command on every host with ``--distributed`` (or
``EXPERIMENTS_DISTRIBUTED=1``) before the command's name, which calls
``jax.distributed.initialize()`` first: on Cloud TPU, Slurm and Open MPI
JAX finds the other processes; elsewhere give ``--coordinator-address``,
``--num-processes`` and ``--process-id``.

A command refused for its input (an unknown name, a configuration file with
a typo or that is not JSON, a missing or damaged dataset, a working directory
whose checkpoints it would overwrite or that holds a run of other settings, a
checkpoint that cannot be restored) prints one message and exits with status
2 before it writes anything.
"""

import argparse
from collections.abc import Sequence
import difflib
import importlib.util
import json
import logging
import math
import os
import pathlib
import sys
import threading
from typing import Any

from experiments import adaloss_table, robustness
from experiments.configs import acme as acme_config
from experiments.configs import adadiff_cifar as adadiff_config
from experiments.configs import adadiff_ptb as adadiff_ptb_config
from experiments.configs import adaloss as adaloss_config
from experiments.configs import compare as compare_config
from experiments.configs import scale_free as scale_free_config

_LOG = logging.getLogger('experiments')
_CIFAR_OR_DIGITS = ('digits', 'cifar10', 'cifar100')


# The ranges a hyperparameter flag allows (optax_adaptive's own checks, made
# before the model and the data are built): a predicate and its wording.
_RANGES = {
    'finite': (math.isfinite, 'a finite number'),
    'non-negative': (
        lambda v: math.isfinite(v) and v >= 0,
        'a finite number >= 0',
    ),
    'positive': (lambda v: math.isfinite(v) and v > 0, 'a finite number > 0'),
    'fraction': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'count': (lambda v: v >= 1, 'at least 1'),
    'count-or-zero': (lambda v: v >= 0, 'at least 0'),
}


class _InRange(argparse.Action):
  """Stores a flag's number if it is in range; else the sub-command's usage
  and ``--FLAG must be ...``, naming the flag as the user typed it."""

  def __init__(self, option_strings, dest, *, allowed: str, **kwargs):
    super().__init__(option_strings, dest, **kwargs)
    self.allowed = allowed

  def __call__(self, parser, namespace, values, option_string=None):
    accepts, wording = _RANGES[self.allowed]
    if not accepts(values):
      parser.error(f'{option_string} must be {wording}, got {values}.')
    setattr(namespace, self.dest, values)


def _number(parser, *flags: str, allowed: str, **kwargs) -> None:
  """A flag taking a float (an int for ``'count'`` ranges) in `allowed`."""
  number = int if allowed.startswith('count') else float
  parser.add_argument(
      *flags, type=number, action=_InRange, allowed=allowed, **kwargs
  )


def _parser(commands, name: str, help_text: str) -> argparse.ArgumentParser:
  return commands.add_parser(
      name, help=help_text, description=help_text, allow_abbrev=False
  )


def _add_run_flags(
    parser: argparse.ArgumentParser,
    *,
    resume_short: bool = False,
    micro_batch: bool = True,
):
  """The flags every training command takes (`micro_batch`: and
  ``--micro-batch``, which the image classifiers' loop has)."""
  group = parser.add_argument_group('run')
  group.add_argument(
      '--workdir',
      default=None,
      help='where the run writes (default: under runs/)',
  )
  group.add_argument(
      *(['-r', '--resume'] if resume_short else ['--resume']),
      action='store_true',
      help='continue from the latest checkpoint in --workdir',
  )
  _number(
      group,
      '--max-steps',
      default=None,
      help='stop after this many steps in all',
      allowed='count',
  )
  _number(
      group,
      '--max-steps-per-epoch',
      default=None,
      help='shorten every epoch to this many steps',
      allowed='count',
  )
  _number(
      group,
      '--checkpoint-every',
      default=0,
      help='also checkpoint every this many steps',
      allowed='count-or-zero',
  )
  group.add_argument(
      '--no-progress', action='store_true', help='no progress bar'
  )
  if micro_batch:
    group.add_argument(
        '--micro-batch',
        type=int,
        default=None,
        metavar='N',
        help=(
            'compute each step N examples at a time, summing the loss and '
            'gradient (the same step in less memory; BatchNorm normalises '
            'each micro-batch by its own statistics)'
        ),
    )


def _add_download_dir(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      '--download-dir',
      default=None,
      help=(
          'a folder with cifar-10-python.tar.gz or cifar-100-python.tar.gz '
          "(torchvision's download folder will do), read instead of "
          'downloading when CIFAR is not prepared yet'
      ),
  )


def _prepare_data(
    dataset: str, data_dir: str | None, download_dir: str | None
) -> None:
  # Not at the top: it imports Grain and JAX, which parsing does not need.
  from experiments import input_pipeline  # pylint: disable=g-import-not-at-top

  input_pipeline.prepare(dataset, data_dir, download_dir)


def _run_overrides(args) -> dict[str, Any]:
  overrides = {
      'resume': args.resume,
      'max_steps': args.max_steps,
      'max_steps_per_epoch': args.max_steps_per_epoch,
      'checkpoint_every_steps': args.checkpoint_every,
      'progress_bar': not args.no_progress,
  }
  if 'micro_batch' in vars(args):
    overrides['micro_batch'] = args.micro_batch
  return overrides


def _train(config, workdir: str, train_and_evaluate=None) -> int:
  """Runs `train_and_evaluate` (default: the image classifiers' loop)."""
  # Not at the top: these import JAX and Orbax, which only training needs.
  import jax  # pylint: disable=g-import-not-at-top

  from experiments import run_directory  # pylint: disable=g-import-not-at-top

  if train_and_evaluate is None:
    from experiments import train  # pylint: disable=g-import-not-at-top

    train_and_evaluate = train.train_and_evaluate
  if jax.process_count() > 1:
    run_directory.check_same_run_in_every_process(config, workdir)
  history = train_and_evaluate(config, workdir)
  if jax.process_index() == 0:  # the process that writes the metrics
    print(
        f'Wrote {pathlib.Path(workdir) / run_directory.METRICS_FILE}'
        + (f'; last record: {json.dumps(history[-1])}' if history else '.')
    )
  return 0


# scale-free ------------------------------------------------------------------


def _add_scale_free(commands):
  parser = _parser(
      commands,
      'scale-free',
      'Adam-L2, AdamW and AdamProx (Zhuang et al., TMLR 2022) '
      "with the flags of the authors' main.py",
  )
  parser.add_argument(
      '--optim-method',
      default='AdamProx',
      choices=list(scale_free_config.OPTIMIZERS),
  )
  _number(
      parser,
      '--eta0',
      default=0.001,
      help='initial step size',
      allowed='positive',
  )
  _number(parser, '--weight-decay', default=0.0005, allowed='non-negative')
  parser.add_argument(
      '--scheduler', default='None', choices=list(scale_free_config.SCHEDULERS)
  )
  _number(parser, '--loss-multiplier', default=1.0, allowed='positive')
  _number(parser, '--train-epochs', default=100, allowed='count')
  _number(parser, '--batchsize', default=128, allowed='count')
  parser.add_argument(
      '--validation',
      action='store_true',
      help='train on train45k, evaluate on val5k (CIFAR)',
  )
  _number(
      parser,
      '--eval-interval',
      default=10,
      help='evaluate every this many epochs',
      allowed='count',
  )
  parser.add_argument(
      '--store-stats',
      action='store_true',
      help='save parameters, gradients and updates',
  )
  _number(
      parser,
      '--store-stats-interval',
      default=1,
      help='every this many steps of an epoch',
      allowed='count',
  )
  parser.add_argument(
      '--dataset', default='digits', choices=list(scale_free_config.DATASETS)
  )
  parser.add_argument(
      '--dataroot', default=None, help='the TFDS data directory'
  )
  _add_download_dir(parser)
  parser.add_argument(
      '--model', default='ResNet20', choices=list(scale_free_config.MODELS)
  )
  parser.add_argument('--no-batch-norm', action='store_true')
  parser.add_argument(
      '--use-cuda',
      action='store_true',
      help='accepted and ignored: JAX picks the accelerator',
  )
  parser.add_argument(
      '--reproducible',
      action='store_true',
      help='accepted and ignored: runs are deterministic',
  )
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
      '--log-folder',
      default='runs/scale_free',
      help="runs go to LOG_FOLDER/<the authors' log name>",
  )
  _add_run_flags(parser)
  parser.set_defaults(handler=_scale_free)


def _scale_free(args) -> int:
  flags = dict(
      optim_method=args.optim_method,
      eta0=args.eta0,
      weight_decay=args.weight_decay,
      scheduler=args.scheduler,
      loss_multiplier=args.loss_multiplier,
      train_epochs=args.train_epochs,
      batchsize=args.batchsize,
      validation=args.validation,
      dataset=args.dataset,
      model=args.model,
      no_batch_norm=args.no_batch_norm,
  )
  config = scale_free_config.get_config(
      **flags,
      eval_interval=args.eval_interval,
      store_stats=args.store_stats,
      store_stats_interval=args.store_stats_interval,
      dataroot=args.dataroot,
      seed=args.seed,
      **_run_overrides(args),
  )
  workdir = args.workdir or os.path.join(
      args.log_folder, scale_free_config.run_name(**flags)
  )
  _prepare_data(config.dataset, config.data_dir, args.download_dir)
  return _train(config, workdir)


# adaloss ---------------------------------------------------------------------


def _add_adaloss(commands):
  parser = _parser(
      commands,
      'adaloss',
      'AdaLoss, AdaGrad-Norm, SGD-Constant, SGD-DecaySqrt (Wu et '
      "al., AAAI 2022) with the flags of the authors' train.py",
  )
  parser.add_argument(
      '-c',
      '--config',
      default=None,
      help=(
          "a JSON configuration in the authors' layout, "
          'e.g. experiments/configs/adaloss/'
          'config_cifar100_adaloss.json'
      ),
  )
  _number(
      parser,
      '--eta',
      '--lr',
      '--learning_rate',
      allowed='non-negative',
      dest='eta',
      default=None,
      help='learning rate',
  )
  _number(
      parser,
      '--mm',
      '--momentum',
      dest='momentum',
      default=None,
      allowed='fraction',
  )
  _number(
      parser,
      '--wd',
      '--weight_decay',
      dest='weight_decay',
      default=None,
      allowed='non-negative',
  )
  _number(
      parser,
      '--bs',
      '--batch_size',
      dest='batch_size',
      default=None,
      allowed='count',
  )
  _number(parser, '--b0', default=None, allowed='positive')
  _number(parser, '--alpha', default=None, allowed='non-negative')
  _number(parser, '--cc', default=None, allowed='finite')
  _number(
      parser,
      '--adanormb0',
      '--normb0',
      dest='adanormb0',
      default=None,
      help="AdaGrad-Norm's b0, if not --b0",
      allowed='positive',
  )
  parser.add_argument('--name', '--exp_name', dest='name', default=None)
  parser.add_argument('--seed', type=int, default=None)
  _number(
      parser, '--ep', '--epochs', dest='epochs', default=None, allowed='count'
  )
  parser.add_argument(
      '--model',
      default=None,
      help='vits16r224, swsl_resnet50, or a model of experiments.models',
  )
  parser.add_argument(
      '--pretrained',
      default=None,
      help='checkpoint to fine-tune: a .safetensors/.pth file or timm:NAME',
  )
  parser.add_argument('--dataset', default='digits', choices=_CIFAR_OR_DIGITS)
  parser.add_argument('--data-dir', default=None)
  _add_download_dir(parser)
  _add_run_flags(parser)
  parser.set_defaults(handler=_adaloss)


def _adaloss(args) -> int:
  values = {}
  if args.config:
    config_file = adaloss_config.find_authors_config(args.config)
    if config_file != pathlib.Path(args.config):
      print(f'No {args.config} here: using the bundled {config_file}.')
    values = adaloss_config.read_authors_config(config_file)
  for flag in (
      'eta',
      'momentum',
      'weight_decay',
      'batch_size',
      'b0',
      'alpha',
      'cc',
      'adanormb0',
      'name',
      'seed',
      'epochs',
      'model',
  ):
    if getattr(args, flag) is not None:
      values[flag] = getattr(args, flag)
  config = adaloss_config.get_config(
      **values,
      dataset=args.dataset,
      data_dir=args.data_dir,
      pretrained=args.pretrained,
      **_run_overrides(args),
  )
  workdir = args.workdir or os.path.join(
      'runs',
      'adaloss',
      args.dataset,
      adaloss_config.run_name(
          values.get('name', 'adaloss'),
          values.get('model', 'vits16r224'),
          values.get('b0', 1.0),
      ),
  )
  _prepare_data(config.dataset, config.data_dir, args.download_dir)
  return _train(config, workdir)


# acme ------------------------------------------------------------------------


def _add_acme(commands):
  parser = _parser(
      commands,
      'acme',
      'ACME, Adam, ASAM and SGD (ICASSP 2025 submission) with the '
      "flags of the authors' cifar100.acme.py",
  )
  parser.add_argument('--data-dir', default=None)
  _number(parser, '--batch-size', default=200, allowed='count')
  parser.add_argument('--model', default='WRN', choices=acme_config.MODELS)
  _number(
      parser,
      '--depth',
      default=None,
      help='default: 16 for WRN, 110 for Pyramid',
      allowed='count',
  )
  _number(
      parser,
      '--width-alpha',
      default=None,
      help='default: 8 for WRN, 40 for Pyramid',
      allowed='count',
  )
  parser.add_argument('--bottleneck', action='store_true')
  _number(parser, '--dropout', default=0.0, allowed='fraction')
  _number(parser, '--epochs', default=200, allowed='count')
  _number(parser, '--lr', default=0.1, allowed='positive')
  _number(parser, '--label-smoothing', default=0.1, allowed='fraction')
  _number(parser, '--momentum', default=0.9, allowed='fraction')
  parser.add_argument(
      '--threads',
      type=int,
      default=2,
      help='accepted and ignored: Grain reads ahead itself',
  )
  _number(parser, '--rho', default=1.0, allowed='non-negative')
  _number(parser, '--eta', default=0.0, allowed='non-negative')
  _number(parser, '--weight-decay', default=1e-4, allowed='non-negative')
  parser.add_argument('--acme', action='store_true')
  parser.add_argument('--asam', action='store_true')
  parser.add_argument('--adam', action='store_true')
  parser.add_argument('--nesterov', action='store_true')
  parser.add_argument('--seed', type=int, default=42)
  parser.add_argument('--dataset', default='digits', choices=_CIFAR_OR_DIGITS)
  _add_download_dir(parser)
  _add_run_flags(parser)
  parser.set_defaults(handler=_acme)


def _acme(args) -> int:
  flags = dict(
      model=args.model,
      depth=args.depth,
      width_alpha=args.width_alpha,
      bottleneck=args.bottleneck,
      dropout=args.dropout,
      epochs=args.epochs,
      lr=args.lr,
      label_smoothing=args.label_smoothing,
      momentum=args.momentum,
      rho=args.rho,
      eta=args.eta,
      weight_decay=args.weight_decay,
      acme=args.acme,
      asam=args.asam,
      adam=args.adam,
      nesterov=args.nesterov,
      batch_size=args.batch_size,
      seed=args.seed,
  )
  config = acme_config.get_config(
      **flags,
      dataset=args.dataset,
      data_dir=args.data_dir,
      **_run_overrides(args),
  )
  workdir = args.workdir or os.path.join(
      'runs', 'acme', args.dataset, acme_config.run_name(**flags)
  )
  _prepare_data(config.dataset, config.data_dir, args.download_dir)
  return _train(config, workdir)


# adadiff-cifar ---------------------------------------------------------------


def _add_adadiff_cifar(commands):
  parser = _parser(
      commands,
      'adadiff-cifar',
      'AdaDiff, Adam, AdaBelief and SGD on CIFAR (Huang et al., '
      "2021) with the flags of the authors' main.py",
  )
  _number(parser, '--total_epoch', default=200, allowed='count')
  _number(parser, '--decay_epoch', default=150, allowed='count')
  parser.add_argument(
      '--model', default='resnet34', help=', '.join(adadiff_config.MODELS)
  )
  parser.add_argument(
      '--optim', default='sgd', choices=list(adadiff_config.OPTIMIZERS)
  )
  parser.add_argument(
      '--run', type=int, default=0, help="the run's index, its seed"
  )
  _number(parser, '--lr', default=0.1, allowed='non-negative')
  _number(parser, '--lr-gamma', default=0.1, allowed='positive')
  _number(parser, '--eps', default=1e-8, allowed='non-negative')
  _number(parser, '--momentum', default=0.9, allowed='fraction')
  _number(parser, '--beta1', default=0.9, allowed='fraction')
  _number(parser, '--beta2', default=0.999, allowed='fraction')
  _number(parser, '--batchsize', default=128, allowed='count')
  _number(parser, '--weight_decay', default=5e-4, allowed='non-negative')
  parser.add_argument('--dataset', default='digits', choices=_CIFAR_OR_DIGITS)
  parser.add_argument('--data-dir', default=None)
  _add_download_dir(parser)
  _add_run_flags(parser, resume_short=True)
  parser.set_defaults(handler=_adadiff_cifar)


def _adadiff_cifar(args) -> int:
  config = adadiff_config.get_config(
      optim=args.optim,
      model=args.model,
      lr=args.lr,
      lr_gamma=args.lr_gamma,
      decay_epoch=args.decay_epoch,
      total_epoch=args.total_epoch,
      eps=args.eps,
      momentum=args.momentum,
      beta1=args.beta1,
      beta2=args.beta2,
      batchsize=args.batchsize,
      weight_decay=args.weight_decay,
      dataset=args.dataset,
      run=args.run,
      data_dir=args.data_dir,
      **_run_overrides(args),
  )
  workdir = args.workdir or os.path.join(
      'runs',
      'adadiff_cifar',
      args.dataset,
      f'{args.model}-{args.optim}-lr{args.lr:g}-run{args.run}',
  )
  _prepare_data(config.dataset, config.data_dir, args.download_dir)
  return _train(config, workdir)


# adadiff-ptb -----------------------------------------------------------------


def _add_adadiff_ptb(commands):
  parser = _parser(
      commands,
      'adadiff-ptb',
      'AdaDiff, Adam, AdaBelief and SGD on an AWD-LSTM language '
      'model of Penn Treebank (Huang et al., 2021) with the flags '
      "of the authors' nlp/main.py",
  )
  parser.add_argument(
      '--data',
      default=None,
      help=(
          'a directory with ptb.{train,valid,test}.txt (or '
          'train/valid/test.txt) to prepare the dataset from if '
          '--data-dir has none yet (default: download them)'
      ),
  )
  parser.add_argument(
      '--data-dir', default=None, help='the TFDS data directory'
  )
  parser.add_argument('--model', default='LSTM', choices=['LSTM'])
  _number(parser, '--emsize', default=400, allowed='count')
  _number(parser, '--nhid', default=1150, allowed='count')
  _number(
      parser,
      '--nlayers',
      '--nlayer',
      dest='nlayers',
      default=3,
      allowed='count',
  )
  _number(parser, '--lr', default=1e-3, allowed='non-negative')
  _number(parser, '--beta1', default=0.9, allowed='fraction')
  _number(parser, '--beta2', default=0.999, allowed='fraction')
  _number(parser, '--clip', default=None, allowed='positive')
  _number(
      parser,
      '--epochs',
      '--epoch',
      dest='epochs',
      default=8000,
      allowed='count',
  )
  _number(parser, '--batch_size', default=80, allowed='count')
  _number(parser, '--bptt', default=70, allowed='count')
  _number(parser, '--dropout', default=0.4, allowed='fraction')
  _number(parser, '--dropouth', default=0.3, allowed='fraction')
  _number(parser, '--dropouti', default=0.65, allowed='fraction')
  _number(parser, '--dropoute', default=0.1, allowed='fraction')
  _number(parser, '--wdrop', default=0.5, allowed='fraction')
  parser.add_argument('--seed', type=int, default=1111)
  _number(parser, '--alpha', default=2.0, allowed='non-negative')
  _number(parser, '--beta', default=1.0, allowed='non-negative')
  _number(parser, '--wdecay', default=1.2e-6, allowed='non-negative')
  parser.add_argument(
      '--optimizer', default='sgd', choices=list(adadiff_ptb_config.OPTIMIZERS)
  )
  _number(parser, '--eps', default=1e-8, allowed='non-negative')
  parser.add_argument(
      '--when',
      nargs='+',
      type=int,
      default=[-1],
      help='epochs after which the rate is divided by 10',
  )
  parser.add_argument(
      '--run', type=int, default=0, help="the run's index, in its folder's name"
  )
  parser.add_argument(
      '--eps_sqrt',
      type=float,
      default=None,
      help='accepted and ignored, as the script ignores it',
  )
  parser.add_argument(
      '--save',
      default=None,
      help='accepted and ignored: checkpoints go to --workdir',
  )
  parser.add_argument(
      '--log-interval',
      type=int,
      default=None,
      help='accepted and ignored: a record per epoch',
  )
  parser.add_argument(
      '--cuda',
      action='store_true',
      help='accepted and ignored: JAX picks the accelerator',
  )
  _number(
      parser,
      '--window-multiple',
      default=8,
      help=(
          'pad training windows to a multiple of this many '
          'steps (fewer compilations, more padding)'
      ),
      allowed='count',
  )
  _add_run_flags(parser, micro_batch=False)
  parser.set_defaults(handler=_adadiff_ptb)


def _adadiff_ptb(args) -> int:
  from experiments import train_lm  # pylint: disable=g-import-not-at-top

  config = adadiff_ptb_config.get_config(
      optimizer=args.optimizer,
      lr=args.lr,
      beta1=args.beta1,
      beta2=args.beta2,
      eps=args.eps,
      wdecay=args.wdecay,
      clip=args.clip,
      when=args.when,
      nlayers=args.nlayers,
      emsize=args.emsize,
      nhid=args.nhid,
      dropout=args.dropout,
      dropouth=args.dropouth,
      dropouti=args.dropouti,
      dropoute=args.dropoute,
      wdrop=args.wdrop,
      batch_size=args.batch_size,
      bptt=args.bptt,
      epochs=args.epochs,
      seed=args.seed,
      alpha=args.alpha,
      beta=args.beta,
      data_dir=args.data_dir,
      manual_dir=args.data,
      window_multiple=args.window_multiple,
      **_run_overrides(args),
  )
  workdir = args.workdir or os.path.join(
      'runs',
      'adadiff_ptb',
      f'nlayer-{args.nlayers}',
      f'{args.optimizer}-lr{args.lr:g}-clip{args.clip}-eps{args.eps:g}'
      f'-run{args.run}',
  )
  return _train(config, workdir, train_lm.train_and_evaluate)


# prepare ---------------------------------------------------------------------


def _add_prepare(commands):
  parser = _parser(
      commands,
      'prepare',
      'prepare CIFAR-10 or CIFAR-100 ahead of training (the training '
      'commands do it on first use): download the official archive, or '
      'read it from --download-dir, and write the TFDS dataset',
  )
  parser.add_argument('dataset', choices=_CIFAR_OR_DIGITS[1:])
  parser.add_argument(
      '--data-dir',
      default=None,
      help='the TFDS data directory (default: ~/tensorflow_datasets)',
  )
  _add_download_dir(parser)
  parser.add_argument(
      '--overwrite',
      action='store_true',
      help='prepare again over a dataset that cannot be read',
  )
  parser.set_defaults(handler=_prepare)


def _prepare(args) -> int:
  from experiments import cifar  # pylint: disable=g-import-not-at-top

  cifar.prepare(
      args.dataset,
      args.data_dir,
      manual_dir=args.download_dir,
      overwrite=args.overwrite,
  )
  builder = cifar.builder(args.dataset, args.data_dir)
  counts = ', '.join(
      f'{split} {info.num_examples}'
      for split, info in builder.info.splits.items()
  )
  print(f'{args.dataset} is prepared in {builder.data_dir} ({counts}).')
  return 0


# compare ---------------------------------------------------------------------


def _add_compare(commands):
  parser = _parser(
      commands,
      'compare',
      'train one small model on digits with every method of the '
      'library; write comparison.md and comparison.png',
  )
  parser.add_argument('--workdir', default='runs/compare')
  parser.add_argument('--model', default='resnet8')
  parser.add_argument(
      '--optimizers',
      nargs='+',
      default=list(compare_config.SETTINGS),
      choices=list(compare_config.SETTINGS),
      metavar='NAME',
      help=', '.join(compare_config.SETTINGS),
  )
  _number(parser, '--epochs', default=4, allowed='count')
  _number(parser, '--batch-size', default=64, allowed='count')
  _number(parser, '--max-steps-per-epoch', default=None, allowed='count')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
      '--resume',
      action='store_true',
      help='continue interrupted runs instead of starting over',
  )
  parser.add_argument('--no-progress', action='store_true')
  parser.set_defaults(handler=_compare)


def _compare(args) -> int:
  from experiments import comparison  # pylint: disable=g-import-not-at-top

  comparison.run_comparison(
      args.workdir,
      args.optimizers,
      model=args.model,
      epochs=args.epochs,
      batch_size=args.batch_size,
      max_steps_per_epoch=args.max_steps_per_epoch,
      seed=args.seed,
      resume=args.resume,
      progress_bar=not args.no_progress,
  )
  return 0


# plot ------------------------------------------------------------------------


def _add_plot(commands):
  parser = _parser(
      commands,
      'plot',
      'figures of a run folder (curves, --store-stats '
      'histograms) or of a folder of runs (curves, and the '
      'eta0 x weight-decay heatmap of the final test error)',
  )
  parser.add_argument('run_folder', metavar='RUN_FOLDER')
  parser.add_argument(
      '--out',
      default=None,
      help='where to write the figures (default: RUN_FOLDER)',
  )
  parser.add_argument(
      '--stats-step',
      type=int,
      default=None,
      help='the stored step to histogram (default: the last)',
  )
  parser.set_defaults(handler=_plot)


def _plot(args) -> int:
  from experiments import plots  # pylint: disable=g-import-not-at-top

  written = plots.plot_run_folder(args.run_folder, args.out, args.stats_step)
  print('Wrote ' + ', '.join(str(p) for p in written))
  return 0


# main ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
  """The parser of ``python -m experiments``."""
  parser = argparse.ArgumentParser(
      prog='python -m experiments',
      allow_abbrev=False,
      description='Reproduce the papers of optax_adaptive.',
  )
  hosts = parser.add_argument_group(
      'several hosts',
      'the same command on every host, these flags before '
      'COMMAND; on Cloud TPU, Slurm and Open MPI, --distributed alone',
  )
  hosts.add_argument(
      '--distributed',
      action='store_true',
      help=(
          'call jax.distributed.initialize() first (or set '
          'EXPERIMENTS_DISTRIBUTED=1)'
      ),
  )
  hosts.add_argument(
      '--coordinator-address',
      default=None,
      metavar='HOST:PORT',
      help=(
          "process 0's address and a free port, the same "
          'on every host (or JAX_COORDINATOR_ADDRESS)'
      ),
  )
  hosts.add_argument(
      '--num-processes',
      type=int,
      default=None,
      metavar='N',
      help='the number of processes',
  )
  hosts.add_argument(
      '--process-id',
      type=int,
      default=None,
      metavar='INDEX',
      help="this process's index, 0 to --num-processes - 1",
  )
  hosts.add_argument(
      '--initialization-timeout',
      type=int,
      default=300,
      metavar='SECONDS',
      help=(
          'give up, with status 2, if the processes have not all connected '
          'within this time (default: 300)'
      ),
  )
  commands = parser.add_subparsers(
      dest='command', required=True, metavar='COMMAND'
  )
  for add in (
      _add_scale_free,
      _add_adaloss,
      adaloss_table.add_parser,
      _add_acme,
      _add_adadiff_cifar,
      _add_adadiff_ptb,
      _add_prepare,
      _add_compare,
      robustness.add_parser,
      _add_plot,
  ):
    add(commands)
  for command_parser in commands.choices.values():
    # For `main` to refuse a misspelled flag with its command's usage.
    command_parser.set_defaults(command_parser=command_parser)
  return parser


def _refuse_unknown_flags(
    command_parser: argparse.ArgumentParser, unknown: list[str]
) -> None:
  """Exits with the command's usage, naming the first unknown flag and the
  command's closest one."""
  flags = [word.split('=')[0] for word in unknown if word.startswith('-')]
  if not flags:
    command_parser.error(f'unrecognized arguments: {" ".join(unknown)}')
  known = [
      option
      for action in command_parser._actions  # pylint: disable=protected-access
      for option in action.option_strings
  ]
  close = difflib.get_close_matches(flags[0], known, n=1)
  hint = f'; did you mean {close[0]}?' if close else ''
  command_parser.error(f'unrecognized argument {flags[0]}{hint}')


# JAX's own deadline comes this much later than the watchdog's, which thus
# always fires first.
_JAX_DEADLINE_MARGIN_SECONDS = 60


def _give_up_connecting(args) -> None:
  """Reports that the processes did not all connect, and exits with 2."""
  process = (
      f'process {args.process_id} of {args.num_processes}'
      if args.process_id is not None and args.num_processes is not None
      else 'this process'
  )
  print(
      f'error: {process} waited {args.initialization_timeout} s for every '
      'process to connect to the coordinator '
      f'{args.coordinator_address or "that JAX found"} and gave up: start '
      'the same command on every host, each with its own --process-id, '
      'or raise --initialization-timeout.',
      file=sys.stderr,
      flush=True,
  )
  # The main thread is blocked in JAX's C++ client, so only a direct exit
  # ends the process.
  os._exit(2)  # pylint: disable=protected-access


def _initialize_distributed(args) -> None:
  """Connects the processes, or exits with 2 after one message.

  When JAX's own initialization timeout passes, its C++ client aborts the
  process with a stack trace; a watchdog that fires first says instead what
  happened.
  """
  import jax  # pylint: disable=g-import-not-at-top

  watchdog = threading.Timer(
      args.initialization_timeout, _give_up_connecting, args=(args,)
  )
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=(
            args.initialization_timeout + _JAX_DEADLINE_MARGIN_SECONDS
        ),
    )
  except ValueError as error:
    raise ValueError(
        f'jax.distributed.initialize(): {error} Outside Cloud TPU, Slurm '
        'and Open MPI, give --coordinator-address, '
        '--num-processes and --process-id.'
    ) from error
  finally:
    watchdog.cancel()


# The commands that train the CIFAR networks, whose steps YNNPACK's fusions
# made 1.3-1.5x faster on a CPU (BENCHMARKS.md). Not `compare`: its ResNet-8
# was measured no faster, and its documented table is XLA's default's.
_CONVOLUTIONAL_COMMANDS = ('scale-free', 'acme', 'adadiff-cifar')
_YNNPACK_FLAGS = '--xla_cpu_experimental_ynn_fusion_type=eltwise,reduce'
# JAX's plugins for accelerators: with none installed, JAX runs on the CPU.
_ACCELERATOR_PLUGINS = (
    'jax_cuda12_plugin',
    'jax_cuda13_plugin',
    'jax_rocm60_plugin',
    'jax_rocm7_plugin',
    'libtpu',
)


def use_ynnpack_on_cpu(command: str) -> None:
  """Sets XLA_FLAGS to YNNPACK's fusions for a convolutional network on a
  CPU, if the user set none; before JAX starts its backend, which reads it."""
  on_cpu = os.environ.get('JAX_PLATFORMS', '').lower() == 'cpu' or not any(
      importlib.util.find_spec(plugin) for plugin in _ACCELERATOR_PLUGINS
  )
  if (
      command in _CONVOLUTIONAL_COMMANDS
      and on_cpu
      and 'XLA_FLAGS' not in (os.environ)
  ):
    os.environ['XLA_FLAGS'] = _YNNPACK_FLAGS
    print(
        f'On a CPU: XLA_FLAGS={_YNNPACK_FLAGS} (faster convolutional '
        'networks; set XLA_FLAGS to choose otherwise).',
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
  """Runs a command; returns the exit status.

  Args:
    argv: the command line after ``python -m experiments`` (default:
      ``sys.argv[1:]``).

  Returns:
    0 on success; 2 for a refused input (argparse's usage errors included),
    after one message on stderr: a training run refused for its input has
    written nothing; 130 for a run stopped by Ctrl-C, after one line.
  """
  args, unknown = build_parser().parse_known_args(argv)
  if unknown:
    _refuse_unknown_flags(args.command_parser, unknown)
  use_ynnpack_on_cpu(args.command)
  logging.basicConfig(format='%(message)s')
  _LOG.setLevel(logging.INFO)
  # TFDS and Orbax log through absl; their warnings are not for our users
  # (an unprepared dataset's folder, say, which our own message explains).
  logging.getLogger('absl').setLevel(logging.ERROR)
  try:
    if (
        args.distributed
        or os.environ.get('EXPERIMENTS_DISTRIBUTED') == '1'
        or args.coordinator_address
        or args.num_processes is not None
        or args.process_id is not None
    ):
      _initialize_distributed(args)
    return args.handler(args)
  except (ValueError, FileNotFoundError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  except KeyboardInterrupt as interrupt:
    # A training loop stopped by Ctrl-C between two steps says where, after
    # its checkpoint; stopped anywhere else, the last checkpoint stands.
    print(str(interrupt) or 'interrupted', file=sys.stderr)
    return 130
