"""No module of the experiments reaches into another's private names.

A name that starts with ``_`` is its module's own: what another module needs
is given a public name, where it belongs. The scan reads the source of
``experiments/``, ``benchmarks/`` and ``tests/experiments/`` and reports, for
the project's own modules, ``from MODULE import _NAME`` and ``MODULE._NAME``
where ``MODULE`` is a name an import bound.
"""

import ast
import pathlib

import experiments

ROOT = pathlib.Path(experiments.__file__).parent.parent
SCANNED = ('experiments', 'benchmarks', 'tests/experiments')
# The test helpers, such as run_files, are imported by their bare names.
PROJECT_PACKAGES = {'experiments', 'benchmarks'} | {
    path.stem for path in (ROOT / 'tests' / 'experiments').glob('*.py')
}


def _is_private(name: str) -> bool:
  return name.startswith('_') and not name.startswith('__')


def _is_project_module(module: str | None, level: int) -> bool:
  return level > 0 or (module or '').split('.')[0] in PROJECT_PACKAGES


def private_uses(source: str) -> list[str]:
  """Where `source` uses a private name of another project module."""
  tree = ast.parse(source)
  found = []
  imported_modules = set()  # names bound by imports of project modules
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom):
      if not _is_project_module(node.module, node.level):
        continue
      for alias in node.names:
        if _is_private(alias.name):
          found.append(
              f'line {node.lineno}: from {node.module} import {alias.name}'
          )
        imported_modules.add(alias.asname or alias.name)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if _is_project_module(alias.name, 0):
          imported_modules.add(alias.asname or alias.name.split('.')[0])
  for node in ast.walk(tree):
    if (
        isinstance(node, ast.Attribute)
        and _is_private(node.attr)
        and isinstance(node.value, ast.Name)
        and node.value.id in imported_modules
    ):
      found.append(f'line {node.lineno}: {node.value.id}.{node.attr}')
  return found


def test_the_scan_finds_both_kinds_of_use():
  source = (
      'from experiments.train import _Run\n'
      'from experiments.models import pyramidnet\n'
      'import jax\n'
      'pyramidnet._average_pool_2x2(jax._src)\n'
      'state._replace(step=1)\n'
  )
  assert private_uses(source) == [
      'line 1: from experiments.train import _Run',
      'line 4: pyramidnet._average_pool_2x2',
  ]


def test_no_module_uses_a_private_name_of_another():
  uses = {}
  for folder in SCANNED:
    for path in sorted((ROOT / folder).rglob('*.py')):
      found = private_uses(path.read_text())
      if found:
        uses[str(path.relative_to(ROOT))] = found
  assert not uses
