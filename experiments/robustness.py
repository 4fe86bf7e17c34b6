"""``python -m experiments robustness``: which method survives a bad rate.

Trains the same model on the same data with each method at every initial
learning rate of a grid (1e-4 to 10, one point per half decade, by default)
and several seeds, then writes ``table.md`` (see
``experiments.robustness_report``) and ``robustness.png`` (the final metric
against the rate, one panel per family of methods) into its working
directory. The methods are this library's and their peers in optax and
``optax.contrib`` (``experiments.configs.robustness.METHODS``), each at its
documented defaults but for the rate.

Each method's grid (every rate and seed) is one compiled program per epoch
(``experiments.robustness_grid``), so that the default grid on digits runs
in minutes on a CPU. Ctrl-C stops after the epoch under way; ``--resume``
completes the grid (``experiments.robustness_run``). A working directory of
another grid is refused.

This module only parses the command line.
"""

import argparse
import math
import pathlib

from experiments.configs import robustness as robustness_config
from experiments.configs.robustness import METHODS, Grid

# The defaults that depend on the task: digits' epochs are short.
_TASK_DEFAULTS = {
    'digits': {'epochs': 5, 'batch_size': 64},
    'ptb': {'epochs': 1, 'batch_size': 20},
}


def _count(text: str) -> int:
  """An argument that must be an integer >= 1, refused in one line."""
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
  return value


def _rate(text: str) -> float:
  """An argument that must be a finite number > 0, refused in one line."""
  value = float(text)
  if not (math.isfinite(value) and value > 0):
    raise argparse.ArgumentTypeError(f'must be a finite number > 0, got {text}')
  return value


def add_parser(commands) -> None:
  """Adds the ``robustness`` command to the sub-parsers `commands`."""
  description = (
      "train one model with each of this library's methods and their peers "
      'in optax.contrib at every initial learning rate of a grid and several '
      'seeds (one compiled program per method); write table.md and '
      'robustness.png'
  )
  parser = commands.add_parser(
      'robustness',
      help=description,
      description=description,
      allow_abbrev=False,
  )
  parser.add_argument(
      '--task',
      choices=robustness_config.TASKS,
      default='digits',
      help=(
          'digits: a small convnet on scikit-learn digits (default); ptb: '
          'a small AWD-LSTM on the PTB text of --data'
      ),
  )
  parser.add_argument(
      '--methods',
      nargs='+',
      default=list(robustness_config.DEFAULT_METHODS),
      choices=list(METHODS),
      metavar='NAME',
      help=(
          f'of {", ".join(METHODS)} (default: all but acme_asam); adam, the '
          'reference of the time column, is always run'
      ),
  )
  parser.add_argument(
      '--rates',
      nargs='+',
      type=_rate,
      metavar='RATE',
      default=list(robustness_config.DEFAULT_RATES),
      help='initial learning rates (default: 1e-4 to 10, one per half decade)',
  )
  parser.add_argument(
      '--seeds', type=_count, default=3, help='seeds 0 to N-1 (default: 3)'
  )
  parser.add_argument(
      '--epochs',
      type=_count,
      default=None,
      help='default: 5 for digits, 1 for ptb',
  )
  parser.add_argument(
      '--batch-size',
      type=_count,
      default=None,
      help='default: 64 for digits, 20 (columns) for ptb',
  )
  parser.add_argument(
      '--max-steps-per-epoch',
      type=_count,
      default=None,
      help='shorten every epoch to this many steps',
  )
  lm = parser.add_argument_group('ptb')
  lm.add_argument(
      '--data',
      default=None,
      help='a folder with ptb.train.txt, ptb.valid.txt and ptb.test.txt',
  )
  lm.add_argument(
      '--data-dir',
      default=None,
      help='the TFDS data directory PTB is prepared in',
  )
  lm.add_argument('--bptt', type=_count, default=35)
  lm.add_argument('--emsize', type=_count, default=100)
  lm.add_argument('--nhid', type=_count, default=200)
  lm.add_argument('--nlayers', type=_count, default=2)
  parser.add_argument(
      '--workdir', default=None, help='default: runs/robustness/TASK'
  )
  parser.add_argument(
      '--resume', action='store_true', help='complete the grid in --workdir'
  )
  parser.add_argument(
      '--no-progress', action='store_true', help='no progress bar or lines'
  )
  parser.set_defaults(handler=main)


def grid_from_args(
    args: argparse.Namespace,
) -> tuple[Grid, list[str], pathlib.Path]:
  """The grid, the methods in table order and the folder of `args`.

  Example:
    >>> from experiments import cli
    >>> grid, methods, workdir = grid_from_args(cli.build_parser().parse_args(
    ...     ['robustness', '--methods', 'cocob', 'acme', '--seeds', '2']))
    >>> methods, grid.seeds, grid.epochs, workdir.as_posix()
    (['acme', 'adam', 'cocob'], (0, 1), 5, 'runs/robustness/digits')
  """
  if args.task != 'ptb' and (args.data or args.data_dir):
    raise ValueError('--data and --data-dir are for --task ptb.')
  defaults = _TASK_DEFAULTS[args.task]
  grid = Grid(
      task=args.task,
      rates=tuple(sorted(args.rates)),
      seeds=tuple(range(args.seeds)),
      epochs=defaults['epochs'] if args.epochs is None else args.epochs,
      batch_size=(
          defaults['batch_size'] if args.batch_size is None else args.batch_size
      ),
      max_steps_per_epoch=args.max_steps_per_epoch,
      bptt=args.bptt,
      embed_size=args.emsize,
      hidden_size=args.nhid,
      num_layers=args.nlayers,
  )
  wanted = set(args.methods) | {robustness_config.REFERENCE_METHOD}
  methods = [name for name in METHODS if name in wanted]
  workdir = pathlib.Path(
      args.workdir or pathlib.Path('runs', 'robustness', args.task)
  )
  return grid, methods, workdir


def main(args: argparse.Namespace) -> int:
  """Runs the grid of the parsed `args`, then writes the table and figure."""
  # Not at the top: it imports JAX, which parsing does not need.
  from experiments import robustness_run  # pylint: disable=g-import-not-at-top

  grid, methods, workdir = grid_from_args(args)
  robustness_run.run(
      grid,
      methods,
      workdir,
      data_dir=args.data_dir,
      text_dir=args.data,
      resume=args.resume,
      progress_bar=not args.no_progress,
  )
  return 0
