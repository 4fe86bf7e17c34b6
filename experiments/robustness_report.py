"""What ``robustness`` reports: each method's numbers over the grid, its table.

A method's :class:`MethodResult` holds every copy's final test metric and
loss, shaped ``(seeds, rates)``. :func:`summarize` reduces it as the table
shows it:

* a run **diverged** when its final test loss is not finite or its test
  metric is no better than chance (accuracy at most that of always
  predicting the most frequent test class; perplexity at least the
  vocabulary's size): a blown-up run and one whose rate was too small to
  learn anything both count;
* the value at a rate is the **median over seeds** of the test metric, a run
  whose loss is not finite counting as chance;
* **best** is the best of those medians over the rates, **spread** their
  25th to 75th percentile over the rates, **near best** the number of rates
  whose median is within 5% of the best;
* **time per step** is the method's compiled grid program's seconds per step
  (every copy at once), over Adam's in the same run.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import math
import pathlib
from typing import Any, NamedTuple

import numpy as np

from experiments.configs import robustness as robustness_config
from experiments.configs.robustness import Grid

_NEAR_BEST = 0.05  # "within 5% of the best"


@dataclasses.dataclass
class MethodResult:
  """A method's finished grid.

  Attributes:
    test_metric: final test metric of each copy, ``[seed][rate]``.
    test_loss: final test loss of each copy.
    train_loss: last epoch's mean training loss of each copy.
    history: a record per epoch: ``epoch``, ``train_loss``, ``test_loss``,
      ``test_metric`` (each ``[seed][rate]``).
    seconds_per_step: the compiled epoch program's seconds per step.
    compile_seconds: the seconds its compilation took.
    timed_in: the invocations of the command that trained it (their start
      times), more than one if it was resumed.
  """

  test_metric: list[list[float]]
  test_loss: list[list[float]]
  train_loss: list[list[float]]
  history: list[dict[str, Any]]
  seconds_per_step: float
  compile_seconds: float
  timed_in: list[str]

  def to_json(self) -> dict[str, Any]:
    """The result as JSON, a NaN or infinity as null.

    Example:
      >>> result = MethodResult([[0.5, math.nan]], [[1.0, math.inf]], [[2.0]],
      ...                       [], 0.1, 2.0, ['t'])
      >>> result.to_json()['test_loss']
      [[1.0, None]]
      >>> MethodResult.from_json(result.to_json()).test_metric
      [[0.5, nan]]
    """
    saved = dataclasses.asdict(self)
    for key in _RUN_ARRAYS:
      saved[key] = finite_or_none(saved[key])
    return saved

  @classmethod
  def from_json(cls, saved: dict[str, Any]) -> 'MethodResult':
    """The result :meth:`to_json` wrote, null read back as NaN."""
    saved = dict(saved)
    for key in _RUN_ARRAYS:
      saved[key] = _nan_for_none(saved[key])
    return cls(**saved)


# The fields of a MethodResult that hold a number per run.
_RUN_ARRAYS = ('test_metric', 'test_loss', 'train_loss')


class Summary(NamedTuple):
  """A row of the table: see the module's documentation."""

  medians: np.ndarray  # (rates,)
  best: float
  best_rate: float
  spread: tuple[float, float]
  near_best: int
  diverged: int
  runs: int


@dataclasses.dataclass(frozen=True)
class TaskFacts:
  """What the report needs to know of the task.

  Attributes:
    metric: ``'accuracy'`` or ``'perplexity'``.
    higher_is_better: whether a larger metric is better.
    chance: the metric of a model that learned nothing.
    description: the task in a phrase, for titles.
  """

  metric: str
  higher_is_better: bool
  chance: float
  description: str


def diverged(metric: Any, loss: Any, facts: TaskFacts) -> np.ndarray:
  """Which runs diverged: a loss that is not finite, or chance at best.

  Example:
    >>> facts = TaskFacts('accuracy', True, 0.11, 'digits')
    >>> diverged(np.array([0.11, 0.9, 0.9]), np.array([2.3, 0.3, np.nan]),
    ...          facts).tolist()
    [True, False, True]
  """
  metric, loss = np.asarray(metric, float), np.asarray(loss, float)
  with np.errstate(invalid='ignore'):
    at_chance = (
        metric <= facts.chance
        if facts.higher_is_better
        else metric >= facts.chance
    )
  return ~np.isfinite(loss) | ~np.isfinite(metric) | at_chance


def scores(result: MethodResult, facts: TaskFacts) -> np.ndarray:
  """Each run's final test metric, ``(seeds, rates)``; chance where the
  loss or the metric is not finite.

  Example:
    >>> facts = TaskFacts('accuracy', True, 0.1, 'digits')
    >>> result = MethodResult([[0.9, 0.3]], [[0.2, float('nan')]], [], [],
    ...                       0.1, 1.0, [])
    >>> scores(result, facts).tolist()
    [[0.9, 0.1]]
  """
  metric = np.asarray(result.test_metric, float)
  loss = np.asarray(result.test_loss, float)
  return np.where(np.isfinite(loss) & np.isfinite(metric), metric, facts.chance)


def summarize(
    result: MethodResult, rates: Sequence[float], facts: TaskFacts
) -> Summary:
  """The table's row of `result`.

  Example:
    >>> facts = TaskFacts('accuracy', True, 0.1, 'digits')
    >>> result = MethodResult(
    ...     test_metric=[[0.5, 0.9, 0.1], [0.7, 0.95, 0.1]],
    ...     test_loss=[[1.0, 0.3, float('nan')], [0.9, 0.2, float('nan')]],
    ...     train_loss=[], history=[], seconds_per_step=0.1,
    ...     compile_seconds=1.0, timed_in=['t'])
    >>> summary = summarize(result, [0.01, 0.1, 1.0], facts)
    >>> summary.medians.round(3).tolist(), summary.best_rate
    ([0.6, 0.925, 0.1], 0.1)
    >>> summary.near_best, summary.diverged, summary.runs
    (1, 2, 6)
  """
  metric = np.asarray(result.test_metric, float)
  loss = np.asarray(result.test_loss, float)
  failed = diverged(metric, loss, facts)
  scores = np.where(
      np.isfinite(loss) & np.isfinite(metric), metric, facts.chance
  )
  medians = np.median(scores, axis=0)
  sign = 1.0 if facts.higher_is_better else -1.0
  best_index = int(np.argmax(sign * medians))
  best = float(medians[best_index])
  tolerance = _NEAR_BEST * abs(best)
  near_best = int(np.sum(sign * (medians - best) >= -tolerance))
  low, high = np.percentile(medians, [25, 75])
  return Summary(
      medians=medians,
      best=best,
      best_rate=float(rates[best_index]),
      spread=(float(low), float(high)),
      near_best=near_best,
      diverged=int(failed.sum()),
      runs=failed.size,
  )


def _count(number: int, noun: str) -> str:
  """`number` `noun`s, singular for one."""
  return f'{number} {noun}' + ('' if number == 1 else 's')


def _format_metric(value: float, facts: TaskFacts) -> str:
  return f'{value:.4f}' if facts.metric == 'accuracy' else f'{value:.4g}'


def _describe(grid: Grid, facts: TaskFacts, steps_per_epoch: int) -> str:
  if len(grid.seeds) > 1:
    seeds = 'median over seeds ' + ', '.join(map(str, grid.seeds))
  else:
    seeds = f'one run per rate (seed {grid.seeds[0]})'
  rates = ', '.join(f'{rate:g}' for rate in grid.rates)
  chance = _format_metric(facts.chance, facts)
  return (
      f'Final test {facts.metric} after {_count(grid.epochs, "epoch")} of '
      f'{steps_per_epoch} steps (batch {grid.batch_size}), {seeds}, at the '
      f'initial learning rates {rates}. A run diverged if '
      f'its test loss is not finite or its test {facts.metric} is no better '
      f'than chance ({chance}). Spread: the 25th to 75th percentile of the '
      'medians over the rates. Near best: rates whose median is within 5% '
      "of the method's best. Time per step: the method's compiled program "
      f'for all {len(grid.rates) * len(grid.seeds)} runs at once, over '
      "Adam's, measured in this run."
  )


def write_table(
    path: pathlib.Path,
    grid: Grid,
    facts: TaskFacts,
    steps_per_epoch: int,
    results: Mapping[str, MethodResult],
) -> str:
  """Writes the table of `results` (by method, in order) to `path`.

  Returns:
    Its markdown: a row per method, a note on the timings, then the median
    over seeds at every rate.
  """
  summaries = {
      name: summarize(result, grid.rates, facts)
      for name, result in results.items()
  }
  lines = [
      f'# Robustness to the initial learning rate: {facts.description}',
      '',
      _describe(grid, facts, steps_per_epoch),
      '',
      (
          f'| method | "learning rate" | best test {facts.metric} (at rate) '
          '| spread | near best | diverged | time per step vs Adam |'
      ),
      '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
  ]
  for name, summary in summaries.items():
    low, high = (_format_metric(v, facts) for v in summary.spread)
    ratio = time_ratio(results, name)
    lines.append(
        f'| {name} | {robustness_config.METHODS[name].rate_meaning} '
        f'| {_format_metric(summary.best, facts)} ({summary.best_rate:g}) '
        f'| {low}–{high} | {summary.near_best} of {len(grid.rates)} '
        f'| {summary.diverged} of {summary.runs} | {ratio:.2f} |'
    )
  invocations = {t for result in results.values() for t in result.timed_in}
  lines += ['', _timing_note(results, len(invocations))]
  lines += [
      '',
      f'Median test {facts.metric} over seeds at each rate:',
      '',
      '| method | ' + ' | '.join(f'{rate:g}' for rate in grid.rates) + ' |',
      '| --- |' + ' ---: |' * len(grid.rates),
  ]
  for name, summary in summaries.items():
    cells = [_format_metric(v, facts) for v in summary.medians]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  text = '\n'.join(lines) + '\n'
  path.write_text(text)
  return text


def _timing_note(results: Mapping[str, MethodResult], invocations: int) -> str:
  reference = results[robustness_config.REFERENCE_METHOD].seconds_per_step
  compile_seconds = sum(r.compile_seconds for r in results.values())
  note = (
      f"Adam's program took {1e3 * reference:.1f} ms per step; compiling "
      f'the {_count(len(results), "program")} took {compile_seconds:.0f} s.'
  )
  if invocations > 1:
    note += (
        f' The methods were trained in {invocations} invocations of the '
        'command (a resumed grid): their times were measured under whatever '
        'load each one met.'
    )
  return note


def time_ratio(results: Mapping[str, MethodResult], name: str) -> float:
  """`name`'s seconds per step over Adam's.

  Example:
    >>> result = lambda seconds: MethodResult([], [], [], [], seconds, 0, [])
    >>> time_ratio({'adam': result(0.1), 'acme': result(0.25)}, 'acme')
    2.5
  """
  reference = results[robustness_config.REFERENCE_METHOD].seconds_per_step
  return results[name].seconds_per_step / reference


def finite_or_none(values: Any) -> Any:
  """`values` (nested lists) for JSON: NaN and infinities as None.

  Example:
    >>> finite_or_none([[1.0, float('nan')], [float('inf'), 2.0]])
    [[1.0, None], [None, 2.0]]
  """
  if isinstance(values, list):
    return [finite_or_none(v) for v in values]
  return values if math.isfinite(values) else None


def _nan_for_none(values: Any) -> Any:
  if isinstance(values, list):
    return [_nan_for_none(v) for v in values]
  return math.nan if values is None else values
