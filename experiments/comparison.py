"""``python -m experiments compare``: every method of the library on digits.

:func:`run_comparison` trains one small model once per method with the fixed
settings of ``experiments.configs.compare``, each run in ``WORKDIR/METHOD``,
then writes ``WORKDIR/comparison.md`` (:func:`comparison_table`) and
``WORKDIR/comparison.png`` (:func:`experiments.plots.plot_comparison`).
"""

import pathlib
import shutil
import time

from experiments import plots, run_directory, train
from experiments.configs import compare as compare_config


def run_comparison(
    workdir: str | pathlib.Path,
    methods: list[str],
    *,
    model: str,
    epochs: int,
    batch_size: int,
    max_steps_per_epoch: int | None,
    seed: int,
    resume: bool,
    progress_bar: bool,
) -> dict[str, plots.History]:
  """Trains `model` with each of `methods`; writes the table and the figure.

  Without `resume`, a method's folder that holds a run (of an earlier
  comparison) is deleted and its run started over; but only once every
  method's configuration has been checked.

  Args:
    workdir: the comparison's folder.
    methods: keys of ``experiments.configs.compare.SETTINGS``.
    model: a model of ``experiments.models``.
    epochs: epochs of every run.
    batch_size: batch size of every run.
    max_steps_per_epoch: shortens every epoch to this many steps (None: the
      whole training split).
    seed: seed of every run.
    resume: continue interrupted runs instead of starting over.
    progress_bar: show a progress bar on a terminal.

  Returns:
    Each method's metrics records, by its name.

  Raises:
    ValueError: for a model or method that training refuses, before anything
      is deleted or written.
  """
  workdir = pathlib.Path(workdir)
  started = time.perf_counter()
  configs = {
      name: compare_config.get_config(
          name,
          model=model,
          num_epochs=epochs,
          batch_size=batch_size,
          max_steps_per_epoch=max_steps_per_epoch,
          seed=seed,
          resume=resume,
          progress_bar=progress_bar,
      )
      for name in methods
  }
  for config in configs.values():
    # All of them, before a run of an earlier comparison is deleted below.
    train.check_config(config)
  results = {}
  for name, config in configs.items():
    run_folder = workdir / name
    if not resume and (run_folder / run_directory.CONFIG_FILE).exists():
      shutil.rmtree(run_folder)  # a previous comparison's run: start over
    history = train.train_and_evaluate(config, str(run_folder))
    results[name] = history
    print(
        f'{name:15s} train loss {history[-1]["train_loss"]:.4f}  '
        f'test accuracy {history[-1]["test_accuracy"]:.4f}  '
        f'({history[-1]["seconds"]:.0f} s)',
        flush=True,
    )
  title = f'{model} on digits, {epochs} epochs, batch {batch_size}, seed {seed}'
  (workdir / 'comparison.md').write_text(comparison_table(title, results))
  plots.plot_comparison(workdir / 'comparison.png', title, results)
  print(
      f'Wrote {workdir / "comparison.md"} and {workdir / "comparison.png"} '
      f'in {time.perf_counter() - started:.0f} s.'
  )
  return results


def comparison_table(title: str, results: dict[str, plots.History]) -> str:
  """The comparison as markdown: a row per method, its last record's numbers.

  Example:
    >>> print(comparison_table('digits', {'adamw': [
    ...     {'train_loss': 0.125, 'test_accuracy': 0.96, 'seconds': 12.3}]}))
    # digits
    <BLANKLINE>
    | method | settings | final train loss | test accuracy | wall time (s) |
    | --- | --- | ---: | ---: | ---: |
    | adamw | lr 0.003, weight_decay 0.0005 | 0.1250 | 0.9600 | 12 |
    <BLANKLINE>
  """
  lines = [
      f'# {title}',
      '',
      (
          '| method | settings | final train loss | test accuracy '
          '| wall time (s) |'
      ),
      '| --- | --- | ---: | ---: | ---: |',
  ]
  for name, history in results.items():
    last = history[-1]
    lines.append(
        f'| {name} | {compare_config.describe(name)} '
        f'| {last["train_loss"]:.4f} | {last["test_accuracy"]:.4f} '
        f'| {last["seconds"]:.0f} |'
    )
  return '\n'.join(lines) + '\n'
