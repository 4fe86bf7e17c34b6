"""The training loop and the command line, end to end on digits."""

import dataclasses
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import cli
from experiments import train

QUICK = train.Config(dataset='digits', model='resnet8', batch_size=32,
                     num_epochs=2, max_steps_per_epoch=3, optimizer='adamw',
                     learning_rate=3e-3)


def _final_params(workdir):
  manager = ocp.CheckpointManager(workdir / 'checkpoints')
  restored = manager.restore(manager.latest_step())
  return restored['params']


def test_a_run_writes_metrics_and_checkpoints(tmp_path):
  history = train.train_and_evaluate(QUICK, str(tmp_path))
  assert [r['epoch'] for r in history] == [1, 2]
  assert history[-1]['step'] == 6
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(line) for line in lines] == history
  for record in history:
    assert 0 <= record['eval_accuracy'] <= 1 and np.isfinite(record['train_loss'])
  assert json.loads((tmp_path / 'config.json').read_text())['optimizer'] == 'adamw'


@pytest.mark.parametrize('optimizer', ['adaloss', 'acme'])
def test_resuming_continues_where_the_run_stopped_bit_for_bit(tmp_path, optimizer):
  config = dataclasses.replace(QUICK, optimizer=optimizer,
                               learning_rate=0.05 if optimizer == 'adaloss'
                               else 1e-3)
  straight = train.train_and_evaluate(
      dataclasses.replace(config, num_epochs=3), str(tmp_path / 'straight'))
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  resumed = train.train_and_evaluate(
      dataclasses.replace(config, num_epochs=3), str(tmp_path / 'resumed'))
  assert [r['step'] for r in resumed] == [3, 6, 9]
  assert resumed[-1]['train_loss'] == straight[-1]['train_loss']
  for a, b in zip(jax.tree.leaves(_final_params(tmp_path / 'straight')),
                  jax.tree.leaves(_final_params(tmp_path / 'resumed'))):
    np.testing.assert_array_equal(a, b)


def test_compare_writes_a_table_and_a_plot(tmp_path, capsys):
  code = cli.main(['compare', '--workdir', str(tmp_path), '--optimizers',
                   'adaloss', 'adam_prox', '--epochs', '1',
                   '--max-steps-per-epoch', '2', '--batch-size', '32'])
  assert code == 0
  table = (tmp_path / 'comparison.md').read_text()
  assert '| adaloss |' in table and '| adam_prox |' in table
  assert (tmp_path / 'comparison.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert 'test accuracy' in capsys.readouterr().out


def test_an_unknown_model_is_one_clear_error(tmp_path, capsys):
  code = cli.main(['compare', '--workdir', str(tmp_path), '--model', 'resnet7',
                   '--optimizers', 'adamw'])
  assert code == 2
  assert 'Unknown model' in capsys.readouterr().err


def test_an_unknown_optimizer_is_refused_by_the_parser(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['compare', '--optimizers', 'lion'])
  assert exit_info.value.code == 2
  assert 'lion' in capsys.readouterr().err
