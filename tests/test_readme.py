"""The README's Python examples run as written, and its API table is complete."""

import pathlib
import re

import optax_adaptive

README = pathlib.Path(__file__).parent.parent / 'README.md'


def _python_blocks(text):
  return re.findall(r'```python\n(.*?)```', text, flags=re.DOTALL)


def test_readme_python_examples_run_in_order():
  namespace = {}
  blocks = _python_blocks(README.read_text())
  assert blocks
  for block in blocks:
    exec(compile(block, str(README), 'exec'), namespace)  # pylint: disable=exec-used
  # The first example trains; a loss that did not fall means a broken example.
  assert float(namespace['loss']) < 1e-3


def test_every_public_function_is_in_the_api_table():
  text = README.read_text()
  table_names = set(re.findall(r'^\| `(\w+)\(', text, flags=re.MULTILINE))
  public_functions = {n for n in optax_adaptive.__all__
                      if callable(getattr(optax_adaptive, n)) and n[0].islower()}
  assert public_functions - table_names == set()


def test_every_public_name_has_a_docstring():
  for name in optax_adaptive.__all__:
    doc = getattr(optax_adaptive, name).__doc__
    assert doc and doc.strip(), name
