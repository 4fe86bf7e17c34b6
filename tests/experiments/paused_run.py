"""``python paused_run.py STEP ARGS...``: ``python -m experiments ARGS...``
that stops before it checkpoints step STEP.

When the run comes to save step STEP, it waits for its earlier checkpoints to
be complete, prints ``paused before the checkpoint of step STEP`` and waits
forever, so that a test kills it at a step it knows: the latest checkpoint is
the one before STEP, and the steps after it are done but not saved.
"""

import sys
import threading

import child_runs

from experiments import cli, run_directory


def _pause_before_checkpoint(step: int) -> None:
  save = run_directory.RunDirectory.save

  def save_or_pause(run, state, progress):
    if int(state.step) == step:
      run.close()  # waits for the checkpoints under way
      print(f'{child_runs.PAUSED} {step}', flush=True)
      threading.Event().wait()
    save(run, state, progress)

  run_directory.RunDirectory.save = save_or_pause


if __name__ == '__main__':
  _pause_before_checkpoint(int(sys.argv[1]))
  sys.exit(cli.main(sys.argv[2:]))
