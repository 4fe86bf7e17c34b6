"""Runs ``python -m experiments COMMAND ...``; see ``experiments.cli``."""

import sys

from experiments import cli


def _without_closed_loop_reports(hook):
  """`hook`, less the reports of I/O callbacks that outlive Orbax's loop.

  When a read of a damaged checkpoint fails, Orbax closes its event loop
  while TensorStore completes the other reads, and each completion reports
  the closed loop: tracebacks after the one message that says what failed.
  """

  def report(unraisable):
    if not (
        isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == 'Event loop is closed'
    ):
      hook(unraisable)

  return report


if __name__ == '__main__':
  sys.unraisablehook = _without_closed_loop_reports(sys.unraisablehook)
  sys.exit(cli.main())
