"""`python -m experiments adaloss-table`: the grid, its resumption, its table.

One tiny grid (two methods x two b0 x two seeds, one epoch of two steps of the
`mlp` model on digits) runs once through the command line; the tests read its
folders. SGD-Constant at b0 = 1e-12 takes steps of eta / b0 = 1e11, so its runs
diverge.
"""

import dataclasses
import math
import pathlib
from unittest import mock

import numpy as np
import pytest

from experiments import adaloss_table, cli, run_directory, train

PNG = b'\x89PNG\r\n\x1a\n'
B0S = (1e-12, 1.0)
METHODS = ('adaloss', 'sgd_constant')
SEEDS = (0, 1)
FLAGS = [
    'adaloss-table',
    '--dataset',
    'digits',
    '--model',
    'mlp',
    '--b0',
    '1e-12',
    '1',
    '--optimizers',
    *METHODS,
    '--seeds',
    '2',
    '--epochs',
    '1',
    '--max-steps-per-epoch',
    '2',
    '--batch-size',
    '64',
    '--no-progress',
]
INTERRUPTED = ('adaloss', 1.0, 0)


def _flags(workdir, *more):
  return [*FLAGS, '--workdir', str(workdir), *more]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """The folder of the grid, run once; one of its runs was interrupted first."""
  folder = tmp_path_factory.mktemp('adaloss_table')
  grid, _ = adaloss_table.grid_from_args(
      cli.build_parser().parse_args(_flags(folder))
  )
  # One step of one run, checkpointed as an interrupted run leaves it.
  config = dataclasses.replace(grid.config(*INTERRUPTED), max_steps=1)
  train.train_and_evaluate(
      config, str(adaloss_table.run_dir(folder, *INTERRUPTED))
  )
  assert cli.main(_flags(folder)) == 0
  return folder


def _history(workdir, method, b0, seed):
  return run_directory.read_metrics(
      adaloss_table.run_dir(workdir, method, b0, seed)
  )


def _diverged(record) -> bool:
  return any(
      k.endswith('_loss') and not math.isfinite(v) for k, v in record.items()
  )


def _table_rows(path: pathlib.Path) -> list[list[str]]:
  return [
      [cell.strip() for cell in line.strip('|').split('|')]
      for line in path.read_text().splitlines()
      if line.startswith('|')
  ]


def test_table_layout_and_numbers_come_from_the_runs(workdir):
  header, rule, *rows = _table_rows(workdir / 'table.md')
  assert header == ['method', 'b0 = 1e-12', 'b0 = 1']
  assert rule == ['---', '---:', '---:']
  assert [row[0] for row in rows] == ['AdaLoss', 'SGD_Constant']
  for method, row in zip(METHODS, rows):
    for b0, cell in zip(B0S, row[1:]):
      finals = [_history(workdir, method, b0, seed)[-1] for seed in SEEDS]
      assert [r['step'] for r in finals] == [2, 2]
      if any(_diverged(r) for r in finals):
        assert cell == 'N/A'
        continue
      percent = 100 * np.array([r['test_accuracy'] for r in finals])
      assert cell == f'{percent.mean():.2f} ± {percent.std(ddof=1):.2f}'


def test_a_diverged_cell_is_na_and_listed(workdir):
  rows = {row[0]: row[1:] for row in _table_rows(workdir / 'table.md')[2:]}
  assert rows['SGD_Constant'][0] == 'N/A'
  assert 'N/A' not in rows['AdaLoss'] + rows['SGD_Constant'][1:]
  for seed in SEEDS:
    assert _diverged(_history(workdir, 'sgd_constant', 1e-12, seed)[-1])
  assert (
      'N/A: the loss became NaN or infinite: SGD_Constant at b0 = 1e-12 '
      '(seed 0, 1).'
  ) in (workdir / 'table.md').read_text()


def test_the_plot_is_written(workdir):
  assert (workdir / 'table.png').read_bytes().startswith(PNG)


def test_an_interrupted_run_resumes_from_its_checkpoint(workdir):
  # The one-step run's record stays: the run went on from its checkpoint.
  assert [r['step'] for r in _history(workdir, *INTERRUPTED)] == [1, 2]
  assert [r['step'] for r in _history(workdir, 'adaloss', 1.0, 1)] == [2]


def test_a_second_call_trains_nothing_and_writes_the_same_table(workdir):
  runs = [p for p in workdir.rglob('*') if p.is_file() and p.parent != workdir]
  before = {p: p.stat().st_mtime_ns for p in runs}
  table = (workdir / 'table.md').read_text()
  with mock.patch.object(
      train, 'train_and_evaluate', side_effect=AssertionError('trained again')
  ):
    assert cli.main(_flags(workdir)) == 0
  assert {p: p.stat().st_mtime_ns for p in runs} == before
  assert (workdir / 'table.md').read_text() == table


def test_a_folder_with_other_settings_is_refused(workdir, capsys):
  assert cli.main(_flags(workdir, '--epochs', '2')) == 2
  assert (
      'holds a run with other settings (num_epochs)' in capsys.readouterr().err
  )


def test_the_paper_settings():
  grid, workdir = adaloss_table.grid_from_args(
      cli.build_parser().parse_args(['adaloss-table', '--model', 'vit_s16'])
  )
  assert workdir == pathlib.Path('runs/adaloss_table/cifar100/vit_s16')
  assert (grid.b0s, grid.methods, grid.seeds) == (
      (0.01, 0.1, 1.0, 10.0, 100.0),
      ('adaloss', 'adagrad_norm', 'sgd_constant', 'sgd_decay_sqrt'),
      (0, 1, 2),
  )
  config = grid.config('adaloss', 0.01, seed=2)
  assert (config.model, config.image_size, config.pretrained) == (
      'vit_s16',
      224,
      'timm:vit_small_patch16_224.augreg_in21k_ft_in1k',
  )
  assert (config.dataset, config.train_split, config.eval_splits) == (
      'cifar100',
      'train45k',
      ('val5k', 'test'),
  )
  assert (
      config.learning_rate,
      config.batch_size,
      config.num_epochs,
      config.seed,
  ) == (0.1, 64, 10, 2)
  assert config.optimizer_kwargs == {
      'b0': 0.01,
      'alpha': 1.0,
      'c': 0.0,
      'weight_decay': 1e-4,
  }
  assert grid.config('adagrad_norm', 10.0, 0).optimizer_kwargs == {
      'b0': 10.0,
      'weight_decay': 1e-4,
  }
  resnet, _ = adaloss_table.grid_from_args(
      cli.build_parser().parse_args(
          ['adaloss-table', '--model', 'resnet50', '--pretrained', 'none']
      )
  )
  assert resnet.config('sgd_constant', 1.0, 0).pretrained is None
  assert resnet.config('sgd_constant', 1.0, 0).image_size == 224
