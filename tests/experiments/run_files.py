"""Reading what a training run wrote to its working directory, for the tests."""

import pathlib
from typing import Any

import orbax.checkpoint as ocp


def latest_checkpoint(workdir: pathlib.Path) -> tuple[int, Any]:
  """The step of the run's latest checkpoint and the checkpoint, as saved."""
  manager = ocp.CheckpointManager(workdir / 'checkpoints')
  step = manager.latest_step()
  restored = manager.restore(step)
  manager.close()
  return step, restored
