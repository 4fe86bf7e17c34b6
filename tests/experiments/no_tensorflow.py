"""Runs code where TensorFlow cannot be imported: a path that does not need it.

The code runs in a fresh interpreter, which has not imported TensorFlow
whatever the tests before did, so the check never depends on their order.
Every import finder is made blind to TensorFlow, as if it were not installed;
not ``sys.modules['tensorflow'] = None``, which etils takes for an imported
TensorFlow.
"""

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import experiments

_ROOT = pathlib.Path(experiments.__file__).parent.parent
_BLIND_TO_TENSORFLOW = """
import importlib, importlib.abc, sys


class WithoutTensorFlow(importlib.abc.MetaPathFinder):

  def __init__(self, finder):
    self.finder = finder

  def find_spec(self, name, path, target=None):
    if name == 'tensorflow' or name.startswith('tensorflow.'):
      return None
    return self.finder.find_spec(name, path, target)


sys.meta_path[:] = [WithoutTensorFlow(finder) for finder in sys.meta_path]
try:
  importlib.import_module('tensorflow')
  sys.exit('TensorFlow was not blocked.')
except ImportError:
  pass
"""
_REPORT = """
print(json.dumps({
    'result': result,
    'tensorflow_imported': 'tensorflow' in sys.modules,
}))
"""


def run(script: str, *args: str) -> Any:
  """Runs `script` in a fresh interpreter without TensorFlow.

  Args:
    script: Python code that sets ``result`` to something JSON can write; it
      reads `args` as ``sys.argv[1:]`` and may import the experiments and the
      test helpers beside this file.
    *args: its command-line arguments.

  Returns:
    ``result``, once the test has checked that the script ran to its end and
    imported no TensorFlow.
  """
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      p
      for p in (
          str(_ROOT),
          str(pathlib.Path(__file__).parent),
          env.get('PYTHONPATH'),
      )
      if p
  )
  program = _BLIND_TO_TENSORFLOW + 'import json\n' + script + _REPORT
  finished = subprocess.run(
      [sys.executable, '-c', program, *args],
      env=env,
      capture_output=True,
      text=True,
      check=False,
  )
  assert finished.returncode == 0, finished.stderr
  report = json.loads(finished.stdout.splitlines()[-1])
  assert not report['tensorflow_imported']
  return report['result']
