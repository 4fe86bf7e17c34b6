"""Makes TensorFlow unimportable in a test, to show a path does not need it."""

import importlib
import importlib.abc
import sys

import pytest


class _BlockTensorFlow(importlib.abc.MetaPathFinder):
  """Makes `import tensorflow` fail, whether or not it is installed."""

  def find_spec(self, name, path, target=None):
    del path, target  # unused
    if name == 'tensorflow' or name.startswith('tensorflow.'):
      raise ModuleNotFoundError(f'No module named {name!r} (blocked)')
    return None


def block_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
  """Until the test ends, `import tensorflow` fails; skips the test if an
  earlier one imported it."""
  if 'tensorflow' in sys.modules:
    pytest.skip('TensorFlow was imported by an earlier test.')
  # A finder, not `sys.modules['tensorflow'] = None`: etils takes any entry
  # there for an imported TensorFlow.
  monkeypatch.setattr(sys, 'meta_path', [_BlockTensorFlow(), *sys.meta_path])
  with pytest.raises(ImportError):
    importlib.import_module('tensorflow')
