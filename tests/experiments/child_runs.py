"""``python -m experiments`` in child processes, for the tests.

A child runs the code under test (PYTHONPATH) on as many host CPU devices as it
is given, whatever the suite forces in its own process, and logs its output
into a file beside its working directory. Children given the same cache folder
share compiled programs, compiling being most of their work.

:func:`start` with ``pause_before_checkpoint=STEP`` runs ``paused_run.py``
instead of ``python -m experiments``: the run stops, alive, before it
checkpoints step STEP and prints :data:`PAUSED`, so that a test kills it at a
known point rather than at a moment of the wall clock.

:func:`interrupt_after_progress` presses Ctrl-C in a run once it trains, and
:func:`resume` runs the same command again with ``--resume``.
"""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import experiments

ROOT = pathlib.Path(experiments.__file__).parent.parent
PAUSED = 'paused before the checkpoint of step'
# Only a child that hangs takes this long.
PATIENCE_SECONDS = 600
_DEVICES_FLAG = re.compile(r'--xla_force_host_platform_device_count=\d+')


def environment(cache: pathlib.Path, num_devices: int) -> dict[str, str]:
  """The environment of a child on `num_devices` host CPU devices."""
  env = dict(os.environ)
  flags = _DEVICES_FLAG.sub('', env.get('XLA_FLAGS', ''))
  env['XLA_FLAGS'] = (
      f'{flags} --xla_force_host_platform_device_count={num_devices}'.strip()
  )
  env['JAX_PLATFORMS'] = 'cpu'
  env['JAX_COMPILATION_CACHE_DIR'] = str(cache)
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (str(ROOT), env.get('PYTHONPATH')) if p
  )
  return env


def free_port() -> int:
  """A TCP port of the loopback address that no one listens on now."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def log_path(workdir: pathlib.Path, name: str = '') -> pathlib.Path:
  return workdir.parent / f'{workdir.name}{name}.log'


def start(
    argv: list[str],
    workdir: pathlib.Path,
    *,
    cache: pathlib.Path,
    num_devices: int,
    log_name: str = '',
    pause_before_checkpoint: int | None = None,
) -> subprocess.Popen:
  """``python -m experiments ARGV``, its output appended to its log."""
  if pause_before_checkpoint is None:
    program = ['-m', 'experiments']
  else:
    program = [
        str(pathlib.Path(__file__).with_name('paused_run.py')),
        str(pause_before_checkpoint),
    ]
  log = log_path(workdir, log_name).open('ab')
  try:
    return subprocess.Popen(
        [sys.executable, *program, *argv],
        env=environment(cache, num_devices),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
  finally:
    log.close()


def wait_until_paused(
    process: subprocess.Popen, workdir: pathlib.Path, log_name: str = ''
) -> None:
  """Returns once the child of `workdir` has printed :data:`PAUSED`."""
  deadline = time.monotonic() + PATIENCE_SECONDS
  log = log_path(workdir, log_name)
  while PAUSED not in log.read_text():
    assert process.poll() is None, log.read_text()
    assert time.monotonic() < deadline, log.read_text()
    time.sleep(0.05)


def _interrupting_environment() -> dict[str, str]:
  # A progress line after every step, so that the test knows training runs.
  return {
      **os.environ,
      'PYTHONPATH': str(ROOT),
      'EXPERIMENTS_PROGRESS_SECONDS': '0',
  }


def interrupt_after_progress(argv: list[str]) -> tuple[int, str, int]:
  """Runs ``python -m experiments ARGV``, its output a pipe, and sends it
  SIGINT (Ctrl-C) after its first progress line.

  Returns:
    The exit status, the whole output (stdout and stderr), and the step that
    the output's last line, if it is the interrupted run's line, names (-1
    if not).
  """
  run = subprocess.Popen(
      [sys.executable, '-m', 'experiments', *argv],
      cwd=ROOT,
      env=_interrupting_environment(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  lines = []
  for line in run.stdout:
    lines.append(line)
    if re.match(r'step \d+/~?\d+, ', line):
      break
  run.send_signal(signal.SIGINT)
  output = ''.join(lines) + run.communicate(timeout=PATIENCE_SECONDS)[0]
  last = output.splitlines()[-1] if output else ''
  match = re.fullmatch(
      r'interrupted at step (\d+); resume with the same command and --resume',
      last,
  )
  return run.returncode, output, int(match[1]) if match else -1


def resume(argv: list[str], max_steps: int) -> str:
  """Runs ``python -m experiments ARGV --resume --max-steps MAX_STEPS`` to
  its end; its stderr."""
  return subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments',
          *argv,
          '--resume',
          '--max-steps',
          str(max_steps),
      ],
      cwd=ROOT,
      env=_interrupting_environment(),
      capture_output=True,
      text=True,
      timeout=PATIENCE_SECONDS,
      check=True,
  ).stderr
