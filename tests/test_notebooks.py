"""The notebooks run at their small size, and are kept without outputs.

Each notebook ends with assertions on what it computed, so a run that
completes is a run whose results hold. The kernel is this interpreter's
(ipykernel's ``python3`` spec names ``python``, which jupyter_client replaces
with ``sys.executable``); it imports this checkout, starts in a temporary
folder, and runs on one host device, as a user's kernel would.
"""

import os
import pathlib
import re
import sys

from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
import nbformat
import pytest

ROOT = pathlib.Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / 'notebooks').glob('*.ipynb'))
CELL_TIMEOUT_S = 600


def test_the_notebooks_are_found_and_listed_in_their_readme():
  assert NOTEBOOKS
  listing = (ROOT / 'notebooks' / 'README.md').read_text()
  assert [p.name for p in NOTEBOOKS if f'({p.name})' not in listing] == []


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_stripped(path):
  notebook = nbformat.read(path, as_version=4)
  for index, cell in enumerate(notebook.cells):
    if cell.cell_type == 'code':
      assert cell.outputs == [], f'cell {index} has outputs'
      assert cell.execution_count is None, f'cell {index} has a count'
    assert not cell.get('attachments'), f'cell {index} has attachments'
  assert 'widgets' not in notebook.metadata


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_small_and_its_checks_hold(path, tmp_path, monkeypatch):
  monkeypatch.setenv('OPTAX_ADAPTIVE_NOTEBOOK_SIZE', 'small')
  monkeypatch.setenv(
      'PYTHONPATH',
      os.pathsep.join(
          [str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]
      ),
  )
  # The suite's conftest asks XLA for eight host devices; a notebook is run
  # on one, as by a user.
  monkeypatch.setenv(
      'XLA_FLAGS',
      re.sub(
          r'--xla_force_host_platform_device_count=\d+',
          '',
          os.environ.get('XLA_FLAGS', ''),
      ).strip(),
  )
  # ipykernel draws figures inline unless a backend is set for matplotlib.
  monkeypatch.delenv('MPLBACKEND', raising=False)
  notebook = nbformat.read(path, as_version=4)
  notebook.cells.append(
      nbformat.v4.new_code_cell(
          'import sys, optax_adaptive\n'
          'print(sys.executable, optax_adaptive.__file__, sep="\\n")'
      )
  )
  client = NotebookClient(
      notebook,
      timeout=CELL_TIMEOUT_S,
      kernel_name='python3',
      resources={'metadata': {'path': str(tmp_path)}},
  )
  try:
    client.execute()
  except CellExecutionError as error:
    # The cell's source and its traceback, without the terminal's colours.
    message = re.sub(r'\x1b\[[0-9;]*m', '', str(error))
    pytest.fail(f'{path.name}: {message}', pytrace=False)
  kernel_executable, library = (
      notebook.cells.pop().outputs[0]['text'].splitlines()
  )
  assert kernel_executable == sys.executable
  assert pathlib.Path(library).is_relative_to(ROOT)
  figures = [
      output
      for cell in notebook.cells
      if cell.cell_type == 'code'
      for output in cell.outputs
      if 'image/png' in output.get('data', {})
  ]
  assert figures, f'{path.name} drew no figure'
