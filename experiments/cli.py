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

and two of its own:

* ``compare``: every method of the library on digits, a table and a plot
  (``experiments.comparison``);
* ``plot RUN_FOLDER``: training curves of a run, the magnitude histograms of
  its ``--store-stats``, and the eta0 x weight-decay heatmap of a folder of
  runs (``experiments.plots``).

This module only parses command lines and hands them to those modules and to
the training loops.

Every training command also takes ``--workdir``, ``--resume``, ``--max-steps``,
``--max-steps-per-epoch``, ``--checkpoint-every`` and ``--no-progress``. On
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
import json
import logging
import os
import pathlib
import sys
import threading
from typing import Any

from experiments import adaloss_table
from experiments.configs import acme as acme_config
from experiments.configs import adadiff_cifar as adadiff_config
from experiments.configs import adadiff_ptb as adadiff_ptb_config
from experiments.configs import adaloss as adaloss_config
from experiments.configs import compare as compare_config
from experiments.configs import scale_free as scale_free_config

_LOG = logging.getLogger('experiments')
_CIFAR_OR_DIGITS = ('digits', 'cifar10', 'cifar100')


def _parser(commands, name: str, help_text: str) -> argparse.ArgumentParser:
  return commands.add_parser(
      name, help=help_text, description=help_text, allow_abbrev=False
  )


def _add_run_flags(
    parser: argparse.ArgumentParser, *, resume_short: bool = False
):
  """The flags every training command takes."""
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
  group.add_argument(
      '--max-steps',
      type=int,
      default=None,
      help='stop after this many steps in all',
  )
  group.add_argument(
      '--max-steps-per-epoch',
      type=int,
      default=None,
      help='shorten every epoch to this many steps',
  )
  group.add_argument(
      '--checkpoint-every',
      type=int,
      default=0,
      help='also checkpoint every this many steps',
  )
  group.add_argument(
      '--no-progress', action='store_true', help='no progress bar'
  )


def _run_overrides(args) -> dict[str, Any]:
  return {
      'resume': args.resume,
      'max_steps': args.max_steps,
      'max_steps_per_epoch': args.max_steps_per_epoch,
      'checkpoint_every_steps': args.checkpoint_every,
      'progress_bar': not args.no_progress,
  }


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
  parser.add_argument(
      '--eta0', type=float, default=0.001, help='initial step size'
  )
  parser.add_argument('--weight-decay', type=float, default=0.0005)
  parser.add_argument(
      '--scheduler', default='None', choices=list(scale_free_config.SCHEDULERS)
  )
  parser.add_argument('--loss-multiplier', type=float, default=1.0)
  parser.add_argument('--train-epochs', type=int, default=100)
  parser.add_argument('--batchsize', type=int, default=128)
  parser.add_argument(
      '--validation',
      action='store_true',
      help='train on train45k, evaluate on val5k (CIFAR)',
  )
  parser.add_argument(
      '--eval-interval',
      type=int,
      default=10,
      help='evaluate every this many epochs',
  )
  parser.add_argument(
      '--store-stats',
      action='store_true',
      help='save parameters, gradients and updates',
  )
  parser.add_argument(
      '--store-stats-interval',
      type=int,
      default=1,
      help='every this many steps of an epoch',
  )
  parser.add_argument(
      '--dataset', default='digits', choices=list(scale_free_config.DATASETS)
  )
  parser.add_argument(
      '--dataroot', default=None, help='the TFDS data directory'
  )
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
  parser.add_argument(
      '--eta',
      '--lr',
      '--learning_rate',
      dest='eta',
      type=float,
      default=None,
      help='learning rate',
  )
  parser.add_argument(
      '--mm', '--momentum', dest='momentum', type=float, default=None
  )
  parser.add_argument(
      '--wd', '--weight_decay', dest='weight_decay', type=float, default=None
  )
  parser.add_argument(
      '--bs', '--batch_size', dest='batch_size', type=int, default=None
  )
  parser.add_argument('--b0', type=float, default=None)
  parser.add_argument('--alpha', type=float, default=None)
  parser.add_argument('--cc', type=float, default=None)
  parser.add_argument(
      '--adanormb0',
      '--normb0',
      dest='adanormb0',
      type=float,
      default=None,
      help="AdaGrad-Norm's b0, if not --b0",
  )
  parser.add_argument('--name', '--exp_name', dest='name', default=None)
  parser.add_argument('--seed', type=int, default=None)
  parser.add_argument('--ep', '--epochs', dest='epochs', type=int, default=None)
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
  _add_run_flags(parser)
  parser.set_defaults(handler=_adaloss)


def _adaloss(args) -> int:
  values = (
      adaloss_config.read_authors_config(args.config) if args.config else {}
  )
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
  parser.add_argument('--batch-size', type=int, default=200)
  parser.add_argument('--model', default='WRN', choices=acme_config.MODELS)
  parser.add_argument(
      '--depth',
      type=int,
      default=None,
      help='default: 16 for WRN, 110 for Pyramid',
  )
  parser.add_argument(
      '--width-alpha',
      type=int,
      default=None,
      help='default: 8 for WRN, 40 for Pyramid',
  )
  parser.add_argument('--bottleneck', action='store_true')
  parser.add_argument('--dropout', type=float, default=0.0)
  parser.add_argument('--epochs', type=int, default=200)
  parser.add_argument('--lr', type=float, default=0.1)
  parser.add_argument('--label-smoothing', type=float, default=0.1)
  parser.add_argument('--momentum', type=float, default=0.9)
  parser.add_argument(
      '--threads',
      type=int,
      default=2,
      help='accepted and ignored: Grain reads ahead itself',
  )
  parser.add_argument('--rho', type=float, default=1.0)
  parser.add_argument('--eta', type=float, default=0.0)
  parser.add_argument('--weight-decay', type=float, default=1e-4)
  parser.add_argument('--acme', action='store_true')
  parser.add_argument('--asam', action='store_true')
  parser.add_argument('--adam', action='store_true')
  parser.add_argument('--nesterov', action='store_true')
  parser.add_argument('--seed', type=int, default=42)
  parser.add_argument('--dataset', default='digits', choices=_CIFAR_OR_DIGITS)
  _add_run_flags(parser)
  parser.set_defaults(handler=_acme)


def _acme(args) -> int:
  config = acme_config.get_config(
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
      dataset=args.dataset,
      data_dir=args.data_dir,
      seed=args.seed,
      **_run_overrides(args),
  )
  switches = [
      s for s in ('acme', 'adam', 'asam', 'nesterov') if getattr(args, s)
  ] or ['sgd']
  workdir = args.workdir or os.path.join(
      'runs',
      'acme',
      args.dataset,
      f'{config.model}-{config.model_kwargs["depth"]}-{"-".join(switches)}'
      f'-lr{args.lr:g}',
  )
  return _train(config, workdir)


# adadiff-cifar ---------------------------------------------------------------


def _add_adadiff_cifar(commands):
  parser = _parser(
      commands,
      'adadiff-cifar',
      'AdaDiff, Adam, AdaBelief and SGD on CIFAR (Huang et al., '
      "2021) with the flags of the authors' main.py",
  )
  parser.add_argument('--total_epoch', type=int, default=200)
  parser.add_argument('--decay_epoch', type=int, default=150)
  parser.add_argument(
      '--model', default='resnet34', help=', '.join(adadiff_config.MODELS)
  )
  parser.add_argument(
      '--optim', default='sgd', choices=list(adadiff_config.OPTIMIZERS)
  )
  parser.add_argument(
      '--run', type=int, default=0, help="the run's index, its seed"
  )
  parser.add_argument('--lr', type=float, default=0.1)
  parser.add_argument('--lr-gamma', type=float, default=0.1)
  parser.add_argument('--eps', type=float, default=1e-8)
  parser.add_argument('--momentum', type=float, default=0.9)
  parser.add_argument('--beta1', type=float, default=0.9)
  parser.add_argument('--beta2', type=float, default=0.999)
  parser.add_argument('--batchsize', type=int, default=128)
  parser.add_argument('--weight_decay', type=float, default=5e-4)
  parser.add_argument('--dataset', default='digits', choices=_CIFAR_OR_DIGITS)
  parser.add_argument('--data-dir', default=None)
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
  parser.add_argument('--emsize', type=int, default=400)
  parser.add_argument('--nhid', type=int, default=1150)
  parser.add_argument(
      '--nlayers', '--nlayer', dest='nlayers', type=int, default=3
  )
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--beta1', type=float, default=0.9)
  parser.add_argument('--beta2', type=float, default=0.999)
  parser.add_argument('--clip', type=float, default=None)
  parser.add_argument(
      '--epochs', '--epoch', dest='epochs', type=int, default=8000
  )
  parser.add_argument('--batch_size', type=int, default=80)
  parser.add_argument('--bptt', type=int, default=70)
  parser.add_argument('--dropout', type=float, default=0.4)
  parser.add_argument('--dropouth', type=float, default=0.3)
  parser.add_argument('--dropouti', type=float, default=0.65)
  parser.add_argument('--dropoute', type=float, default=0.1)
  parser.add_argument('--wdrop', type=float, default=0.5)
  parser.add_argument('--seed', type=int, default=1111)
  parser.add_argument('--alpha', type=float, default=2.0)
  parser.add_argument('--beta', type=float, default=1.0)
  parser.add_argument('--wdecay', type=float, default=1.2e-6)
  parser.add_argument(
      '--optimizer', default='sgd', choices=list(adadiff_ptb_config.OPTIMIZERS)
  )
  parser.add_argument('--eps', type=float, default=1e-8)
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
  parser.add_argument(
      '--window-multiple',
      type=int,
      default=8,
      help=(
          'pad training windows to a multiple of this many '
          'steps (fewer compilations, more padding)'
      ),
  )
  _add_run_flags(parser)
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
  parser.add_argument('--epochs', type=int, default=4)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--max-steps-per-epoch', type=int, default=None)
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
      _add_compare,
      _add_plot,
  ):
    add(commands)
  return parser


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


def main(argv: Sequence[str] | None = None) -> int:
  """Runs a command; returns the exit status.

  Args:
    argv: the command line after ``python -m experiments`` (default:
      ``sys.argv[1:]``).

  Returns:
    0 on success; 2 for a refused input (argparse's usage errors included),
    after one message on stderr: a training run refused for its input has
    written nothing.
  """
  args = build_parser().parse_args(argv)
  logging.basicConfig(format='%(message)s')
  _LOG.setLevel(logging.INFO)
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
