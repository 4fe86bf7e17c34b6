"""Runs that die mid-epoch resume to the parameters of an uninterrupted run.

A real ``python -m experiments`` process is killed with SIGKILL once it has
checkpointed and resumed with ``--resume`` in a new process; checkpoints that
a death mid-save leaves half written are passed over; a damaged complete one
stops the resume with one message until it is moved away. Each time the run
ends bit for bit where the uninterrupted one does.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import experiments
from experiments import cli, run_directory

ROOT = pathlib.Path(experiments.__file__).parent.parent
# An MLP on digits, 2 epochs of 20 steps, checkpointed every 5 steps and at
# each evaluation (steps 20 and 40), the last three kept: a cheap run that
# checkpoints mid-epoch, evaluates and crosses an epoch. Three mid-epoch
# checkpoints come before the first one at an epoch's end, so a kill that
# lands a little late on a loaded machine still finds a mid-epoch one.
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
_DEVICES_FLAG = re.compile(r'--xla_force_host_platform_device_count=\d+')
# Only a process that hangs takes this long.
_PATIENCE_SECONDS = 600


def _environment(cache: pathlib.Path) -> dict[str, str]:
  """The test's environment for a child process, on two CPU devices.

  The suite forces eight host devices through XLA_FLAGS; two keep the batch
  split over devices at a fraction of the compile time. The children share a
  compilation cache, compiling being most of their work; PYTHONPATH makes
  them import the code under test.
  """
  env = dict(os.environ)
  flags = _DEVICES_FLAG.sub('', env.get('XLA_FLAGS', ''))
  env['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count=2'.strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env['JAX_COMPILATION_CACHE_DIR'] = str(cache)
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (str(ROOT), env.get('PYTHONPATH')) if p
  )
  return env


def _start(workdir: pathlib.Path, *flags: str) -> subprocess.Popen:
  """``python -m experiments COMMAND`` into `workdir`, logged beside it."""
  log = (workdir.parent / f'{workdir.name}.log').open('ab')
  try:
    return subprocess.Popen(
        [
            sys.executable,
            '-m',
            'experiments',
            *COMMAND,
            '--workdir',
            str(workdir),
            *flags,
        ],
        env=_environment(workdir.parent / 'jax_cache'),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
  finally:
    log.close()


def _log(workdir: pathlib.Path) -> str:
  return (workdir.parent / f'{workdir.name}.log').read_text()


def _run(workdir: pathlib.Path, *flags: str) -> None:
  code = _start(workdir, *flags).wait(timeout=_PATIENCE_SECONDS)
  assert code == 0, _log(workdir)


def _checkpoint(workdir: pathlib.Path):
  """The latest checkpoint of `workdir`, as saved."""
  manager = ocp.CheckpointManager(workdir / 'checkpoints')
  restored = manager.restore(manager.latest_step())
  manager.close()
  return restored


def _records(workdir: pathlib.Path) -> list[dict]:
  """The metrics records, without their wall-clock time."""
  return [
      {k: v for k, v in record.items() if k != 'seconds'}
      for record in run_directory.read_metrics(workdir)
  ]


def _assert_same_end(expected: pathlib.Path, resumed: pathlib.Path) -> None:
  assert _records(resumed) == _records(expected)
  expected, resumed = (_checkpoint(w) for w in (expected, resumed))
  assert resumed['progress']['data'] == expected['progress']['data']
  for a, b in zip(
      jax.tree.leaves(expected['state']),
      jax.tree.leaves(resumed['state']),
      strict=True,
  ):
    np.testing.assert_array_equal(a, b)


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_parameters(
    tmp_path,
):
  straight, killed = tmp_path / 'straight', tmp_path / 'killed'
  _run(straight)

  checkpoints = killed / 'checkpoints'
  process = _start(killed)
  deadline = time.monotonic() + _PATIENCE_SECONDS
  # Killed as soon as a checkpoint is complete, early in the first epoch;
  # the next may be half written.
  while not ocp.utils.checkpoint_steps(checkpoints):
    assert process.poll() is None, _log(killed)
    assert time.monotonic() < deadline
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL
  assert (
      max(ocp.utils.checkpoint_steps(checkpoints)) < FINAL_STEP
  ), 'the run finished before it was killed'
  assert _checkpoint(killed)['progress']['batch'] > 0  # mid-epoch

  _run(killed, '--resume')
  assert 'Resuming' in _log(killed)
  _assert_same_end(straight, killed)


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
  _assert_same_end(finished, torn)


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
  assert process.wait(timeout=_PATIENCE_SECONDS) == 2
  message = _log(damaged)
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
  _assert_same_end(finished, damaged)
