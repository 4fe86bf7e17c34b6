"""What the command line says to its user: refusals that name the flag, what a
run prints while it compiles and trains, an interrupted run."""

import pytest

from experiments import cli, train
from experiments.configs import adaloss as adaloss_config
from experiments.configs import default as default_config


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
