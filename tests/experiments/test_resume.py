"""Runs that die mid-epoch resume to the parameters of an uninterrupted run.

A real ``python -m experiments`` process is killed with SIGKILL at a step it
announces, with steps done since its last checkpoint, and resumed with
``--resume`` in a new process; checkpoints that a death mid-save leaves half
written are passed over; a damaged complete one stops the resume with one
message until it is moved away. Each time the run ends bit for bit where the
uninterrupted one does.
"""

import pathlib
import shutil
import signal

import child_runs
import orbax.checkpoint as ocp
import pytest
import run_files

from experiments import cli

# An MLP on digits, 2 epochs of 20 steps, checkpointed every 5 steps and at
# each evaluation (steps 20 and 40), the last three kept: a cheap run that
# checkpoints mid-epoch, evaluates and crosses an epoch.
COMMAND = (
    'adaloss',
    '--model',
    'mlp',
    '--bs',
    '8',
    '--ep',
    '2',
    '--max-steps-per-epoch',
    '20',
    '--checkpoint-every',
    '5',
    '--no-progress',
)
FINAL_STEP = 40
TMP_SUFFIX = ocp.path.atomicity.TMP_DIR_SUFFIX
# Two devices keep the batch split over devices at a fraction of the compile
# time of the suite's eight.
_NUM_DEVICES = 2


def _start(workdir: pathlib.Path, *flags: str, pause_before_checkpoint=None):
  """``python -m experiments COMMAND`` into `workdir`, logged beside it."""
  return child_runs.start(
      [*COMMAND, '--workdir', str(workdir), *flags],
      workdir,
      cache=workdir.parent / 'jax_cache',
      num_devices=_NUM_DEVICES,
      pause_before_checkpoint=pause_before_checkpoint,
  )


def _log(workdir: pathlib.Path) -> str:
  return child_runs.log_path(workdir).read_text()


def _run(workdir: pathlib.Path, *flags: str) -> None:
  code = _start(workdir, *flags).wait(timeout=child_runs.PATIENCE_SECONDS)
  assert code == 0, _log(workdir)


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_parameters(
    tmp_path,
):
  straight, killed = tmp_path / 'straight', tmp_path / 'killed'
  _run(straight)

  # Stopped before its checkpoint of step 10, once that of step 5 is
  # complete: steps 6 to 10 are done but not saved.
  process = _start(killed, pause_before_checkpoint=10)
  child_runs.wait_until_paused(process, killed)
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL
  step, checkpoint = run_files.latest_checkpoint(killed)
  assert (step, checkpoint['progress']['batch']) == (5, 5)  # mid-epoch

  _run(killed, '--resume')
  assert 'Resuming' in _log(killed)
  run_files.assert_same_end(straight, killed)


@pytest.fixture(scope='module')
def finished(tmp_path_factory) -> pathlib.Path:
  """The run of COMMAND, in this process."""
  workdir = tmp_path_factory.mktemp('finished') / 'run'
  assert cli.main([*COMMAND, '--workdir', str(workdir)]) == 0
  steps = ocp.utils.checkpoint_steps(workdir / 'checkpoints')
  assert sorted(steps) == [30, 35, 40]
  return workdir


def _truncate_files(folder: pathlib.Path) -> None:
  for path in folder.rglob('*'):
    if path.is_file():
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _killed_while_writing(step_dir: pathlib.Path) -> None:
  """What Orbax leaves of a save killed midway: a temporary folder, half
  written, without the commit marker it writes last."""
  tmp = step_dir.rename(step_dir.with_name(step_dir.name + TMP_SUFFIX))
  for marker in tmp.rglob(ocp.path.atomicity.COMMIT_SUCCESS_FILE):
    marker.unlink()
  _truncate_files(tmp)


def _killed_before_the_rename(step_dir: pathlib.Path) -> None:
  """What Orbax leaves of a save killed after it wrote everything but before
  it renamed the temporary folder."""
  step_dir.rename(step_dir.with_name(step_dir.name + TMP_SUFFIX))


@pytest.mark.parametrize(
    'tear',
    [_killed_while_writing, _killed_before_the_rename],
    ids=lambda tear: tear.__name__.lstrip('_'),
)
def test_a_checkpoint_torn_by_a_death_mid_save_is_passed_over(
    finished, tmp_path, tear, caplog
):
  # The last save torn as a death mid-save tears it. The record of step 40,
  # written before that save, is on disk too, as it would be.
  torn = tmp_path / 'run'
  shutil.copytree(finished, torn)
  tear(torn / 'checkpoints' / str(FINAL_STEP))
  assert sorted(ocp.utils.checkpoint_steps(torn / 'checkpoints')) == [30, 35]

  assert cli.main([*COMMAND, '--workdir', str(torn), '--resume']) == 0
  assert 'from step 35' in caplog.text
  assert sorted(p.name for p in (torn / 'checkpoints').iterdir()) == [
      '30',
      '35',
      '40',
  ]  # the temporary folder removed
  run_files.assert_same_end(finished, torn)


def test_a_damaged_checkpoint_stops_the_resume_until_it_is_moved_away(
    finished, tmp_path
):
  damaged = tmp_path / 'run'
  shutil.copytree(finished, damaged)
  latest = damaged / 'checkpoints' / str(FINAL_STEP)
  # Its arrays' data, not its metadata: their reads fail, concurrently.
  for data in (latest / 'state').rglob('d'):
    _truncate_files(data)
  outputs = {
      p: (p.stat().st_mtime_ns, p.read_bytes())
      for p in damaged.rglob('*')
      if p.is_file()
  }

  process = _start(damaged, '--resume')
  assert process.wait(timeout=child_runs.PATIENCE_SECONDS) == 2
  # One message, after the lines announcing the step's compilation (the
  # memory check compiles it before the checkpoint is read).
  message = ''.join(
      line
      for line in _log(damaged).splitlines(keepends=True)
      if not line.startswith(('Compiling the training step', 'Compiled the'))
  )
  assert (
      message.startswith(
          f'error: Cannot restore the checkpoint of step {FINAL_STEP} in '
          f'{latest.parent} (ValueError: '
      )
      and message.count('\n') == 1
  )
  assert message.endswith(
      f'move {latest} out of {latest.parent} to resume from the one before.\n'
  )
  assert {
      p: (p.stat().st_mtime_ns, p.read_bytes())
      for p in damaged.rglob('*')
      if p.is_file()
  } == outputs

  latest.rename(tmp_path / 'damaged_checkpoint')
  assert cli.main([*COMMAND, '--workdir', str(damaged), '--resume']) == 0
  run_files.assert_same_end(finished, damaged)
