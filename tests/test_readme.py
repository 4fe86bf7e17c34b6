"""The README's Python examples run as written and its API table is complete."""

import pathlib
import re

import jax

import optax_adaptive

README = pathlib.Path(__file__).parent.parent / 'README.md'


def _python_blocks(text):
  return re.findall(r'```python\n(.*?)```', text, flags=re.DOTALL)


def test_readme_python_examples_run_in_order():
  namespace = {}
  blocks = _python_blocks(README.read_text())
  final_losses = []
  for block in blocks:
    exec(compile(block, str(README), 'exec'), namespace)  # pylint: disable=exec-used
    if 'for _ in range' in block:
      final_losses.append(float(namespace['loss']))
  # Two examples train (the jitted step, ACME with NNX) from losses near 3; a
  # loss that did not fall means a broken example.
  assert len(final_losses) == 2
  assert final_losses[0] < 1e-3 and final_losses[1] < 0.05


def test_the_training_step_trains_with_every_method_listed(capsys):
  first, alternatives = _python_blocks(README.read_text())[:2]
  tx_lines = [
      line for line in alternatives.splitlines() if line.startswith('tx =')
  ]
  assert len(tx_lines) >= 8
  for tx_line in tx_lines:
    namespace = {}
    # The first block, its last line included, with its optimizer replaced
    # by this line: pasted as the README says.
    code = first.replace(first.splitlines()[5], tx_line)
    exec(compile(code, str(README), 'exec'), namespace)  # pylint: disable=exec-used
    assert capsys.readouterr().out.startswith('loss '), tx_line
    initial = float(
        namespace['loss_fn'](
            {'w': jax.numpy.zeros((3, 1)), 'b': jax.numpy.zeros(1)},
            namespace['x'],
            namespace['y'],
        )
    )
    assert float(namespace['loss']) < 0.1 * initial, tx_line


def test_the_nnx_acme_example_runs_on_its_own(capsys):
  (nnx_block,) = [b for b in _python_blocks(README.read_text()) if 'nnx' in b]
  exec(compile(nnx_block, str(README), 'exec'), {})  # pylint: disable=exec-used
  assert 'adapted rate' in capsys.readouterr().out


def test_every_public_function_is_in_the_api_table():
  text = README.read_text()
  table_names = set(re.findall(r'^\| `(\w+)\(', text, flags=re.MULTILINE))
  public_functions = {
      n
      for n in optax_adaptive.__all__
      if callable(getattr(optax_adaptive, n)) and n[0].islower()
  }
  assert public_functions - table_names == set()


def test_every_public_name_has_a_docstring():
  for name in optax_adaptive.__all__:
    doc = getattr(optax_adaptive, name).__doc__
    assert doc and doc.strip(), name
