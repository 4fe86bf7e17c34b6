"""What the training loops say while they work, where no progress bar is drawn.

Both loops (``experiments.train`` and ``experiments.train_lm``) announce the
compilation of their training step, which takes minutes for the larger
networks on a CPU, print a progress line at least every ``_PROGRESS_SECONDS``
where stderr is not a terminal, and a line for each metrics record.
"""

from collections.abc import Callable
import logging
import math
import os
import time
from typing import Any

import jax

# The metrics a record's line shows: the losses, and the classifiers'
# accuracies or the language model's perplexities.
_SHOWN_METRICS = ('_loss', '_accuracy', '_perplexity')

_LOG = logging.getLogger(__name__)
# Seconds between progress lines when stderr is not a terminal (no progress
# bar there); the tests shorten it through this internal variable.
_PROGRESS_SECONDS = float(os.environ.get('EXPERIMENTS_PROGRESS_SECONDS', 30))
# JAX's tracing, lowering and compiling time in this process, in seconds.
_compile_seconds = [0.0]


def _count_compile_time(event: str, duration: float, **_) -> None:
  if event.startswith('/jax/core/compile/'):
    _compile_seconds[0] += duration


jax.monitoring.register_event_duration_secs_listener(_count_compile_time)


def announcing_compilation(
    function: Callable[..., Any], name: str
) -> Callable[..., Any]:
  """`function`, whose first call, which compiles it, says so.

  Args:
    function: a jitted function.
    name: what it is, for the lines (``'the training step'``).

  Returns:
    `function`, whose first call logs ``Compiling NAME...`` before and
    ``Compiled NAME in S s.`` after, ``S`` being JAX's compilation time
    (tracing, lowering, compiling) within it; that call waits for its
    outputs, the later ones do not.
  """
  called = False

  def call(*args):
    nonlocal called
    if called:
      return function(*args)
    called = True
    _LOG.info('Compiling %s...', name)
    before = _compile_seconds[0]
    outputs = jax.block_until_ready(function(*args))
    _LOG.info('Compiled %s in %.1f s.', name, _compile_seconds[0] - before)
    return outputs

  return call


class ProgressLines:
  """A line at least every ``_PROGRESS_SECONDS``: steps, rate, expected end.

  The rate is measured from the second step on, the first one compiling.
  """

  def __init__(self, total_steps: int, approximate: bool = False):
    """Counts to `total_steps`.

    Args:
      total_steps: the steps of the whole run.
      approximate: whether `total_steps` is an estimate (the language model's
        windows have random lengths), which the lines then say.
    """
    self._total = total_steps
    self._about = '~' if approximate else ''
    self._since = None
    self._last_line = time.monotonic()

  def step_done(self, step: int) -> None:
    """Records that `step` steps are done, and says so when a line is due."""
    now = time.monotonic()
    if self._since is None:
      self._since = (now, step)
      return
    if now - self._last_line < _PROGRESS_SECONDS:
      return
    self._last_line = now
    rate = (step - self._since[1]) / (now - self._since[0])
    remaining = max(0, self._total - step) / rate if rate else math.inf
    end = (
        time.strftime('%H:%M:%S', time.localtime(time.time() + remaining))
        if math.isfinite(remaining)
        else 'unknown'
    )
    _LOG.info(
        'step %d/%s%d, %.3g steps/s, expected end %s (in %.1f min)',
        step,
        self._about,
        self._total,
        rate,
        end,
        remaining / 60,
    )


def say_record(run_name: str, record: dict[str, Any]) -> None:
  """Logs a metrics record in one line.

  Args:
    run_name: the run's name (its folder's).
    record: a record of ``metrics.jsonl``, with its ``epoch`` and ``step``.

  Example: ``adaloss epoch 1.00 step 23: train_loss 2.175, test_loss 2.073``,
  the losses, accuracies and perplexities in the record's order.
  """
  _LOG.info(
      '%s epoch %.2f step %d: %s',
      run_name,
      record['epoch'],
      record['step'],
      ', '.join(
          f'{k} {v:.4g}'
          for k, v in record.items()
          if k.endswith(_SHOWN_METRICS)
      ),
  )
