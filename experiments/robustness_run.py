"""The loop of ``python -m experiments robustness``: methods one by one.

:func:`run` checks the working directory, trains every method of the grid
not finished there yet (:func:`run_grid`), then writes the table
(``experiments.robustness_report``) and the figure
(``experiments.plots.plot_robustness``). A method's folder
``WORKDIR/METHOD/`` holds its state and progress after every epoch
(``state.npz``, ``progress.json``), replaced by ``result.json`` when it
finishes. Ctrl-C stops after the epoch under way, its state saved; a second
call with ``resume`` reads the finished methods back and continues the
unfinished one from its last epoch.
"""

from collections.abc import Sequence
import json
import logging
import pathlib
import sys
import time

import numpy as np
import tqdm

from experiments import (
    plots,
    reporting,
    robustness_grid,
    robustness_report,
    robustness_tasks,
    run_directory,
)
from experiments.configs.robustness import Grid

_LOG = logging.getLogger(__name__)
GRID_FILE = 'grid.json'
RESULT_FILE = 'result.json'
TABLE_FILE = 'table.md'
FIGURE_FILE = 'robustness.png'
_STATE_FILE = 'state.npz'
_PROGRESS_FILE = 'progress.json'
# Which call of the command trained a method, for the table's timing note.
_INVOCATION = time.strftime('%Y-%m-%dT%H:%M:%S')


def open_workdir(workdir: pathlib.Path, grid: Grid, resume: bool) -> None:
  """Checks that `workdir` may hold `grid`, then writes ``grid.json``.

  Raises:
    ValueError: `workdir` holds a grid and `resume` is False, or it holds a
      grid of other settings.
  """
  saved_path = workdir / GRID_FILE
  if saved_path.exists():
    if not resume:
      raise ValueError(
          f'{workdir} already holds a robustness grid: complete it with '
          '--resume, or choose another --workdir.'
      )
    changed = grid.changed_settings(json.loads(saved_path.read_text()))
    if changed:
      raise ValueError(
          f'{workdir} holds a grid with other settings ({", ".join(changed)})'
          ': resume it with its own settings, or choose another --workdir.'
      )
  workdir.mkdir(parents=True, exist_ok=True)
  saved_path.write_text(json.dumps(grid.to_json(), indent=2) + '\n')


def read_result(folder: pathlib.Path) -> robustness_report.MethodResult | None:
  """A method's finished result in `folder`, or None."""
  path = folder / RESULT_FILE
  if not path.exists():
    return None
  return robustness_report.MethodResult.from_json(json.loads(path.read_text()))


class _Progress:
  """The grid's steps over all methods: a bar on a terminal, else lines."""

  def __init__(self, total: int, done: int, show: bool):
    self.done = done
    terminal = show and sys.stderr.isatty()
    self._bar = tqdm.tqdm(
        total=total, initial=done, disable=not terminal, dynamic_ncols=True
    )
    self._lines = (
        reporting.ProgressLines(total) if show and not terminal else None
    )

  def advance(self, steps: int) -> None:
    self.done += steps
    self._bar.update(steps)
    if self._lines is not None:
      self._lines.step_done(self.done)

  def close(self) -> None:
    self._bar.close()


def _load_progress(folder: pathlib.Path, state, name: str):
  """The state and progress of `name`'s unfinished grid, or a fresh start."""
  progress_path = folder / _PROGRESS_FILE
  if not progress_path.exists():
    return state, {
        'epochs_done': 0,
        'train_seconds': 0.0,
        'compile_seconds': 0.0,
        'history': [],
        'timed_in': [],
    }
  saved = json.loads(progress_path.read_text())
  state = robustness_grid.restore_state(folder / _STATE_FILE, state)
  _LOG.info('%s: resuming after epoch %d.', name, saved['epochs_done'])
  return state, saved


def _epoch_record(epoch: int, train_loss, test_loss, test_metric) -> dict:
  """An epoch's numbers, ``[seed][rate]``, for ``progress.json``."""
  numbers = {
      'train_loss': train_loss,
      'test_loss': test_loss,
      'test_metric': test_metric,
  }
  return {
      'epoch': epoch,
      **{
          key: robustness_report.finite_or_none(np.asarray(value).tolist())
          for key, value in numbers.items()
      },
  }


def _train_method(task, grid: Grid, name: str, folder, interrupt, progress):
  """Trains (or resumes) every copy of `name`; returns its result."""
  program = robustness_grid.GridProgram(task, name, grid.rates)
  state, saved = _load_progress(folder, program.initial_state(grid.seeds), name)

  def epoch_inputs(epoch):
    per_seed = [task.epoch_inputs(seed, epoch) for seed in grid.seeds]
    return {k: np.stack([x[k] for x in per_seed]) for k in per_seed[0]}

  copies = len(grid.rates) * len(grid.seeds)
  _LOG.info('Compiling the grid of %s (%d runs)...', name, copies)
  seconds = program.compile(state, epoch_inputs(saved['epochs_done']))
  _LOG.info('Compiled the grid of %s in %.1f s.', name, seconds)
  saved['compile_seconds'] += seconds
  if _INVOCATION not in saved['timed_in']:
    saved['timed_in'].append(_INVOCATION)
  folder.mkdir(parents=True, exist_ok=True)
  for epoch in range(saved['epochs_done'], grid.epochs):
    state, train_loss, seconds = program.train_epoch(state, epoch_inputs(epoch))
    saved['train_seconds'] += seconds
    saved['epochs_done'] = epoch + 1
    saved['history'].append(
        _epoch_record(epoch + 1, train_loss, *program.evaluate(state))
    )
    robustness_grid.save_state(folder / _STATE_FILE, state)
    (folder / _PROGRESS_FILE).write_text(json.dumps(saved))
    progress.advance(task.steps_per_epoch)
    if interrupt.requested and epoch + 1 < grid.epochs:
      raise run_directory.Interrupted(progress.done)
  last = saved['history'][-1]
  result = robustness_report.MethodResult.from_json({
      'test_metric': last['test_metric'],
      'test_loss': last['test_loss'],
      'train_loss': last['train_loss'],
      'history': saved['history'],
      'seconds_per_step': (
          saved['train_seconds'] / (grid.epochs * task.steps_per_epoch)
      ),
      'compile_seconds': saved['compile_seconds'],
      'timed_in': saved['timed_in'],
  })
  (folder / RESULT_FILE).write_text(json.dumps(result.to_json()))
  (folder / _PROGRESS_FILE).unlink()
  (folder / _STATE_FILE).unlink()
  return result


def run_grid(
    task: robustness_tasks.Task,
    grid: Grid,
    methods: Sequence[str],
    workdir: pathlib.Path,
    facts: robustness_report.TaskFacts,
    *,
    progress_bar: bool,
) -> dict[str, robustness_report.MethodResult]:
  """Trains every method of `methods` not finished in `workdir` yet.

  Returns:
    Each method's result, in `methods`' order.

  Raises:
    experiments.run_directory.Interrupted: after a Ctrl-C, once the epoch
      under way is saved.
  """
  results = {name: read_result(workdir / name) for name in methods}
  steps_per_method = grid.epochs * task.steps_per_epoch
  done = 0
  for name, result in results.items():
    progress_path = workdir / name / _PROGRESS_FILE
    if result is not None:
      done += steps_per_method
    elif progress_path.exists():
      epochs = json.loads(progress_path.read_text())['epochs_done']
      done += epochs * task.steps_per_epoch
  progress = _Progress(len(methods) * steps_per_method, done, progress_bar)
  with run_directory.InterruptRequest() as interrupt:
    for name in methods:
      result = results[name]
      if result is None:
        result = _train_method(
            task, grid, name, workdir / name, interrupt, progress
        )
        results[name] = result
      summary = robustness_report.summarize(result, grid.rates, facts)
      _LOG.info(
          '%s%s: best median test %s %.4g at rate %g, %d of %d runs '
          'diverged; %.1f ms per step.',
          name,
          ' (finished earlier)' if result.timed_in[-1] != _INVOCATION else '',
          facts.metric,
          summary.best,
          summary.best_rate,
          summary.diverged,
          summary.runs,
          1e3 * result.seconds_per_step,
      )
      if interrupt.requested and name != methods[-1]:
        raise run_directory.Interrupted(progress.done)
  progress.close()
  return results


def run(
    grid: Grid,
    methods: Sequence[str],
    workdir: pathlib.Path,
    *,
    data_dir: str | None,
    text_dir: str | None,
    resume: bool,
    progress_bar: bool,
) -> dict[str, robustness_report.MethodResult]:
  """Trains the grid in `workdir`, then writes its table and figure there.

  Args:
    grid: what every method trains.
    methods: the methods, in the table's order.
    workdir: the grid's folder.
    data_dir: the TFDS data directory (``ptb``).
    text_dir: the folder of the PTB text files (``ptb``).
    resume: complete a grid that `workdir` holds.
    progress_bar: show a progress bar on a terminal, progress lines
      elsewhere.

  Returns:
    Each method's result.

  Raises:
    ValueError: for data that cannot be read, or a working directory that
      holds a grid (without `resume`) or a grid of other settings; before
      anything is written.
    experiments.run_directory.Interrupted: after a Ctrl-C, once the epoch
      under way is saved.
  """
  started = time.perf_counter()
  task = robustness_tasks.create(grid, data_dir, text_dir)
  open_workdir(workdir, grid, resume)
  facts = robustness_report.TaskFacts(
      metric=task.metric,
      higher_is_better=task.higher_is_better,
      chance=task.chance,
      description=robustness_tasks.DESCRIPTIONS[grid.task],
  )
  results = run_grid(
      task, grid, methods, workdir, facts, progress_bar=progress_bar
  )
  print(
      robustness_report.write_table(
          workdir / TABLE_FILE, grid, facts, task.steps_per_epoch, results
      )
  )
  plots.plot_robustness(workdir / FIGURE_FILE, grid, facts, results)
  print(
      f'Wrote {workdir / TABLE_FILE} and {workdir / FIGURE_FILE} in '
      f'{time.perf_counter() - started:.0f} s.'
  )
  return results
