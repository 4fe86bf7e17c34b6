"""The training loop and every command of `python -m experiments`, end to end.

Runs are a few steps of a tiny CNN (a convolution, BatchNorm, dropout and a
classifier) on digits, on the test session's eight host devices: the loop is
what is tested here, the papers' models are tested in test_models.py.
"""

import dataclasses
import json
import math
import pathlib
import shlex

import cifar_archives
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import run_files

from experiments import cli, models, optimizers, run_directory, train
from experiments.configs import adaloss as adaloss_config
from experiments.configs import default
from experiments.configs import scale_free as scale_free_config
import optax_adaptive

PNG = b'\x89PNG\r\n\x1a\n'


class TinyCNN(nnx.Module):
  """A 4x4-strided convolution, BatchNorm, ReLU, pooling, dropout, a head."""

  def __init__(
      self,
      *,
      num_classes: int,
      rngs: nnx.Rngs,
      batch_norm: bool = True,
      dropout_rate: float = 0.1,
      **family_arguments,
  ):
    # The papers' depth/width flags: this model has one size.
    del family_arguments
    self.conv = nnx.Conv(3, 8, (4, 4), strides=(4, 4), rngs=rngs)
    self.norm = nnx.BatchNorm(8, rngs=rngs) if batch_norm else None
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.head = nnx.Linear(8, num_classes, rngs=rngs)

  def __call__(self, images):
    x = self.conv(images)
    if self.norm is not None:
      x = self.norm(x)
    x = nnx.relu(x).mean(axis=(1, 2))
    return self.head(self.dropout(x))


@pytest.fixture(autouse=True)
def tiny_models(monkeypatch):
  """The tiny CNN under its own name and under the papers' model names."""
  monkeypatch.setitem(models.MODELS, 'tiny_cnn', TinyCNN)
  monkeypatch.setitem(models.MODELS, 'wrn16_8', TinyCNN)
  monkeypatch.setitem(scale_free_config.MODELS, 'ResNet20', 'tiny_cnn')


QUICK = default.get_config(
    model='tiny_cnn',
    batch_size=32,
    num_epochs=2,
    max_steps_per_epoch=3,
    optimizer='adamw',
    learning_rate=3e-3,
    optimizer_kwargs={'weight_decay': 1e-2},
    progress_bar=False,
)


def test_a_run_writes_metrics_tensorboard_checkpoints_and_stats(tmp_path):
  config = dataclasses.replace(QUICK, store_stats=True, store_stats_interval=2)
  history = train.train_and_evaluate(config, str(tmp_path))

  assert [(r['epoch'], r['step']) for r in history] == [(1.0, 3), (2.0, 6)]
  assert run_directory.read_metrics(tmp_path) == history
  for record in history:
    assert 0 <= record['test_accuracy'] <= 1
    assert math.isfinite(record['train_loss'])
    assert record['learning_rate'] == pytest.approx(3e-3)
    # AdamW's decay, weight_decay * lr_t / lr_0, with a constant rate.
    assert record['weight_decay_coefficient'] == pytest.approx(1e-2)
  assert json.loads((tmp_path / 'config.json').read_text())['model'] == (
      'tiny_cnn'
  )
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))

  step, restored = run_files.latest_checkpoint(tmp_path)
  assert step == 6 and restored['progress']['epoch'] == 2
  # Batches 0 and 2 of each 3-step epoch: steps 1, 3, 4 and 6.
  stats = sorted(p.name for p in (tmp_path / 'stats').iterdir())
  assert stats == [f'step_{s:08d}.npz' for s in (1, 3, 4, 6)]
  arrays = np.load(tmp_path / 'stats' / 'step_00000004.npz')
  assert int(arrays['epoch']) == 1
  kernel = arrays['parameter/conv/kernel']
  assert kernel.shape == (4, 4, 3, 8)
  assert arrays['gradient/conv/kernel'].shape == kernel.shape
  assert np.all(np.isfinite(arrays['update/head/bias']))


def test_evaluation_masks_the_padding_of_the_last_batch():
  graphdef, state, _ = train.create_train_state(QUICK, 1)
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  full = {'image': images, 'label': jnp.arange(4), 'mask': jnp.ones(4, bool)}
  padded = {
      'image': images.at[3].set(0.0),
      'label': jnp.arange(4),
      'mask': jnp.array([True, True, True, False]),
  }
  three = jax.tree.map(lambda x: x[:3], full)
  sums = train.eval_step(graphdef, state.params, state.model_state, padded)
  expected = train.eval_step(graphdef, state.params, state.model_state, three)
  assert float(sums['count']) == 3.0
  np.testing.assert_allclose(sums['loss_sum'], expected['loss_sum'], rtol=1e-5)


def _final_state(workdir):
  return jax.tree.leaves(run_files.latest_checkpoint(workdir)[1]['state'])


def test_resuming_continues_from_the_saved_step_bit_for_bit(tmp_path):
  config = dataclasses.replace(
      QUICK,
      optimizer='adaloss',
      learning_rate=0.5,
      optimizer_kwargs={'b0': 1.0},
      max_steps=5,
  )
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  # Stopped mid-epoch at step 2, then resumed: the data, the dropout streams
  # and the optimizer state pick up where they were.
  train.train_and_evaluate(
      dataclasses.replace(config, max_steps=2), str(tmp_path / 'resumed')
  )
  resumed = train.train_and_evaluate(
      dataclasses.replace(config, resume=True), str(tmp_path / 'resumed')
  )

  assert [r['step'] for r in straight] == [3, 5]
  assert [r['step'] for r in resumed] == [2, 3, 5]
  for key in (
      'train_loss',
      'test_loss',
      'test_accuracy',
      'effective_step_size',
  ):
    assert resumed[-1][key] == straight[-1][key], key
  for a, b in zip(
      _final_state(tmp_path / 'straight'), _final_state(tmp_path / 'resumed')
  ):
    np.testing.assert_array_equal(a, b)


def test_a_run_with_checkpoints_is_not_overwritten_without_resume(tmp_path):
  config = dataclasses.replace(QUICK, max_steps=1)
  train.train_and_evaluate(config, str(tmp_path))
  with pytest.raises(ValueError, match='--resume'):
    train.train_and_evaluate(config, str(tmp_path))
  # Resuming a finished run trains no further and returns its records.
  again = train.train_and_evaluate(
      dataclasses.replace(config, resume=True), str(tmp_path)
  )
  assert [r['step'] for r in again] == [1]


def test_the_batch_must_divide_over_the_devices(tmp_path):
  with pytest.raises(ValueError, match='multiple of the 8 devices'):
    train.train_and_evaluate(
        dataclasses.replace(QUICK, batch_size=12), str(tmp_path)
    )


def test_schedules_are_stepped_per_epoch_as_pytorch_does():
  cosine = optimizers.learning_rate_schedule(
      0.1, 'cosine', steps_per_epoch=5, num_epochs=4, final_fraction=0.01
  )
  # CosineAnnealingLR(T_max=4, eta_min=0.001), stepped after every epoch.
  expected = [
      0.001 + 0.099 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)
  ]
  assert [float(cosine(s)) for s in (0, 4, 5, 10, 19)] == pytest.approx(
      [expected[0], expected[0], expected[1], expected[2], expected[3]]
  )


def test_acme_without_adaptation_follows_the_schedule():
  optimizer = optimizers.create(
      'acme',
      0.1,
      schedule='cosine',
      steps_per_epoch=1,
      num_epochs=4,
      adapt_learning_rate=False,
      adam=False,
  )
  params = {'w': jnp.ones(3)}
  state = optimizer.tx.init(params)

  def loss_fn(p):
    return jnp.sum(p['w'] ** 2)

  for step in range(3):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = optimizer.tx.update(
        grads, state, params, value=loss, value_fn=loss_fn
    )
    params = optax.apply_updates(params, updates)
    assert float(state.adapted_learning_rate) == pytest.approx(
        float(optimizer.learning_rate(step))
    )
  assert float(optimizer.monitor(state, 3)['learning_rate']) == pytest.approx(
      float(optimizer.learning_rate(2))
  )


def test_scale_free_command_then_plot_of_its_curves_heatmap_and_histograms(
    tmp_path, capsys
):
  log_folder = tmp_path / 'logs'
  for optim_method in ('AdamW', 'AdamProx'):
    code = cli.main([
        'scale-free',
        '--optim-method',
        optim_method,
        '--eta0',
        '0.003',
        '--weight-decay',
        '0.0001',
        '--train-epochs',
        '1',
        '--batchsize',
        '32',
        '--eval-interval',
        '1',
        '--use-cuda',
        '--log-folder',
        str(log_folder),
        '--dataset',
        'digits',
        '--model',
        'ResNet20',
        '--no-batch-norm',
        '--scheduler',
        'Cosine',
        '--store-stats',
        '--store-stats-interval',
        '2',
        '--max-steps',
        '3',
        '--no-progress',
    ])
    assert code == 0
  run = log_folder / (
      'digits_ResNet20_NoBN_AdamW_Eta0_0.003_WD_0.0001_'
      'Scheduler_Cosine_Loss_Mul_1_Epoch_1_BatchSize_32_Test'
  )
  config = json.loads((run / 'config.json').read_text())
  assert config['model_kwargs'] == {'batch_norm': False}
  assert config['schedule'] == 'cosine'
  (record,) = run_directory.read_metrics(run)
  assert {'train_eval_loss', 'test_accuracy'} <= set(record)

  assert cli.main(['plot', str(run)]) == 0
  assert (run / 'curves.png').read_bytes()[:8] == PNG
  assert (run / 'histograms_step_3.png').read_bytes()[:8] == PNG
  assert (
      cli.main(['plot', str(log_folder), '--out', str(tmp_path / 'figures')])
      == 0
  )
  for name in ('heatmap.png', 'runs_curves.png'):
    assert (tmp_path / 'figures' / name).read_bytes()[:8] == PNG
  assert 'heatmap.png' in capsys.readouterr().out


def test_adaloss_command_reads_the_authors_config_and_its_flags(tmp_path):
  workdir = tmp_path / 'run'
  code = cli.main([
      'adaloss',
      '-c',
      str(adaloss_config.CONFIG_DIR / 'config_cifar100_sgd_sqrt.json'),
      '--model',
      'tiny_cnn',
      '--b0',
      '2',
      '--eta',
      '0.05',
      '--epochs',
      '1',
      '--bs',
      '32',
      '--max-steps',
      '2',
      '--workdir',
      str(workdir),
      '--no-progress',
  ])
  assert code == 0
  config = json.loads((workdir / 'config.json').read_text())
  assert (config['optimizer'], config['learning_rate']) == (
      'sgd_decay_sqrt',
      0.05,
  )
  assert config['optimizer_kwargs'] == {
      'b0': 2.0,
      'alpha': 1,
      'weight_decay': 1e-4,
  }
  assert config['seed'] == 123
  (record,) = run_directory.read_metrics(workdir)
  # SGD-DecaySqrt's step after two steps: eta / sqrt(b0^2 + 2).
  assert record['effective_step_size'] == pytest.approx(0.05 / math.sqrt(6))


def test_acme_command_resumes_bit_for_bit(tmp_path):
  command = [
      'acme',
      '--acme',
      '--adam',
      '--asam',
      '--nesterov',
      '--lr',
      '0.001',
      '--epochs',
      '1',
      '--batch-size',
      '32',
      '--model',
      'WRN',
      '--depth',
      '10',
      '--width-alpha',
      '1',
      '--no-progress',
  ]
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  assert (
      cli.main(command + ['--max-steps', '3', '--workdir', str(straight)]) == 0
  )
  assert (
      cli.main(command + ['--max-steps', '2', '--workdir', str(resumed)]) == 0
  )
  assert (
      cli.main(
          command + ['--max-steps', '3', '--workdir', str(resumed), '--resume']
      )
      == 0
  )

  config = json.loads((resumed / 'config.json').read_text())
  assert config['optimizer_kwargs']['asam'] and config['label_smoothing'] == 0.1
  assert config['model_kwargs'] == {
      'depth': 10,
      'width': 1,
      'dropout_rate': 0.0,
  }
  records = run_directory.read_metrics(resumed)
  assert [r['step'] for r in records] == [2, 3]
  assert records[-1]['acme_branch'] in set(optax_adaptive.AcmeBranch)
  assert (
      records[-1]['learning_rate']
      == run_directory.read_metrics(straight)[-1]['learning_rate']
  )
  for a, b in zip(_final_state(straight), _final_state(resumed)):
    np.testing.assert_array_equal(a, b)


def test_adadiff_cifar_command_on_a_generated_cifar10(tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  downloads = tmp_path / 'downloads'
  downloads.mkdir()
  cifar_archives.write_cifar10(downloads / 'cifar-10-python.tar.gz', 13)
  cifar_archives.record_checksums(monkeypatch, 'cifar10', downloads)
  code = cli.main([
      'adadiff-cifar',
      '--optim',
      'adadiff',
      '--lr',
      '0.001',
      '--model',
      'tiny_cnn',
      '--dataset',
      'cifar10',
      '--batchsize',
      '16',
      '--total_epoch',
      '2',
      '--decay_epoch',
      '1',
      '--max-steps-per-epoch',
      '2',
      '--workdir',
      str(workdir),
      '--data-dir',
      str(tmp_path / 'tfds'),
      '--download-dir',
      str(downloads),
      '--no-progress',
  ])
  assert code == 0
  records = run_directory.read_metrics(workdir)
  assert [r['step'] for r in records] == [2, 4]
  # StepLR(step_size=1, gamma=0.1): the second epoch runs at a tenth.
  assert records[-1]['learning_rate'] == pytest.approx(1e-4)
  assert json.loads((workdir / 'config.json').read_text())['mean_std'] == [
      [0.4914, 0.4822, 0.4465],
      [0.2023, 0.1994, 0.2010],
  ]


def test_compare_writes_a_table_and_a_plot(tmp_path, capsys):
  code = cli.main([
      'compare',
      '--workdir',
      str(tmp_path),
      '--model',
      'tiny_cnn',
      '--optimizers',
      'adaloss',
      'sgd_decay_sqrt',
      'adam_prox',
      '--epochs',
      '2',
      '--max-steps-per-epoch',
      '2',
      '--batch-size',
      '32',
      '--no-progress',
  ])
  assert code == 0
  rows = (tmp_path / 'comparison.md').read_text().splitlines()
  assert [row.split(' | ')[0] for row in rows[4:]] == [
      '| adaloss',
      '| sgd_decay_sqrt',
      '| adam_prox',
  ]
  assert (tmp_path / 'comparison.png').read_bytes()[:8] == PNG
  assert 'test accuracy' in capsys.readouterr().out


@pytest.mark.parametrize(
    'argv, message',
    [
        (['adaloss', '--model', 'resnet7'], "Unknown model 'resnet7'"),
        (['adadiff-cifar', '--model', 'vgg7'], "Unknown model 'vgg7'"),
    ],
)
def test_an_unknown_model_is_one_clear_error(tmp_path, capsys, argv, message):
  assert cli.main(argv + ['--workdir', str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f'error: {message}') and err.count('\n') == 1
  assert not (tmp_path / 'config.json').exists()


@pytest.mark.parametrize(
    'argv',
    [
        ['compare', '--optimizers', 'lion'],
        ['adadiff-cifar', '--optim', 'lion'],
        ['scale-free', '--optim-method', 'Lion'],
        ['scale-free', '--model', 'ResNet7'],
    ],
)
def test_an_unknown_choice_is_refused_by_the_parser(capsys, argv):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2
  assert 'invalid choice' in capsys.readouterr().err


def _documented_commands():
  readme = (pathlib.Path(cli.__file__).parent / 'README.md').read_text()
  # Continuation lines joined; every command line after the prompt.
  text = readme.replace('\\\n', ' ')
  return [
      shlex.split(line, comments=True)[3:]
      for line in text.splitlines()
      if line.startswith('python -m experiments ')
  ]


def test_every_command_in_the_experiments_readme_parses():
  commands = _documented_commands()
  assert {argv[0] for argv in commands} >= {
      'compare',
      'scale-free',
      'adaloss',
      'acme',
      'adadiff-cifar',
      'plot',
  }
  parser = cli.build_parser()
  for argv in commands:
    parser.parse_args(argv)


@pytest.mark.parametrize(
    'command',
    [
        [
            'scale-free',
            '--optim-method',
            'AdamL2',
            '--model',
            'ResNet20',
            '--batchsize',
            '32',
            '--train-epochs',
            '1',
        ],
        [
            'adaloss',
            '-c',
            str(adaloss_config.CONFIG_DIR / 'config_cifar100_adaloss.json'),
            '--model',
            'tiny_cnn',
            '--bs',
            '32',
            '--ep',
            '1',
        ],
        [
            'adadiff-cifar',
            '--optim',
            'adabelief',
            '--lr',
            '0.001',
            '--model',
            'tiny_cnn',
            '--batchsize',
            '32',
            '--total_epoch',
            '1',
        ],
    ],
    ids=lambda command: command[0],
)
def test_each_paper_command_checkpoints_and_resumes_where_it_stopped(
    tmp_path, command
):
  """Each command, stopped after two steps and resumed to three, ends where a
  three-step run does: evaluation, checkpoint and parameters."""
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  command = command + ['--no-progress', '--workdir']
  assert cli.main(command + [str(straight), '--max-steps', '3']) == 0
  assert cli.main(command + [str(resumed), '--max-steps', '2']) == 0
  assert run_files.latest_checkpoint(resumed)[0] == 2
  assert cli.main(command + [str(resumed), '--max-steps', '3', '--resume']) == 0
  assert [r['step'] for r in run_directory.read_metrics(resumed)] == [2, 3]
  assert run_directory.read_metrics(resumed)[-1]['test_loss'] == (
      run_directory.read_metrics(straight)[-1]['test_loss']
  )
  for a, b in zip(_final_state(straight), _final_state(resumed)):
    np.testing.assert_array_equal(a, b)
