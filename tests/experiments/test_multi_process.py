"""Two processes on the loopback address run as one process on two devices.

Each ``python -m experiments`` process stands for a host with one CPU device;
they connect through ``--coordinator-address 127.0.0.1:PORT``, each reads its
half of every global batch, both write every checkpoint, and process 0 alone
writes the configuration, the metrics and TensorBoard's files. Their run ends
bit for bit where one process with two host devices ends; killed mid-epoch and
resumed, where it ends uninterrupted. A process left alone, or processes given
different commands, stop with one message and write nothing.
"""

import re
import shlex
import signal
import time

import child_runs
import pytest
import run_files

from experiments import run_directory

# Two epochs of four steps of a small model on digits, evaluated after each,
# checkpointed at steps 3, 4, 6 and 8: mid-epoch and at the epochs' ends.
COMMANDS = {
    'scale-free': (
        'scale-free',
        '--train-epochs',
        '2',
        '--batchsize',
        '16',
        '--max-steps-per-epoch',
        '4',
        '--eval-interval',
        '1',
        '--checkpoint-every',
        '3',
        '--no-progress',
    ),
    'acme': (
        'acme',
        '--acme',
        '--adam',
        '--depth',
        '10',
        '--width-alpha',
        '1',
        '--batch-size',
        '16',
        '--epochs',
        '2',
        '--max-steps-per-epoch',
        '4',
        '--checkpoint-every',
        '3',
        '--no-progress',
    ),
}
FINAL_STEP = 8
NUM_PROCESSES = 2


def _start_processes(
    command, workdir, cache, *flags, pause_before_checkpoint=None, eta0=None
):
  """The processes of one run, `eta0` (if given) passed to process 1 alone."""
  port = child_runs.free_port()
  processes = []
  for index in range(NUM_PROCESSES):
    own_flags = ('--eta0', str(eta0)) if eta0 is not None and index else ()
    processes.append(
        child_runs.start(
            [
                '--coordinator-address',
                f'127.0.0.1:{port}',
                '--num-processes',
                str(NUM_PROCESSES),
                '--process-id',
                str(index),
                *COMMANDS[command],
                '--workdir',
                str(workdir),
                *flags,
                *own_flags,
            ],
            workdir,
            cache=cache / f'process_{index}',
            num_devices=1,
            log_name=f'.process_{index}',
            pause_before_checkpoint=pause_before_checkpoint,
        )
    )
  return processes


def _logs(workdir):
  return [
      child_runs.log_path(workdir, f'.process_{index}').read_text()
      for index in range(NUM_PROCESSES)
  ]


def _wait(processes, workdir):
  codes = [p.wait(timeout=child_runs.PATIENCE_SECONDS) for p in processes]
  return codes, _logs(workdir)


def _run_processes(command, workdir, cache, *flags):
  codes, logs = _wait(
      _start_processes(command, workdir, cache, *flags), workdir
  )
  assert codes == [0] * NUM_PROCESSES, logs


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp('jax_cache')


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory, cache):
  """The run of each command, in two processes of one device each."""
  runs = {}
  for command in COMMANDS:
    workdir = tmp_path_factory.mktemp(command) / 'two_processes'
    _run_processes(command, workdir, cache)
    runs[command] = workdir
  return runs


@pytest.mark.parametrize('command', list(COMMANDS))
def test_two_processes_end_where_one_process_on_two_devices_does(
    command, two_processes, cache, tmp_path
):
  one_process = tmp_path / 'one_process'
  code = child_runs.start(
      [*COMMANDS[command], '--workdir', str(one_process)],
      one_process,
      cache=cache / 'one_process',
      num_devices=2,
  ).wait(timeout=child_runs.PATIENCE_SECONDS)
  assert code == 0, child_runs.log_path(one_process).read_text()

  workdir = two_processes[command]
  assert len(run_files.records(workdir)) == 2
  run_files.assert_same_end(one_process, workdir)
  assert run_files.latest_checkpoint(workdir)[0] == FINAL_STEP
  # Both processes wrote their part of every checkpoint; process 0 alone
  # wrote TensorBoard's events.
  assert sorted(
      p.name for p in (workdir / 'checkpoints' / '8' / 'state').glob('ocdbt.*')
  ) == ['ocdbt.process_0', 'ocdbt.process_1']
  assert len(list((workdir / 'tensorboard').iterdir())) == 1
  # and says so.
  wrote = [
      log.count(f'Wrote {workdir}/metrics.jsonl') for log in _logs(workdir)
  ]
  assert wrote == [1, 0]


def test_two_processes_killed_mid_epoch_resume_to_the_uninterrupted_run(
    two_processes, cache, tmp_path
):
  command, killed = 'scale-free', tmp_path / 'killed'
  # Stopped before the checkpoint of step 4, once that of step 3 is
  # complete: the fourth step is done, and its record of the first epoch
  # written, but neither is saved.
  processes = _start_processes(
      command, killed, cache, pause_before_checkpoint=4
  )
  for index, process in enumerate(processes):
    child_runs.wait_until_paused(process, killed, f'.process_{index}')
  for process in processes:
    process.send_signal(signal.SIGKILL)
  assert [p.wait() for p in processes] == [-signal.SIGKILL] * NUM_PROCESSES
  step, checkpoint = run_files.latest_checkpoint(killed)
  assert (step, checkpoint['progress']['batch']) == (3, 3)  # mid-epoch
  assert [r['step'] for r in run_directory.read_metrics(killed)] == [4]

  _run_processes(command, killed, cache, '--resume')
  assert all('Resuming' in log for log in _logs(killed))
  run_files.assert_same_end(two_processes[command], killed)


def test_a_process_alone_gives_up_with_a_message(cache, tmp_path):
  workdir, port = tmp_path / 'run', child_runs.free_port()
  started = time.monotonic()
  process = child_runs.start(
      [
          '--coordinator-address',
          f'127.0.0.1:{port}',
          '--num-processes',
          '2',
          '--process-id',
          '0',
          '--initialization-timeout',
          '2',
          *COMMANDS['scale-free'],
          '--workdir',
          str(workdir),
      ],
      workdir,
      cache=cache / 'alone',
      num_devices=1,
  )
  # Well before JAX's own deadline, 60 s later, which would abort it.
  assert process.wait(timeout=60) == 2
  assert time.monotonic() - started < 60
  assert child_runs.log_path(workdir).read_text() == (
      'error: process 0 of 2 waited 2 s for every process to connect to the '
      f'coordinator 127.0.0.1:{port} and gave up: start the same command on '
      'every host, each with its own --process-id, or raise '
      '--initialization-timeout.\n'
  )
  assert not workdir.exists()


def test_processes_given_different_commands_are_both_refused(cache, tmp_path):
  workdir = tmp_path / 'run'
  processes = _start_processes('scale-free', workdir, cache, eta0=0.002)
  codes, logs = _wait(processes, workdir)
  assert codes == [2] * NUM_PROCESSES, logs
  for log in logs:
    assert log.endswith(
        'error: The processes were given different commands: the '
        'configuration or working directory of process 1 differs from '
        "process 0's. Start the same command on every host (but for "
        '--process-id).\n'
    )
  assert not workdir.exists()


def test_the_readme_shows_the_tested_command():
  readme = (child_runs.ROOT / 'experiments' / 'README.md').read_text()
  [loop] = re.findall(r'for id in 0 1; do\n(.*?)\ndone', readme, re.DOTALL)
  words = shlex.split(loop.replace('\\\n', ' '))
  assert words == [
      'python',
      '-m',
      'experiments',
      '--coordinator-address',
      '127.0.0.1:12355',
      '--num-processes',
      str(NUM_PROCESSES),
      '--process-id',
      '$id',
      *COMMANDS['scale-free'],
      '--workdir',
      'runs/two_hosts',
      '&',
  ]
