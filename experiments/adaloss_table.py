"""``python -m experiments adaloss-table``: the AdaLoss paper's b0 table.

Wu, Xie, Du and Ward (AAAI 2022) fine-tune ImageNet-pretrained ViT-S/16 and
ResNet-50 (timm's ``swsl_resnet50``) on CIFAR-100 with four step sizes that
start at :math:`\\eta / b_0`, for :math:`b_0` in {0.01, 0.1, 1, 10, 100}, and
report the mean and standard deviation over three runs of the test accuracy:

* AdaLoss: :math:`\\eta / b_t`, :math:`b_{t+1}^2 = b_t^2 + \\alpha |L_t - c|`;
* AdaGrad-Norm: :math:`\\eta / b_t` per output unit, :math:`b_t^2` summing
  the squared gradient norms from :math:`b_0^2`;
* SGD-Constant: :math:`\\eta / b_0`, which diverges for small :math:`b_0`
  (the paper's "N/A");
* SGD-DecaySqrt: :math:`\\eta / \\sqrt{b_0^2 + \\alpha t}`.

Every method runs with the command of the authors' README (gail-yxie/adaloss):
``--eta 0.1 --epochs 10 --weight_decay 1e-4`` with ``--b0`` set, the JSON
configurations' :math:`\\alpha = 1`, :math:`c = 0`, no momentum and a
``StepLR`` of 100 epochs (so a constant :math:`\\eta` over the 10), on the
fixed 45k/5k split of CIFAR-100's training set at 224 pixels; the batch size is
64, that of the README's results (its JSON files hold 128). The model is the
pretrained one with a new 100-class head.

:func:`run_grid` trains every (method, :math:`b_0`, seed) through
:func:`experiments.train.train_and_evaluate`, each in its own folder
``WORKDIR/METHOD/b0_B0/seed_SEED``. It can be interrupted and run again: a
finished run is read back without touching its folder, an unfinished one
resumes from its latest checkpoint, and a folder holding a run of other
settings stops the grid. :func:`write_table` and :func:`plot_table` then write
``table.md`` (the paper's layout: a row per method, a column per
:math:`b_0`, the final test accuracy's mean +- std over seeds, "N/A" where a
run diverged) and ``table.png`` (accuracy against :math:`b_0`).
"""

import argparse
from collections.abc import Mapping, Sequence
import dataclasses
import json
import math
import pathlib
import time
from typing import Any

import numpy as np

from experiments.configs import adaloss as adaloss_config
from experiments.configs import default
from experiments.configs.default import Config

# The methods of the table, in the paper's order, with the paper's names.
METHODS = {
    'adaloss': 'AdaLoss',
    'adagrad_norm': 'AdaGrad-Norm',
    'sgd_constant': 'SGD_Constant',
    'sgd_decay_sqrt': 'SGD_DecaySqrt',
}
PAPER_B0S = (0.01, 0.1, 1.0, 10.0, 100.0)
# The paper's two models and the timm weights they were fine-tuned from: what
# the authors' `create_model(..., pretrained=True)` loads for
# `vit_small_patch16_224` and `swsl_resnet50`.
PAPER_WEIGHTS = {
    'vit_s16': 'timm:vit_small_patch16_224.augreg_in21k_ft_in1k',
    'resnet50': 'timm:resnet50.fb_swsl_ig1b_ft_in1k',
}
# The authors' model names, which select the 224-pixel input in
# `configs.adaloss`, by the names of `experiments.models`.
_AUTHORS_MODELS = {
    model: authors for authors, (model, _) in adaloss_config.MODELS.items()
}

# Final test accuracy of each seed's run of a cell, None where it diverged.
Results = dict[tuple[str, float], list[float | None]]


def default_pretrained(model: str, dataset: str) -> str | None:
  """The weights the paper fine-tunes `model` from, on CIFAR; else None.

  Example:
    >>> default_pretrained('resnet50', 'cifar100')
    'timm:resnet50.fb_swsl_ig1b_ft_in1k'
    >>> print(default_pretrained('vit_s16', 'digits'))
    None
  """
  if dataset == 'digits':
    return None
  return PAPER_WEIGHTS.get(adaloss_config.MODELS.get(model, (model,))[0])


@dataclasses.dataclass(frozen=True)
class Grid:
  """The table's runs and the settings they share.

  Attributes:
    model: ``'vit_s16'``, ``'resnet50'`` (or the authors' ``'vits16r224'``,
      ``'swsl_resnet50'``), or another key of ``experiments.models.MODELS``.
    dataset: ``'cifar100'``, ``'cifar10'`` or ``'digits'``.
    pretrained: the checkpoint every run starts from (see
      ``experiments.pretrained``), or None for a random initialisation.
    b0s: the columns, :math:`b_0`.
    methods: the rows, keys of :data:`METHODS`.
    seeds: the seeds every cell runs with.
    eta: :math:`\\eta`, every method's base rate.
    epochs: epochs of every run.
    batch_size: batch size.
    weight_decay: L2 weight decay.
    data_dir: the TFDS data directory.
    max_steps_per_epoch: shorten every epoch to this many steps (tests).
    checkpoint_every_steps: also checkpoint every this many steps.
    progress_bar: show a progress bar per epoch.
  """

  model: str = 'vit_s16'
  dataset: str = 'cifar100'
  pretrained: str | None = PAPER_WEIGHTS['vit_s16']
  b0s: tuple[float, ...] = PAPER_B0S
  methods: tuple[str, ...] = tuple(METHODS)
  seeds: tuple[int, ...] = (0, 1, 2)
  eta: float = 0.1
  epochs: int = 10
  batch_size: int = 64
  weight_decay: float = 1e-4
  data_dir: str | None = None
  max_steps_per_epoch: int | None = None
  checkpoint_every_steps: int = 0
  progress_bar: bool = True

  def __post_init__(self):
    unknown = [m for m in self.methods if m not in METHODS]
    if unknown:
      raise ValueError(
          f'Unknown methods {unknown}; the table has {", ".join(METHODS)}.'
      )
    if not all(math.isfinite(b0) and b0 > 0 for b0 in self.b0s):
      raise ValueError(f'Every b0 must be positive and finite, got {self.b0s}.')
    for name in ('b0s', 'methods', 'seeds'):
      values = getattr(self, name)
      if not values or len(set(values)) != len(values):
        raise ValueError(
            f'`{name}` must be distinct and not empty, got {values}.'
        )

  def config(self, method: str, b0: float, seed: int) -> Config:
    """The run of `method` at `b0` with `seed`, as the authors' train.py.

    Example:
      >>> config = Grid(model='mlp', dataset='digits', pretrained=None).config(
      ...     'sgd_decay_sqrt', 10.0, seed=1)
      >>> config.optimizer, config.learning_rate, config.num_epochs
      ('sgd_decay_sqrt', 0.1, 10)
      >>> config.optimizer_kwargs
      {'b0': 10.0, 'alpha': 1.0, 'weight_decay': 0.0001}
    """
    return adaloss_config.get_config(
        method=method,
        b0=b0,
        eta=self.eta,
        alpha=1.0,
        cc=0.0,
        weight_decay=self.weight_decay,
        batch_size=self.batch_size,
        epochs=self.epochs,
        model=_AUTHORS_MODELS.get(self.model, self.model),
        seed=seed,
        dataset=self.dataset,
        data_dir=self.data_dir,
        pretrained=self.pretrained,
        max_steps_per_epoch=self.max_steps_per_epoch,
        checkpoint_every_steps=self.checkpoint_every_steps,
        progress_bar=self.progress_bar,
        resume=True,
    )

  def cells(self):
    """``(method, b0, seed)`` in running order: a cell's seeds one after the
    other, so that they share its compiled step."""
    for method in self.methods:
      for b0 in self.b0s:
        for seed in self.seeds:
          yield method, b0, seed


def run_dir(
    workdir: str | pathlib.Path, method: str, b0: float, seed: int
) -> pathlib.Path:
  """The folder of one run of the grid.

  Example:
    >>> run_dir('runs/table', 'adaloss', 0.01, 2).as_posix()
    'runs/table/adaloss/b0_0.01/seed_2'
  """
  return pathlib.Path(workdir) / method / f'b0_{b0:g}' / f'seed_{seed}'


def finished_history(
    folder: pathlib.Path, config: Config
) -> list[dict[str, Any]] | None:
  """The records of the finished run of `config` in `folder`, or None.

  Args:
    folder: a run's folder.
    config: the run the folder should hold.

  Returns:
    The metrics records if the folder holds that run and it trained every
    epoch; None if it holds nothing yet or an unfinished run of it.

  Raises:
    ValueError: if the folder holds a run of other settings.
  """
  # Not at the top: run_directory imports JAX and Orbax, which `python -m
  # experiments` loads only for the command that needs them.
  from experiments import run_directory  # pylint: disable=g-import-not-at-top

  config_path = folder / run_directory.CONFIG_FILE
  if not config_path.exists():
    return None
  changed = default.changed_settings(
      json.loads(config_path.read_text()), config
  )
  if changed:
    raise ValueError(
        f'{folder} holds a run with other settings ({", ".join(changed)}): '
        'choose another --workdir, or delete it to run it again.'
    )
  history = run_directory.read_metrics(folder)
  if history and history[-1]['epoch'] >= config.num_epochs:
    return history
  return None


def final_accuracy(history: Sequence[Mapping[str, Any]]) -> float | None:
  """The last record's test accuracy; None if the run diverged.

  A run has diverged when its last record has a loss that is NaN or infinite:
  its parameters are then no longer finite, and the accuracy of their
  predictions means nothing.

  Example:
    >>> final_accuracy([{'train_loss': 0.3, 'test_loss': 0.4,
    ...                  'test_accuracy': 0.9}])
    0.9
    >>> print(final_accuracy([{'train_loss': float('nan'),
    ...                        'test_accuracy': 0.1}]))
    None
  """
  last = history[-1]
  if any(
      key.endswith('_loss') and not math.isfinite(value)
      for key, value in last.items()
  ):
    return None
  return last['test_accuracy']


def run_grid(grid: Grid, workdir: str | pathlib.Path) -> Results:
  """Trains every run of `grid` not finished yet; returns every final accuracy.

  Args:
    grid: the table's runs.
    workdir: the folder of the grid; one folder per run under it (see
      :func:`run_dir`).

  Returns:
    ``{(method, b0): [final test accuracy of each seed, None if diverged]}``.

  Raises:
    ValueError: if a run's folder holds a run of other settings, or for a
      configuration that :func:`experiments.train.train_and_evaluate` refuses.
  """
  from experiments import train  # pylint: disable=g-import-not-at-top

  results: Results = {}
  for method, b0, seed in grid.cells():
    config = grid.config(method, b0, seed)
    folder = run_dir(workdir, method, b0, seed)
    history = finished_history(folder, config)
    if history is None:
      history = train.train_and_evaluate(config, str(folder))
      note = f'({history[-1]["seconds"]:.0f} s)'
    else:
      note = '(finished earlier)'
    accuracy = final_accuracy(history)
    results.setdefault((method, b0), []).append(accuracy)
    outcome = (
        'diverged' if accuracy is None else f'test accuracy {accuracy:.4f}'
    )
    print(f'{method:14s} b0 {b0:<6g} seed {seed}: {outcome} {note}', flush=True)
  return results


def cell_summary(
    accuracies: Sequence[float | None],
) -> tuple[float, float] | None:
  """Mean and sample standard deviation in percent; None if a seed diverged.

  The deviation of a single seed is 0.

  Example:
    >>> mean, std = cell_summary([0.90, 0.92])
    >>> round(mean, 6), round(std, 4)
    (91.0, 1.4142)
    >>> print(cell_summary([0.9, None]))
    None
  """
  if any(a is None for a in accuracies):
    return None
  percent = 100 * np.asarray(accuracies, np.float64)
  std = float(np.std(percent, ddof=1)) if len(percent) > 1 else 0.0
  return float(np.mean(percent)), std


def format_cell(accuracies: Sequence[float | None]) -> str:
  """A cell of the table: ``mean ± std`` in percent, or ``N/A``.

  Example:
    >>> format_cell([0.9065, 0.9074, 0.9056]), format_cell([0.9, None])
    ('90.65 ± 0.09', 'N/A')
  """
  summary = cell_summary(accuracies)
  if summary is None:
    return 'N/A'
  mean, std = summary
  return f'{mean:.2f} ± {std:.2f}' if len(accuracies) > 1 else f'{mean:.2f}'


def _title(grid: Grid) -> str:
  return f'AdaLoss b0 robustness: {grid.model} on {grid.dataset}'


def _describe(grid: Grid) -> str:
  """The settings the table was measured with, in a sentence."""
  start = (
      f'fine-tuned from `{grid.pretrained}`'
      if grid.pretrained
      else 'from a random initialisation'
  )
  epochs = f'{grid.epochs} epochs'
  if grid.max_steps_per_epoch:
    epochs += f' of at most {grid.max_steps_per_epoch} steps'
  if len(grid.seeds) > 1:
    runs = 'mean ± sample standard deviation over seeds ' + ', '.join(
        map(str, grid.seeds)
    )
  else:
    runs = f'one run per cell, seed {grid.seeds[0]}'
  return (
      f'Final test accuracy (%) after {epochs}, {runs}; {start}; '
      f'eta {grid.eta:g}, batch size {grid.batch_size}, weight decay '
      f'{grid.weight_decay:g}, alpha 1, c 0, no momentum.'
  )


def write_table(path: str | pathlib.Path, grid: Grid, results: Results) -> str:
  """Writes the table in the paper's layout to `path`; returns its text.

  Args:
    path: the markdown file to write.
    grid: the table's runs.
    results: :func:`run_grid`'s output.

  Returns:
    The markdown: a row per method, a column per b0, ``mean ± std`` or
    ``N/A``, and a list of the runs that diverged.
  """
  lines = [
      f'# {_title(grid)}',
      '',
      _describe(grid),
      '',
      '| method | ' + ' | '.join(f'b0 = {b0:g}' for b0 in grid.b0s) + ' |',
      '| --- |' + ' ---: |' * len(grid.b0s),
  ]
  for method in grid.methods:
    cells = [format_cell(results[method, b0]) for b0 in grid.b0s]
    lines.append(f'| {METHODS[method]} | ' + ' | '.join(cells) + ' |')
  diverged = [
      f'{METHODS[method]} at b0 = {b0:g} (seed '
      + ', '.join(
          str(seed)
          for seed, accuracy in zip(grid.seeds, results[method, b0])
          if accuracy is None
      )
      + ')'
      for method in grid.methods
      for b0 in grid.b0s
      if None in results[method, b0]
  ]
  if diverged:
    lines += [
        '',
        'N/A: the loss became NaN or infinite: ' + '; '.join(diverged) + '.',
    ]
  text = '\n'.join(lines) + '\n'
  pathlib.Path(path).write_text(text)
  return text


def plot_table(path: str | pathlib.Path, grid: Grid, results: Results) -> None:
  """Writes the table as a plot: accuracy against b0, one line per method.

  b0 is on a log axis; error bars are the standard deviation over seeds; a
  cell marked N/A has no point, and its b0 is listed in the legend.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  figure, axis = plt.subplots(figsize=(6.4, 4.4))
  for method in grid.methods:
    points = [(b0, cell_summary(results[method, b0])) for b0 in grid.b0s]
    kept = [(b0, summary) for b0, summary in points if summary is not None]
    missing = [f'{b0:g}' for b0, summary in points if summary is None]
    label = METHODS[method] + (
        f' (N/A at b0 = {", ".join(missing)})' if missing else ''
    )
    axis.errorbar(
        [b0 for b0, _ in kept],
        [mean for _, (mean, _) in kept],
        yerr=[std for _, (_, std) in kept],
        marker='o',
        capsize=3,
        label=label,
    )
  axis.set_xscale('log')
  axis.set_xticks(grid.b0s, [f'{b0:g}' for b0 in grid.b0s])
  axis.set(xlabel='$b_0$', ylabel='final test accuracy (%)')
  seeds = f'{len(grid.seeds)} seed' + ('s' if len(grid.seeds) > 1 else '')
  axis.set_title(f'{_title(grid)}, {seeds}', fontsize='small')
  axis.legend(fontsize='small')
  axis.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


# The command -----------------------------------------------------------------


def add_parser(commands) -> None:
  """Adds the ``adaloss-table`` command to the sub-parsers `commands`."""
  description = (
      "the AdaLoss paper's b0 table (Wu et al., AAAI 2022): train "
      'every method at every b0 and seed (resuming where a '
      'previous call stopped), then write table.md and table.png'
  )
  parser = commands.add_parser(
      'adaloss-table',
      help=description,
      description=description,
      allow_abbrev=False,
  )
  parser.add_argument(
      '--model',
      default='vit_s16',
      help=(
          'vit_s16, resnet50, or a model of experiments.models (mlp for digits)'
      ),
  )
  parser.add_argument(
      '--b0',
      dest='b0s',
      nargs='+',
      type=float,
      default=list(PAPER_B0S),
      metavar='B0',
  )
  parser.add_argument(
      '--optimizers',
      nargs='+',
      default=list(METHODS),
      choices=list(METHODS),
      metavar='NAME',
      help=', '.join(METHODS),
  )
  parser.add_argument(
      '--seeds', type=int, default=3, help='runs per cell, with seeds 0, 1, ...'
  )
  parser.add_argument(
      '--dataset', default='cifar100', choices=('cifar100', 'cifar10', 'digits')
  )
  parser.add_argument(
      '--data-dir', default=None, help='the TFDS data directory'
  )
  parser.add_argument(
      '--pretrained',
      default=None,
      help=(
          'checkpoint to fine-tune: a .safetensors/.pth file, '
          "timm:NAME, or none (default on CIFAR: the paper's, "
      )
      + ', '.join(f'{v} for {k}' for k, v in PAPER_WEIGHTS.items())
      + ')',
  )
  parser.add_argument('--eta', type=float, default=0.1)
  parser.add_argument('--epochs', type=int, default=10)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--weight-decay', type=float, default=1e-4)
  parser.add_argument(
      '--workdir',
      default=None,
      help='default: runs/adaloss_table/DATASET/MODEL',
  )
  parser.add_argument(
      '--max-steps-per-epoch',
      type=int,
      default=None,
      help='shorten every epoch to this many steps',
  )
  parser.add_argument(
      '--checkpoint-every',
      type=int,
      default=0,
      help='also checkpoint every this many steps',
  )
  parser.add_argument(
      '--no-progress', action='store_true', help='no progress bar'
  )
  parser.add_argument(
      '--download-dir',
      default=None,
      help=(
          'a folder with the official CIFAR archive, read instead of '
          'downloading when the dataset is not prepared yet'
      ),
  )
  parser.set_defaults(handler=main)


def grid_from_args(args: argparse.Namespace) -> tuple[Grid, pathlib.Path]:
  """The grid and the folder of the parsed command line `args`.

  Example:
    >>> from experiments import cli
    >>> grid, workdir = grid_from_args(cli.build_parser().parse_args(
    ...     ['adaloss-table', '--model', 'resnet50']))
    >>> grid.pretrained
    'timm:resnet50.fb_swsl_ig1b_ft_in1k'
    >>> grid.seeds, workdir.as_posix()
    ((0, 1, 2), 'runs/adaloss_table/cifar100/resnet50')
  """
  if args.seeds < 1:
    raise ValueError(f'--seeds must be at least 1, got {args.seeds}.')
  pretrained = args.pretrained
  if pretrained is None:
    pretrained = default_pretrained(args.model, args.dataset)
  elif pretrained.lower() == 'none':
    pretrained = None
  grid = Grid(
      model=args.model,
      dataset=args.dataset,
      pretrained=pretrained,
      b0s=tuple(args.b0s),
      methods=tuple(args.optimizers),
      seeds=tuple(range(args.seeds)),
      eta=args.eta,
      epochs=args.epochs,
      batch_size=args.batch_size,
      weight_decay=args.weight_decay,
      data_dir=args.data_dir,
      max_steps_per_epoch=args.max_steps_per_epoch,
      checkpoint_every_steps=args.checkpoint_every,
      progress_bar=not args.no_progress,
  )
  workdir = pathlib.Path(
      args.workdir
      or pathlib.Path('runs', 'adaloss_table', args.dataset, args.model)
  )
  return grid, workdir


def main(args: argparse.Namespace) -> int:
  """Runs the grid of the parsed `args`, then writes the table and the plot."""
  # Not at the top: it imports Grain and JAX, which parsing does not need.
  from experiments import input_pipeline  # pylint: disable=g-import-not-at-top

  grid, workdir = grid_from_args(args)
  input_pipeline.prepare(grid.dataset, grid.data_dir, args.download_dir)
  started = time.perf_counter()
  results = run_grid(grid, workdir)
  print(write_table(workdir / 'table.md', grid, results))
  plot_table(workdir / 'table.png', grid, results)
  print(
      f'Wrote {workdir / "table.md"} and {workdir / "table.png"} in '
      f'{time.perf_counter() - started:.0f} s.'
  )
  return 0
