"""Reading what a training run wrote into its working directory, for the tests."""

import json
import pathlib
from typing import Any

import orbax.checkpoint as ocp


def records(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """The run's metrics records, in order."""
  return [json.loads(line) for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()]


def latest_checkpoint(workdir: pathlib.Path) -> tuple[int, Any]:
  """The step of the run's latest checkpoint and the checkpoint, as saved."""
  manager = ocp.CheckpointManager(workdir / 'checkpoints')
  step = manager.latest_step()
  restored = manager.restore(step)
  manager.close()
  return step, restored
