"""What the command line says to its user: refusals that name the flag, what a
run prints while it compiles and trains, an interrupted run."""

import inspect
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import warnings

import matplotlib

matplotlib.use('Agg')
# pylint: disable=g-import-not-at-top,wrong-import-position
import child_runs
import matplotlib.pyplot as plt
import pytest

import experiments
from experiments import (
    adaloss_table,
    cli,
    plots,
    ptb,
    reporting,
    run_directory,
    train,
)
from experiments.configs import acme as acme_config
from experiments.configs import adaloss as adaloss_config
from experiments.configs import default as default_config

ROOT = pathlib.Path(experiments.__file__).parent.parent


@pytest.mark.parametrize(
    'argv, message',
    [
        (
            ['scale-free', '--eta0', '-1'],
            '--eta0 must be a finite number > 0, got -1.0.',
        ),
        (
            ['adaloss', '--lr', '-0.1'],
            '--lr must be a finite number >= 0, got -0.1.',
        ),
        (['acme', '--momentum', '1'], '--momentum must be in [0, 1), got 1.0.'),
        (
            ['adadiff-cifar', '--batchsize', '0'],
            '--batchsize must be at least 1',
        ),
        (
            ['adadiff-ptb', '--wdecay', 'nan'],
            '--wdecay must be a finite number',
        ),
        (['compare', '--epochs', '0'], '--epochs must be at least 1, got 0.'),
    ],
    ids=['eta0', 'alias', 'fraction', 'count', 'nan', 'compare'],
)
def test_a_hyperparameter_out_of_range_is_refused_naming_its_flag(
    argv, message, capsys
):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(f'usage: python -m experiments {argv[0]} ')
  assert f'error: {message}' in err


def test_a_configured_hyperparameter_is_checked_before_model_and_data():
  config = default_config.get_config(
      model='mlp', dataset='digits', optimizer='adaloss', learning_rate=-1.0
  )
  with pytest.raises(ValueError, match='`learning_rate` must be'):
    train.check_config(config)


@pytest.mark.parametrize(
    'argv, message',
    [
        (
            ['scale-free', '--weigth-decay', '0.1'],
            (
                'unrecognized argument --weigth-decay; did you mean'
                ' --weight-decay?'
            ),
        ),
        (
            ['acme', '--width_alpha=2'],
            'unrecognized argument --width_alpha; did you mean --width-alpha?',
        ),
        (['adaloss', 'stray'], 'unrecognized arguments: stray'),
    ],
    ids=['value', 'equals', 'not-a-flag'],
)
def test_an_unknown_flag_gets_the_commands_usage_and_closest_flag(
    argv, message, capsys
):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(f'usage: python -m experiments {argv[0]} ')
  assert err.endswith(f'python -m experiments {argv[0]}: error: {message}\n')


def test_the_authors_config_path_resolves_to_the_bundled_file(
    monkeypatch, tmp_path, capsys
):
  monkeypatch.chdir(tmp_path)  # where no ./configs/ exists
  started = []
  monkeypatch.setattr(
      cli, '_train', lambda config, workdir: started.append(config) or 0
  )
  argv = ['adaloss', '-c', './configs/config_cifar100_adaloss.json']
  assert cli.main(argv) == 0
  bundled = adaloss_config.CONFIG_DIR / 'config_cifar100_adaloss.json'
  assert capsys.readouterr().out == (
      'No ./configs/config_cifar100_adaloss.json here: using the bundled '
      f'{bundled}.\n'
  )
  assert started[0].optimizer == 'adaloss'
  assert started[0].optimizer_kwargs['b0'] == (
      adaloss_config.read_authors_config(bundled)['b0']
  )


def test_ctrl_c_checkpoints_says_where_and_resume_continues(tmp_path):
  workdir = tmp_path / 'run'
  # A long AdaLoss run on digits: it lasts until interrupted.
  argv = ['adaloss', '--model', 'mlp', '--bs', '8', '--ep', '1000']
  argv += ['--workdir', str(workdir)]
  code, output, step = child_runs.interrupt_after_progress(argv)
  assert code == 130, output
  assert 'Traceback' not in output
  assert re.search(
      r'^Compiling the training step\.\.\.\n'
      r'Compiled the training step in \d+\.\d s\.$',
      output,
      flags=re.MULTILINE,
  )
  assert step > 0, output  # the last line says where the run stopped

  resumed = child_runs.resume(argv, max_steps=step + 2)
  assert f'Resuming {workdir} from step {step}.' in resumed
  assert run_directory.read_metrics(workdir)[-1]['step'] == step + 2


@pytest.mark.parametrize('approximate, total', [(False, '100'), (True, '~100')])
def test_progress_lines_give_steps_rate_and_expected_end(
    monkeypatch, caplog, approximate, total
):
  clock = [1000.0]
  monkeypatch.setattr(reporting.time, 'monotonic', lambda: clock[0])
  monkeypatch.setattr(reporting, '_PROGRESS_SECONDS', 30.0)
  lines = reporting.ProgressLines(total_steps=100, approximate=approximate)
  with caplog.at_level(logging.INFO, logger='experiments'):
    for step in range(1, 41):
      clock[0] += 100.0 if step == 1 else 2.0  # the first step compiles
      lines.step_done(step)
  # A line once the rate is known, the first step's 100 s being over 30 s,
  # then at 2 s a step a line every 15 steps.
  assert [
      re.sub(r'end \S+', 'end TIME', r.getMessage()) for r in caplog.records
  ] == [
      f'step 2/{total}, 0.5 steps/s, expected end TIME (in 3.3 min)',
      f'step 17/{total}, 0.5 steps/s, expected end TIME (in 2.8 min)',
      f'step 32/{total}, 0.5 steps/s, expected end TIME (in 2.3 min)',
  ]


def test_a_record_is_said_in_one_line_of_its_losses_and_scores(caplog):
  records = [
      {
          'epoch': 1.0,
          'step': 23,
          'train_loss': 2.17546,
          'train_accuracy': 0.22963,
          'test_loss': 2.0731,
          'test_accuracy': 0.25926,
          'learning_rate': 1.0,
          'seconds': 9.5,
      },
      {
          'epoch': 0.5,
          'step': 4,
          'train_loss': 5.3,
          'train_perplexity': 200.34,
          'val_loss': 5.1,
          'val_perplexity': 164.02,
          'learning_rate': 30.0,
      },
  ]
  with caplog.at_level(logging.INFO, logger='experiments'):
    for record in records:
      reporting.say_record('run', record)
  assert [r.getMessage() for r in caplog.records] == [
      (
          'run epoch 1.00 step 23: train_loss 2.175, train_accuracy 0.2296,'
          ' test_loss 2.073, test_accuracy 0.2593'
      ),
      (
          'run epoch 0.50 step 4: train_loss 5.3, train_perplexity 200.3,'
          ' val_loss 5.1, val_perplexity 164'
      ),
  ]


def test_a_run_without_batch_norm_says_its_initial_loss_first(tmp_path, caplog):
  with caplog.at_level(logging.INFO, logger='experiments'):
    argv = ['scale-free', '--no-batch-norm', '--batchsize', '32']
    argv += ['--max-steps', '1', '--workdir', str(tmp_path), '--no-progress']
    assert cli.main(argv) == 0
  # The first after the step's compilation, which the memory check makes.
  messages = [r.getMessage() for r in caplog.records]
  assert messages[0] == 'Compiling the training step...'
  assert messages[1].startswith('Compiled the training step in ')
  messages = messages[2:]
  match = re.fullmatch(
      r'Without BatchNorm the network starts from a loss of (\S+) on a test'
      r' batch \(chance: 2.3\), as the authors\' networks do at'
      r' initialisation: expect first-epoch losses of that order\.',
      messages[0],
  )
  assert match, messages
  # ResNet-20 without BatchNorm, as the authors initialise it, on digits.
  assert float(match[1]) > 10


def test_an_unprepared_dataset_gets_our_message_alone(tmp_path):
  refused = subprocess.run(
      [sys.executable, '-m', 'experiments', 'adaloss', '--model', 'mlp']
      + ['--dataset', 'cifar10', '--data-dir', str(tmp_path / 'tfds')]
      # An empty folder for the archive: offline, nothing is downloaded.
      + ['--download-dir', str(tmp_path)]
      + ['--workdir', str(tmp_path / 'run')],
      cwd=ROOT,
      env={**os.environ, 'PYTHONPATH': str(ROOT)},
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert refused.returncode == 2
  # Our message alone: no TFDS warning ('Variant folder ...') before it.
  assert refused.stderr.startswith(
      f'error: {tmp_path} has no cifar-10-python.tar.gz. Download '
  ), refused.stderr
  assert refused.stderr.count('\n') == 1, refused.stderr


def test_preparing_ptb_draws_no_tfds_progress_bars(tmp_path, capfd):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  for name in ('ptb.train.txt', 'ptb.valid.txt', 'ptb.test.txt'):
    (corpus / name).write_text(' a b\n b c\n')
  ptb.prepare(tmp_path / 'tfds', manual_dir=corpus)
  captured = capfd.readouterr()
  assert captured.out == '' and captured.err == ''


def test_acme_runs_of_different_settings_get_different_folders(monkeypatch):
  variants = [
      [],
      ['--model', 'Pyramid'],
      ['--depth', '10'],
      ['--width-alpha', '1'],
      ['--model', 'Pyramid', '--bottleneck'],
      ['--dropout', '0.3'],
      ['--epochs', '10'],
      ['--lr', '0.01'],
      ['--label-smoothing', '0'],
      ['--momentum', '0.5'],
      ['--rho', '2'],
      ['--eta', '0.01'],
      ['--weight-decay', '0'],
      ['--acme'],
      ['--asam'],
      ['--adam'],
      ['--nesterov'],
      ['--batch-size', '100'],
      ['--seed', '1'],
  ]
  # Every setting of the authors' script is varied above.
  settings = set(inspect.signature(acme_config.get_config).parameters)
  varied = {
      word[2:].replace('-', '_')
      for variant in variants
      for word in variant
      if word.startswith('--')
  }
  assert varied == settings - {'dataset', 'data_dir', 'overrides'}
  runs = []
  monkeypatch.setattr(
      cli, '_train', lambda config, workdir: runs.append((config, workdir)) or 0
  )
  for variant in variants:
    assert cli.main(['acme', *variant]) == 0
  configs, workdirs = zip(*runs)
  assert len(set(workdirs)) == len(variants), workdirs
  assert len({json.dumps(c.to_json()) for c in configs}) == len(variants)
  assert workdirs[3] == os.path.join(
      'runs', 'acme', 'digits', 'wrn16-1-sgd-lr0.1'
  )


@pytest.fixture
def drawn_figures(monkeypatch):
  """The figures the plots draw, kept open instead of closed after saving."""
  figures = []
  close = plt.close
  monkeypatch.setattr(plt, 'close', figures.append)
  yield figures
  for figure in figures:
    close(figure)


def test_an_acme_runs_curves_draw_its_rate_and_branches(
    tmp_path, drawn_figures
):
  history = [
      {
          'epoch': 1.0,
          'step': 6,
          'train_loss': 2.3,
          'learning_rate': 0.002,
          'acme_branch': 5.0,
          'acme_num_rejected': 0.0,
      },
      {
          'epoch': 2.0,
          'step': 12,
          'train_loss': 2.2,
          'learning_rate': 0.004,
          'acme_branch': 0.0,
          'acme_num_rejected': 0.0,
      },
  ]
  plots.plot_curves(tmp_path / 'curves.png', 'acme', {'acme': history})
  (figure,) = drawn_figures
  rate_axis, branch_axis = figure.axes[2:]
  (rate,) = rate_axis.get_lines()
  assert rate.get_label() == "ACME's rate"
  assert list(rate.get_ydata()) == [0.002, 0.004]
  (branches,) = branch_axis.get_lines()
  assert list(branches.get_ydata()) == [5.0, 0.0]
  labels = {t.get_text() for t in branch_axis.get_yticklabels()}
  assert {'grow', 'not_significant', 'rejected'} <= labels


def test_an_adaloss_runs_curves_draw_its_effective_step(
    tmp_path, drawn_figures
):
  history = [{'epoch': 1.0, 'train_loss': 2.3, 'effective_step_size': 0.05}]
  plots.plot_curves(tmp_path / 'curves.png', 'adaloss', {'adaloss': history})
  (step,) = drawn_figures[0].axes[2].get_lines()
  assert step.get_label() == 'effective step'


def test_a_language_models_curves_draw_its_perplexities(
    tmp_path, drawn_figures
):
  history = [
      {
          'epoch': e,
          **{f'{split}_loss': 5.0 / e for split in ('train', 'val')},
          **{f'{split}_perplexity': 150.0 / e for split in ('train', 'val')},
      }
      for e in (1, 2)
  ]
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # matplotlib warns of an empty legend
    plots.plot_curves(tmp_path / 'curves.png', 'ptb', {'ptb': history})
  loss_axis, perplexity_axis = drawn_figures[0].axes
  assert perplexity_axis.get_ylabel() == 'perplexity'
  assert perplexity_axis.get_yscale() == 'log'
  assert [line.get_label() for line in perplexity_axis.get_lines()] == [
      'train_perplexity',
      'val_perplexity',
  ]
  assert [line.get_label() for line in loss_axis.get_lines()] == [
      'train_loss',
      'val_loss',
  ]


def test_the_comparisons_legend_covers_no_curve(tmp_path, drawn_figures):
  results = {
      name: [
          {'epoch': e, 'train_loss': 1.0 / e, 'test_accuracy': 0.2 * e}
          for e in (1, 2, 3, 4)
      ]
      for name in ('adaloss', 'adamw', 'acme', 'adadiff')
  }
  plots.plot_comparison(tmp_path / 'comparison.png', 'compare', results)
  (figure,) = drawn_figures
  figure.canvas.draw()
  (legend,) = figure.legends
  assert [t.get_text() for t in legend.get_texts()] == list(results)
  box = legend.get_window_extent()
  for axis in figure.axes:
    assert not box.overlaps(axis.get_window_extent())


def test_the_table_of_one_seed_says_1_seed_and_one_run(tmp_path, drawn_figures):
  grid = adaloss_table.Grid(
      model='mlp',
      dataset='digits',
      pretrained=None,
      b0s=(1.0,),
      methods=('adaloss',),
      seeds=(0,),
  )
  results = {('adaloss', 1.0): [0.9]}
  adaloss_table.plot_table(tmp_path / 'table.png', grid, results)
  title = drawn_figures[0].axes[0].get_title()
  assert title.endswith(', 1 seed'), title
  text = adaloss_table.write_table(tmp_path / 'table.md', grid, results)
  assert (
      'Final test accuracy (%) after 10 epochs, one run per cell, seed 0;'
      in text
  )
  assert 'deviation' not in text


def test_convolutional_networks_get_ynnpack_on_a_cpu(monkeypatch, capsys):
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.delenv('XLA_FLAGS')
  cli.use_ynnpack_on_cpu('adaloss')  # pylint: disable=protected-access
  assert 'XLA_FLAGS' not in os.environ  # a ViT: not a convolutional network
  cli.use_ynnpack_on_cpu('acme')  # pylint: disable=protected-access
  flags = '--xla_cpu_experimental_ynn_fusion_type=eltwise,reduce'
  assert os.environ['XLA_FLAGS'] == flags
  assert capsys.readouterr().err.startswith(f'On a CPU: XLA_FLAGS={flags} ')
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_use_xnnpack=true')
  cli.use_ynnpack_on_cpu('scale-free')  # pylint: disable=protected-access
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_use_xnnpack=true'
  # compare's ResNet-8 trains no faster with it (BENCHMARKS.md), and its
  # documented table is XLA's default's.
  monkeypatch.delenv('XLA_FLAGS')
  cli.use_ynnpack_on_cpu('compare')  # pylint: disable=protected-access
  assert 'XLA_FLAGS' not in os.environ
