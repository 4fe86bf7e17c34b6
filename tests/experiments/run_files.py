"""Reading what a training run wrote to its working directory, for the tests."""

import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments import run_directory


def latest_checkpoint(workdir: pathlib.Path) -> tuple[int, Any]:
  """The step of the run's latest checkpoint and the checkpoint, as saved.

  The arrays come back on this process's first device, whatever devices and
  processes saved them.
  """
  manager = ocp.CheckpointManager(
      workdir / 'checkpoints',
      item_handlers={
          'state': ocp.StandardCheckpointHandler(),
          'progress': ocp.JsonCheckpointHandler(),
      },
  )
  step = manager.latest_step()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  on_device = jax.tree.map(
      lambda saved: jax.ShapeDtypeStruct(
          saved.shape, saved.dtype, sharding=device
      ),
      manager.item_metadata(step)['state'],
  )
  restored = manager.restore(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(on_device),
          progress=ocp.args.JsonRestore(),
      ),
  )
  manager.close()
  return step, restored


def records(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """The run's metrics records, without their wall-clock time."""
  return [
      {k: v for k, v in record.items() if k != 'seconds'}
      for record in run_directory.read_metrics(workdir)
  ]


def assert_same_end(expected: pathlib.Path, got: pathlib.Path) -> None:
  """Asserts that the run in `got` ended where the one in `expected` did, bit
  for bit: the same records, latest checkpoint, state and data position."""
  assert records(got) == records(expected)
  (expected_step, expected_checkpoint), (got_step, got_checkpoint) = (
      latest_checkpoint(w) for w in (expected, got)
  )
  assert got_step == expected_step
  assert (
      got_checkpoint['progress']['data']
      == expected_checkpoint['progress']['data']
  )
  for a, b in zip(
      jax.tree.leaves(expected_checkpoint['state']),
      jax.tree.leaves(got_checkpoint['state']),
      strict=True,
  ):
    np.testing.assert_array_equal(a, b)
