"""The figures of ``python -m experiments``, drawn from what runs wrote.

* :func:`plot_curves`: training loss and every evaluated accuracy (or
  perplexity) against the epoch, of one run or of several;
* :func:`plot_histograms`: the scale-free paper's histograms of the
  magnitudes of parameters, gradients and updates (``--store-stats``);
* :func:`plot_heatmap`: the scale-free paper's final test error over the
  initial step size and the weight decay, one panel per method;
* :func:`plot_comparison`: the ``compare`` command's figure;
* :func:`plot_robustness`: the ``robustness`` command's figure;
* :func:`plot_run_folder`: the ``plot`` command, every figure that a run's
  folder or a folder of runs has the files for.

Figures are written as PNG files through Matplotlib's ``Agg`` backend, which
needs no display.
"""

import json
import math
import pathlib

import numpy as np

from experiments import robustness_report, run_directory
from experiments.configs import robustness as robustness_config

History = list[dict]
"""A run's metrics records, as :func:`experiments.run_directory.read_metrics`
returns them."""


def _pyplot():
  """``matplotlib.pyplot`` on the ``Agg`` backend, imported when first drawn."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def plot_run_folder(
    folder: str | pathlib.Path,
    out: str | pathlib.Path | None = None,
    stats_step: int | None = None,
) -> list[pathlib.Path]:
  """Draws every figure that `folder` has the files for: the ``plot`` command.

  Args:
    folder: a run's working directory, or a folder of runs' working
      directories (such as a ``--log-folder``), or both.
    out: the folder to write the figures into, created if needed (default:
      `folder`).
    stats_step: the step of the run's ``stats/`` to histogram (default: the
      last stored).

  Returns:
    The figures written: a run's ``curves.png`` and
    ``histograms_step_STEP.png``; for a folder of runs, ``runs_curves.png``
    and, if the runs have a weight decay, ``heatmap.png``.

  Raises:
    ValueError: if neither `folder` nor its subfolders hold metrics, or if
      `stats_step` is not stored.
  """
  folder = pathlib.Path(folder)
  out = pathlib.Path(out or folder)
  out.mkdir(parents=True, exist_ok=True)
  written = []
  if (folder / run_directory.METRICS_FILE).exists():
    history = run_directory.read_metrics(folder)
    written.append(
        plot_curves(out / 'curves.png', folder.name, {folder.name: history})
    )
  if (folder / 'stats').is_dir():
    written.append(plot_histograms(out, folder / 'stats', stats_step))
  runs = (
      {
          run.name: run
          for run in sorted(folder.iterdir())
          if (run / run_directory.METRICS_FILE).exists()
          and (run / run_directory.CONFIG_FILE).exists()
      }
      if folder.is_dir()
      else {}
  )
  if runs:
    histories = {
        name: run_directory.read_metrics(run) for name, run in runs.items()
    }
    written.append(plot_curves(out / 'runs_curves.png', folder.name, histories))
    configs = {
        name: json.loads((run / run_directory.CONFIG_FILE).read_text())
        for name, run in runs.items()
    }
    heatmap = plot_heatmap(out / 'heatmap.png', configs, histories)
    if heatmap:
      written.append(heatmap)
  if not written:
    raise ValueError(
        f'Nothing to plot in {folder}: no metrics.jsonl there or '
        'in its subfolders.'
    )
  return written


def plot_curves(
    path: pathlib.Path, title: str, histories: dict[str, History]
) -> pathlib.Path:
  """Training loss and every evaluated accuracy (perplexity, for a language
  model) against the epoch, and what the method adapts where the records have
  it.

  The third panel draws AdaLoss's (and its baselines') effective step, or
  ACME's adapted rate with the branch of its step-size table taken at each
  record (the right axis).

  Args:
    path: the PNG file to write.
    title: the figure's title.
    histories: each run's records by the run's name; with several runs, each
      curve's label starts with its run's name.

  Returns:
    `path`.
  """
  plt = _pyplot()
  keys = {k for history in histories.values() for r in history for k in r}
  adapts = bool(keys & {'effective_step_size', 'acme_branch'})
  figure, axes = plt.subplots(
      1, 3 if adapts else 2, figsize=(16 if adapts else 11, 4)
  )
  loss_axis, quality_axis = axes[:2]
  # The language model's records have perplexities where the classifiers'
  # have accuracies.
  has_accuracy = any(k.endswith('_accuracy') for k in keys)
  quality = 'accuracy' if has_accuracy else 'perplexity'
  for name, history in histories.items():
    label = '' if len(histories) == 1 else f'{name} '
    epochs = [r['epoch'] for r in history]
    for key in sorted({k for r in history for k in r}):
      values = [r.get(key, math.nan) for r in history]
      if key.endswith('_loss'):
        loss_axis.plot(epochs, values, label=f'{label}{key}')
      elif key.endswith(f'_{quality}'):
        quality_axis.plot(epochs, values, label=f'{label}{key}')
  loss_axis.set(xlabel='epoch', ylabel='loss', yscale='log')
  quality_axis.set(
      xlabel='epoch',
      ylabel=quality,
      yscale='log' if quality == 'perplexity' else 'linear',
  )
  for axis in (loss_axis, quality_axis):
    if axis.get_legend_handles_labels()[0]:
      axis.legend(fontsize='x-small')
  if adapts:
    _plot_adapted(axes[2], histories)
  figure.suptitle(title, fontsize='small')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def _plot_adapted(axis, histories: dict[str, History]) -> None:
  """What each run's method adapts: AdaLoss's effective step, or ACME's
  rate and, on a right axis, its branch."""
  branch_axis = None
  for name, history in histories.items():
    label = '' if len(histories) == 1 else f'{name} '
    epochs = [r['epoch'] for r in history]
    if any('acme_branch' in r for r in history):
      axis.plot(
          epochs,
          [r['learning_rate'] for r in history],
          label=f"{label}ACME's rate",
      )
      if branch_axis is None:
        branch_axis = axis.twinx()
      branch_axis.plot(
          epochs,
          [r['acme_branch'] for r in history],
          linestyle='none',
          marker='o',
          markersize=3,
          color='black',
          label=f'{label}branch',
      )
    elif any('effective_step_size' in r for r in history):
      axis.plot(
          epochs,
          [r.get('effective_step_size', math.nan) for r in history],
          label=f'{label}effective step',
      )
  axis.set(xlabel='epoch', ylabel='what the method adapts', yscale='log')
  axis.legend(fontsize='x-small', loc='upper left')
  if branch_axis is not None:
    # Not at the top: only ACME's figures need it, and it imports JAX.
    import optax_adaptive  # pylint: disable=g-import-not-at-top

    branches = list(optax_adaptive.AcmeBranch)
    branch_axis.set_yticks(
        [b.value for b in branches], [b.name.lower() for b in branches]
    )
    branch_axis.tick_params(labelsize='x-small')
    branch_axis.set_ylabel('branch taken (dots)')


def plot_histograms(
    out: pathlib.Path, stats_dir: pathlib.Path, step: int | None
) -> pathlib.Path:
  """The scale-free paper's histograms of magnitudes, in powers of 2.

  Every layer's values are pooled, BatchNorm's left out as in the authors'
  figures; ``update / eta0`` is the update divided by the run's base rate.

  Args:
    out: the folder to write the figure into.
    stats_dir: a run's ``stats/`` folder of ``step_*.npz`` files.
    step: the stored step to draw; None for the last stored.

  Returns:
    The figure written, ``out/histograms_step_STEP.png``.

  Raises:
    ValueError: if `stats_dir` holds no step, or not `step`.
  """
  files = sorted(stats_dir.glob('step_*.npz'))
  if step is not None:
    files = [f for f in files if f.name == f'step_{step:08d}.npz']
  if not files:
    raise ValueError(
        f'No stored step {step} in {stats_dir}.'
        if step is not None
        else f'No stats in {stats_dir}.'
    )
  stats = np.load(files[-1])
  pooled = {}
  for key in stats.files:
    if '/' not in key or any(
        part.startswith('bn') or 'norm' in part for part in key.split('/')[1:]
    ):
      continue
    kind = key.split('/')[0]
    pooled.setdefault(kind, []).append(np.abs(stats[key]).ravel())
  pooled = {kind: np.concatenate(v) for kind, v in pooled.items()}
  pooled['update / eta0'] = pooled['update'] / float(stats['learning_rate'])
  low, high = -30, 10  # powers of 2, the authors' 1e-8 to 1e4
  edges = 2.0 ** np.arange(low, high + 1)
  plt = _pyplot()
  figure, axes = plt.subplots(1, len(pooled), figsize=(4 * len(pooled), 3.2))
  for axis, (kind, values) in zip(axes, pooled.items()):
    counts, _ = np.histogram(
        np.clip(values, edges[0], edges[-1] * 0.999), bins=edges
    )
    axis.bar(np.arange(low, high), counts / max(counts.sum(), 1), width=0.9)
    axis.set(title=kind, xlabel='order of magnitude (power of 2)', ylim=(0, 1))
  axes[0].set_ylabel('proportion')
  figure.suptitle(
      f'{stats_dir.parent.name}: step {int(stats["step"])}, '
      f'epoch {int(stats["epoch"]) + 1}',
      fontsize='small',
  )
  figure.tight_layout()
  path = out / f'histograms_step_{int(stats["step"])}.png'
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def plot_heatmap(
    path: pathlib.Path, configs: dict[str, dict], histories: dict[str, History]
) -> pathlib.Path | None:
  """Final test error over the initial rate and the weight decay, per method.

  The scale-free paper's figure: one panel per optimizer, the best setting
  circled; a run that diverged counts as an error of 1. A run is left out if
  its optimizer has no weight decay or it has evaluated no test (or
  validation) accuracy.

  Args:
    path: the PNG file to write.
    configs: each run's ``config.json`` by the run's name.
    histories: each run's records by the run's name.

  Returns:
    `path`; None, and nothing written, if no run has a place in the figure.
  """
  grid: dict[str, dict[tuple[float, float], float]] = {}
  for name, config in configs.items():
    decay = config['optimizer_kwargs'].get('weight_decay')
    last = histories[name][-1] if histories[name] else {}
    accuracy_key = (
        'test_accuracy' if 'test_accuracy' in last else 'val_accuracy'
    )
    if decay is None or accuracy_key not in last:
      continue
    diverged = not math.isfinite(last.get('train_loss', 0.0))
    grid.setdefault(config['optimizer'], {})[
        (config['learning_rate'], decay)
    ] = (1.0 if diverged else 1.0 - last[accuracy_key])
  if not grid:
    return None
  plt = _pyplot()
  figure, axes = plt.subplots(
      1, len(grid), figsize=(5 * len(grid), 4), squeeze=False
  )
  for axis, (method, errors) in zip(axes[0], sorted(grid.items())):
    rates = sorted({r for r, _ in errors})
    decays = sorted({d for _, d in errors})
    table = np.full((len(rates), len(decays)), np.nan)
    for (rate, decay), error in errors.items():
      table[rates.index(rate), decays.index(decay)] = error
    image = axis.imshow(table, cmap='jet', origin='lower')
    best = np.unravel_index(np.nanargmin(table), table.shape)
    axis.scatter(
        [best[1]],
        [best[0]],
        s=120,
        facecolors='none',
        edgecolors='black',
        linewidths=2,
    )
    axis.set_xticks(range(len(decays)), [f'{d:g}' for d in decays], rotation=45)
    axis.set_yticks(range(len(rates)), [f'{r:g}' for r in rates])
    axis.set(
        xlabel='weight decay',
        ylabel='initial step size',
        title=f'{method}: best test error {np.nanmin(table):.4f}',
    )
    figure.colorbar(image, ax=axis, fraction=0.046)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def plot_comparison(
    path: pathlib.Path, title: str, results: dict[str, History]
) -> None:
  """The ``compare`` command's figure: each method's training loss and test
  accuracy against the epoch.

  Args:
    path: the PNG file to write.
    title: the figure's title.
    results: each method's records by its name.
  """
  plt = _pyplot()
  figure, (loss_axis, accuracy_axis) = plt.subplots(
      1, 2, figsize=(12, 4), layout='constrained'
  )
  for name, history in results.items():
    epochs = [r['epoch'] for r in history]
    loss_axis.plot(epochs, [r['train_loss'] for r in history], label=name)
    accuracy_axis.plot(
        epochs, [r['test_accuracy'] for r in history], label=name
    )
  loss_axis.set(xlabel='epoch', ylabel='training loss', yscale='log')
  accuracy_axis.set(xlabel='epoch', ylabel='test accuracy')
  # Beside the panels, not over the curves.
  figure.legend(
      *loss_axis.get_legend_handles_labels(),
      loc='outside right upper',
      fontsize='small',
  )
  figure.suptitle(title)
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_robustness(
    path: pathlib.Path,
    grid: robustness_config.Grid,
    facts: robustness_report.TaskFacts,
    results: dict[str, robustness_report.MethodResult],
) -> None:
  """The ``robustness`` command's figure: final metric against the rate.

  One panel per family of methods (``experiments.configs.robustness``), a
  curve per method: the median over seeds (a run whose loss is not finite
  counting as chance), its band from the lowest to the highest seed, a cross
  where most seeds diverged. Adam is drawn dashed in every other panel for
  reference, chance as a dotted line.

  Args:
    path: the PNG file to write.
    grid: the grid trained.
    facts: the task's facts.
    results: each method's result, in the table's order.
  """
  methods = robustness_config.METHODS
  reference = robustness_config.REFERENCE_METHOD
  families = [
      f
      for f in robustness_config.FAMILIES
      if any(methods[name].family == f for name in results)
  ]
  plt = _pyplot()
  # Two panels a row, to stay readable at the width of a documentation page.
  columns = min(2, len(families))
  rows = -(-len(families) // columns)
  figure, axes = plt.subplots(
      rows,
      columns,
      figsize=(5 * columns, 3.6 * rows + 0.4),
      sharex=True,
      sharey=True,
      squeeze=False,
      layout='constrained',
  )
  for unused in axes.flat[len(families) :]:
    unused.set_visible(False)
  rates = np.asarray(grid.rates)
  for axis, family in zip(axes.flat, families):
    members = [name for name in results if methods[name].family == family]
    if reference not in members:
      axis.plot(
          rates,
          np.median(robustness_report.scores(results[reference], facts), 0),
          color='grey',
          linestyle='--',
          label=f'{reference} (reference)',
      )
    for name in members:
      scores = robustness_report.scores(results[name], facts)
      medians = np.median(scores, axis=0)
      failed = (
          robustness_report.diverged(
              results[name].test_metric, results[name].test_loss, facts
          ).mean(axis=0)
          > 0.5
      )
      (line,) = axis.plot(rates, medians, marker='o', markersize=3, label=name)
      axis.fill_between(
          rates,
          scores.min(0),
          scores.max(0),
          color=line.get_color(),
          alpha=0.15,
      )
      axis.plot(
          rates[failed],
          medians[failed],
          linestyle='none',
          marker='x',
          markersize=7,
          color=line.get_color(),
      )
    axis.axhline(facts.chance, color='black', linestyle=':', linewidth=1)
    axis.set(
        xscale='log',
        xlabel='initial learning rate',
        yscale='linear' if facts.metric == 'accuracy' else 'log',
    )
    axis.set_title(family, fontsize='small')
    axis.grid(alpha=0.3)
    axis.legend(fontsize='x-small')
  for axis in axes[:, 0]:
    axis.set_ylabel(f'final test {facts.metric}')
  figure.suptitle(
      f'{facts.description}\nmedian over {len(grid.seeds)} seeds, band '
      'from lowest to highest seed, x: most seeds diverged, dotted: chance',
      fontsize='small',
  )
  figure.savefig(path, dpi=100)
  plt.close(figure)
