"""The stored reference runs are those their script makes, case for case.

tests/testdata/reference/regenerate.py runs the authors' PyTorch optimizers on
the cases of cases.json. What it derives without PyTorch, the case list and
each case's data and minibatches, is checked here against the stored runs, with
PyTorch unimportable; test_parity.py replays the trajectories.
"""

import importlib.util
import json
import sys

import numpy as np
import pytest
import reference_runs

SCRIPT = reference_runs.REFERENCE_DIR / 'regenerate.py'
ENTRIES = json.loads((reference_runs.REFERENCE_DIR / 'cases.json').read_text())


def _load_script():
  spec = importlib.util.spec_from_file_location('regenerate', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def script():
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(sys.modules, 'torch', None)  # any import of it fails
    module = _load_script()
    module.load_cases()
  return module


def test_each_case_has_its_run_and_each_run_its_case(script):
  names = [case.name for case in script.load_cases()]
  assert len(set(names)) == len(names) == 22
  stored = {path.stem for path in reference_runs.REFERENCE_DIR.glob('*.npz')}
  assert set(names) == stored


@pytest.mark.parametrize('name', [entry['name'] for entry in ENTRIES])
def test_the_script_makes_the_stored_data_and_shapes(script, name):
  (case,) = [case for case in script.load_cases() if case.name == name]
  with np.load(reference_runs.REFERENCE_DIR / f'{name}.npz') as stored:
    arrays = {key: stored[key] for key in stored.files}
  for key, made in script.make_data(case).items():
    np.testing.assert_array_equal(made, arrays[key], err_msg=f'{name}: {key}')
    assert made.dtype == arrays[key].dtype, key
  names = ['conv.weight', 'fc.weight']
  if case.bias:
    names += ['conv.bias', 'fc.bias']
  recorded = {'losses'}
  if case.optimizer in ('adaloss', 'acme'):
    recorded.add('scalars')
  if case.records_codes:
    recorded.add('codes')
  expected = {'X', 'y', 'batches', *recorded}
  expected |= {f'{kind}/{n}' for kind in ('init', 'traj') for n in names}
  assert set(arrays) == expected
  for key in ('batches', *recorded, *(f'traj/{n}' for n in names)):
    assert len(arrays[key]) == case.steps, key
  for n in names:
    assert arrays[f'traj/{n}'].shape[1:] == arrays[f'init/{n}'].shape, n


@pytest.mark.parametrize(
    'change, match',
    [
        (dict(optimizer='adam'), "no optimizer 'adam'"),
        (dict(hparams=dict(learning_rate=0.1)), 'hparams'),
        (dict(schedule=[0.1, 0.05]), 'a schedule of 2 rates'),
        (dict(init_scale=2.0), 'unknown fields'),
        (dict(loss_multiplier=10.0), 'adaloss scales its own loss'),
    ],
)
def test_a_case_the_script_cannot_run_is_refused(script, change, match):
  entry = dict(ENTRIES[0], **change)
  with pytest.raises(ValueError, match=match):
    script.Case.from_json(entry)
