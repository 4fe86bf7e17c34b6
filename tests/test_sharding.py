"""Runs ``sharding_cases.py`` on eight host CPU devices, in a child process.

The child forces its devices whatever this process has, so the cases run, and
none is skipped, on a CPU-only machine and on a one-GPU host alike.
"""

import os
import pathlib
import re
import subprocess
import sys

import sharding_cases
import test_common

_CASES = pathlib.Path(sharding_cases.__file__)
_DEVICES_FLAG = re.compile(r'--xla_force_host_platform_device_count=\d+')
# Each optimizer, data-parallel and FSDP, under automatic and explicit axes.
_NUM_CASES = len(test_common.OPTIMIZERS) * 2 * 2


def test_every_sharding_case_passes_on_eight_host_devices():
  env = dict(os.environ)
  flags = _DEVICES_FLAG.sub('', env.get('XLA_FLAGS', ''))
  env['XLA_FLAGS'] = (
      f'{flags} --xla_force_host_platform_device_count='
      f'{sharding_cases.NUM_DEVICES}'
  ).strip()
  env['JAX_PLATFORMS'] = 'cpu'
  result = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:randomly', str(_CASES)],
      cwd=_CASES.parent.parent,
      env=env,
      capture_output=True,
      text=True,
      check=False,
  )
  summary = result.stdout.strip().splitlines()[-1] if result.stdout else ''
  assert result.returncode == 0, result.stdout + result.stderr
  assert re.match(rf'{_NUM_CASES} passed in ', summary), summary
