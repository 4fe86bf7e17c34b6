"""A refused command: one message, exit status 2, an earlier run untouched.

Every refused command here points at the working directory of an earlier run
and asks to resume it, so that, but for what is wrong with it, it would write
there.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

import experiments
from experiments import cifar, cli, input_pipeline
from experiments.configs import adaloss as adaloss_config

ROOT = pathlib.Path(experiments.__file__).parent.parent
AUTHORS_CONFIG = adaloss_config.CONFIG_DIR / 'config_cifar100_adaloss.json'
FLAGS = (
    '--model',
    'mlp',
    '--bs',
    '8',
    '--ep',
    '1',
    '--max-steps',
    '2',
    '--checkpoint-every',
    '1',
    '--no-progress',
)


@pytest.fixture(scope='module')
def earlier_run(tmp_path_factory) -> pathlib.Path:
  """A finished AdaLoss run of the authors' configuration, on digits."""
  workdir = tmp_path_factory.mktemp('earlier') / 'run'
  assert (
      cli.main([
          'adaloss',
          '-c',
          str(AUTHORS_CONFIG),
          *FLAGS,
          '--workdir',
          str(workdir),
      ])
      == 0
  )
  return workdir


@pytest.fixture
def workdir(earlier_run, tmp_path) -> pathlib.Path:
  """A copy of the earlier run, for a test to point a command at."""
  copy = tmp_path / 'run'
  shutil.copytree(earlier_run, copy)
  return copy


def _outputs(workdir: pathlib.Path) -> dict[pathlib.Path, tuple[int, bytes]]:
  return {
      path: (path.stat().st_mtime_ns, path.read_bytes())
      for path in workdir.rglob('*')
      if path.is_file()
  }


def _config_file(folder: pathlib.Path, change=None, text=None) -> str:
  """The authors' configuration, changed by `change` or replaced by `text`."""
  values = json.loads(AUTHORS_CONFIG.read_text())
  if change:
    change(values)
  path = folder / 'config.json'
  path.write_text(json.dumps(values, indent=4) if text is None else text)
  return str(path)


def _corrupt_cifar10(data_dir: pathlib.Path) -> None:
  """CIFAR-10 as TFDS describes a prepared copy, its ArrayRecord files garbage
  (what a download or a copy cut short leaves)."""
  builder = cifar.builder('cifar10', data_dir)
  info = builder.info
  info.set_file_format('array_record', override=True)
  template = tfds.core.ShardedFileTemplate(
      data_dir=builder.data_dir,
      template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}',
      dataset_name=builder.name,
      filetype_suffix='array_record',
  )
  splits = [
      tfds.core.SplitInfo(
          name=split,
          shard_lengths=[4],
          num_bytes=0,
          filename_template=template.replace(split=split),
      )
      for split in ('train', 'test')
  ]
  info.set_splits(tfds.core.SplitDict(splits))
  os.makedirs(builder.data_dir)
  info.write_to_directory(builder.data_dir)
  for split in splits:
    for path in split.filepaths:
      path.write_bytes(b'not an ArrayRecord file')


def _refused(argv, capsys) -> str:
  """stderr of a command that must be refused with status 2 and no
  traceback."""
  assert cli.main(argv) == 2
  captured = capsys.readouterr()
  assert captured.err.startswith('error: ')
  assert 'Traceback' not in captured.err and not captured.out
  return captured.err


def test_the_earlier_run_would_be_written_by_its_own_command(workdir, capsys):
  """The control of the tests below: their commands, right, do write."""
  before = _outputs(workdir)
  assert (
      cli.main([
          'adaloss',
          '-c',
          str(AUTHORS_CONFIG),
          *FLAGS,
          '--workdir',
          str(workdir),
          '--resume',
      ])
      == 0
  )
  assert 'last record' in capsys.readouterr().out
  assert _outputs(workdir) != before


@pytest.mark.parametrize(
    'change, flags, message',
    [
        (
            None,
            ('--model', 'resnet7'),
            "Unknown model 'resnet7' (did you mean 'resnet8'?); choose one of ",
        ),
        (
            lambda c: c['train_loss'].update(type='AdaLos'),
            (),
            (
                "{config}: unknown train_loss.type 'AdaLos'; did you mean"
                " 'AdaLoss'?\n"
            ),
        ),
        (
            lambda c: c['optimizer'].update(type='Adam'),
            (),
            (
                "{config}: unknown optimizer.type 'Adam'; the authors' code has"
                ' Adagradnorm, SGD.\n'
            ),
        ),
        (
            lambda c: c['optimizer']['args'].update(momentun=0.0),
            (),
            (
                "{config}: unknown key 'optimizer.args.momentun'; did you mean "
                "'optimizer.args.momentum'?\n"
            ),
        ),
        (
            lambda c: c.update(trainr=c.pop('trainer')),
            (),
            "{config}: unknown key 'trainr'; did you mean 'trainer'?\n",
        ),
        (
            lambda c: c['optimizer']['args'].update(lr='0.1'),
            (),
            "{config}: 'optimizer.args.lr' must be a number, not '0.1'.\n",
        ),
        (
            lambda c: c['optimizer']['args'].pop('lr'),
            (),
            "{config}: 'optimizer.args.lr' is missing; a run needs it.\n",
        ),
        (
            None,
            ('--eta', '0.5'),
            (
                '{workdir} holds a run with other settings (learning_rate):'
                ' resume it with its own settings, or choose another working'
                ' directory.\n'
            ),
        ),
    ],
    ids=[
        'model',
        'loss',
        'optimizer',
        'typo',
        'section_typo',
        'type',
        'missing',
        'other_settings',
    ],
)
def test_a_wrong_name_or_config_is_refused(
    workdir, tmp_path, capsys, change, flags, message
):
  config = _config_file(tmp_path, change)
  before = _outputs(workdir)
  err = _refused(
      [
          'adaloss',
          '-c',
          config,
          *FLAGS,
          *flags,
          '--workdir',
          str(workdir),
          '--resume',
      ],
      capsys,
  )
  assert err.startswith(
      'error: ' + message.format(config=config, workdir=workdir)
  )
  assert _outputs(workdir) == before


@pytest.mark.parametrize(
    'text, message',
    [
        (
            '{"name": "cifar100_adaloss",\n "seed": 123,,}',
            (
                '{config} is not valid JSON: Expecting property name enclosed'
                ' in double quotes at line 2, column 14.\n'
            ),
        ),
        ('[1, 2]', '{config} must hold a JSON object, not [1, 2].\n'),
    ],
    ids=['syntax', 'list'],
)
def test_a_config_file_that_is_not_a_json_object_is_refused(
    workdir, tmp_path, capsys, text, message
):
  config = _config_file(tmp_path, text=text)
  before = _outputs(workdir)
  err = _refused(
      ['adaloss', '-c', config, *FLAGS, '--workdir', str(workdir), '--resume'],
      capsys,
  )
  assert err == 'error: ' + message.format(config=config)
  assert _outputs(workdir) == before


def test_a_missing_config_file_is_refused(workdir, tmp_path, capsys):
  before = _outputs(workdir)
  missing = tmp_path / 'missing.json'
  err = _refused(
      [
          'adaloss',
          '-c',
          str(missing),
          *FLAGS,
          '--workdir',
          str(workdir),
          '--resume',
      ],
      capsys,
  )
  assert err.startswith(
      f'error: No configuration file {missing}, nor one of that name among '
      'the bundled config_cifar100_adagrad_norm.json, '
  )
  assert _outputs(workdir) == before


def test_a_run_with_checkpoints_is_refused_without_resume(workdir, capsys):
  before = _outputs(workdir)
  err = _refused(
      ['adaloss', '-c', str(AUTHORS_CONFIG), *FLAGS, '--workdir', str(workdir)],
      capsys,
  )
  assert err == (
      f'error: {workdir} already has checkpoints: resume from them '
      '(--resume) or choose another working directory.\n'
  )
  assert _outputs(workdir) == before


def _no_network(monkeypatch):
  def download(self, url):
    del self  # unused
    raise ConnectionError(f'{url} is unreachable')

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', download)


@pytest.mark.parametrize(
    'prepare, message',
    [
        (
            lambda data_dir: None,
            (
                'error: cifar10_arrays is not prepared and downloading '
                '{url} failed (ConnectionError: {url} is unreachable). '
                'Offline, download it elsewhere and pass the directory that '
                'holds it as --download-dir (`manual_dir` of '
                'experiments.cifar.prepare).\n'
            ),
        ),
        (
            _corrupt_cifar10,
            (
                'error: cifar10 in {data_dir} cannot be read (RuntimeError:'
                ' ArrayRecord file should be at least 64KB big). Prepare it'
                ' again with:\n  python -m experiments prepare cifar10'
                ' --data-dir {data_dir} --overwrite\n'
            ),
        ),
    ],
    ids=['missing-offline', 'corrupt'],
)
def test_a_missing_or_corrupt_dataset_is_refused(
    workdir, tmp_path, capsys, monkeypatch, prepare, message
):
  _no_network(monkeypatch)
  data_dir = tmp_path / 'tensorflow_datasets'
  data_dir.mkdir()
  prepare(data_dir)
  before = _outputs(workdir)
  err = _refused(
      [
          'adaloss',
          '-c',
          str(AUTHORS_CONFIG),
          *FLAGS,
          '--dataset',
          'cifar10',
          '--data-dir',
          str(data_dir),
          '--workdir',
          str(workdir),
          '--resume',
      ],
      capsys,
  )
  assert err == message.format(data_dir=data_dir, url=cifar.CIFAR10_ARCHIVE.url)
  assert _outputs(workdir) == before


def test_an_evaluation_split_is_read_before_anything_is_written(
    tmp_path, monkeypatch
):
  from experiments import train  # pylint: disable=g-import-not-at-top

  read_split = input_pipeline.read_split

  def test_split_damaged(dataset, split, data_dir=None):
    if split == 'test':
      raise input_pipeline.DatasetCorruptError(f'{dataset}/{split} damaged')
    return read_split(dataset, split, data_dir)

  monkeypatch.setattr(input_pipeline, 'read_split', test_split_damaged)
  config = adaloss_config.get_config(model='mlp', batch_size=8)
  with pytest.raises(input_pipeline.DatasetCorruptError, match='test damaged'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_compare_deletes_no_earlier_comparison_for_an_unknown_model(
    tmp_path, capsys
):
  earlier = tmp_path / 'adaloss'
  earlier.mkdir()
  (earlier / 'config.json').write_text('{}')
  (earlier / 'metrics.jsonl').write_text('{"step": 1}\n')
  before = _outputs(tmp_path)
  err = _refused(
      [
          'compare',
          '--workdir',
          str(tmp_path),
          '--model',
          'resnt8',
          '--optimizers',
          'adaloss',
      ],
      capsys,
  )
  assert err.startswith(
      "error: Unknown model 'resnt8' (did you mean 'resnet8'?)"
  )
  assert _outputs(tmp_path) == before


def test_the_process_prints_one_line_and_exits_with_status_2(tmp_path):
  config = _config_file(
      tmp_path, lambda c: c['optimizer']['args'].update(weight_decy=0.0)
  )
  env = dict(
      os.environ,
      PYTHONPATH=os.pathsep.join(
          p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p
      ),
  )
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments',
          'adaloss',
          '-c',
          config,
          '--workdir',
          str(tmp_path / 'run'),
      ],
      env=env,
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert result.returncode == 2
  assert result.stderr == (
      f"error: {config}: unknown key 'optimizer.args.weight_decy'; did you "
      "mean 'optimizer.args.weight_decay'?\n"
  )
  assert not (tmp_path / 'run').exists()


def test_distributed_flags_reach_jax_distributed_initialize(
    monkeypatch, capsys
):
  import jax  # pylint: disable=g-import-not-at-top

  calls = []
  monkeypatch.setattr(
      jax.distributed, 'initialize', lambda **kwargs: calls.append(kwargs)
  )
  # `plot` of nothing: refused once JAX's distributed runtime is set up.
  assert (
      cli.main([
          '--coordinator-address',
          '10.0.0.1:1234',
          '--num-processes',
          '2',
          '--process-id',
          '1',
          'plot',
          'missing',
      ])
      == 2
  )
  assert calls == [{
      'coordinator_address': '10.0.0.1:1234',
      'num_processes': 2,
      'process_id': 1,
      # JAX's deadline after the one of --initialization-timeout (300 s).
      'initialization_timeout': 360,
  }]
  assert 'Nothing to plot' in capsys.readouterr().err


def test_distributed_without_a_cluster_says_which_flags_to_give(
    monkeypatch, capsys
):
  import jax  # pylint: disable=g-import-not-at-top

  def no_cluster(**kwargs):
    del kwargs
    raise ValueError('Number of processes must be defined.')

  monkeypatch.setattr(jax.distributed, 'initialize', no_cluster)
  err = _refused(['--distributed', 'plot', 'missing'], capsys)
  assert err == (
      'error: jax.distributed.initialize(): Number of processes must be '
      'defined. Outside Cloud TPU, Slurm and Open MPI, give '
      '--coordinator-address, --num-processes and --process-id.\n'
  )
