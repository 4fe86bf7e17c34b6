"""``--micro-batch`` and the memory check before training.

The equality tests run on the test session's eight host devices, the batch
split over them as in training.
"""

import os
import pathlib
import subprocess
import sys

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

import experiments
from experiments import cli, memory_check, train
from experiments.configs import adaloss as adaloss_config
from experiments.configs import default

ROOT = pathlib.Path(experiments.__file__).parent.parent
BATCH = 32
# Without BatchNorm and dropout, micro-batches change only the order of
# float32 sums (over 32 examples, then over micro-batches): a few units in
# the last place of a leaf's largest entries. 1e-5 of a leaf's largest
# magnitude (80 float32 epsilons) allows that, and catches a micro-batch left
# out or weighted wrongly, which moves a leaf by a quarter.
TOLERANCE = 1e-5

METHODS = {
    'adaloss': (0.5, {'b0': 1.0}),
    'adamw': (3e-3, {'weight_decay': 1e-2}),
    'adadiff': (1e-2, {}),
    'acme': (0.1, {'adapt_learning_rate': True, 'adam': True}),
}


def _batches(mesh, num_batches=2):
  rng = np.random.default_rng(0)
  sharding = NamedSharding(mesh, P('data'))
  return [
      jax.device_put(
          {
              'image': rng.normal(size=(BATCH, 32, 32, 3)).astype(np.float32),
              'label': rng.integers(0, 10, BATCH).astype(np.int32),
              'mask': np.ones(BATCH, bool),
          },
          sharding,
      )
      for _ in range(num_batches)
  ]


def _train(config, micro_batch, batches, mesh):
  """The state, metrics and statistics after a step on each of `batches`."""
  graphdef, state, optimizer = train.create_train_state(config, 10)
  step = jax.jit(
      lambda state, batch: train.train_step(
          graphdef,
          optimizer.tx,
          state,
          batch,
          micro_batch=micro_batch,
          with_stats=True,
      )
  )
  state = jax.device_put(state, NamedSharding(mesh, P()))
  for batch in batches:
    state, metrics, stats = step(state, batch)
  return state, metrics, stats


def _assert_close(want, got, what, slack=0.0):
  for path, a, b in zip(
      jax.tree_util.tree_flatten_with_path(want)[0],
      jax.tree.leaves(want),
      jax.tree.leaves(got),
  ):
    name = f'{what}{jax.tree_util.keystr(path[0])}'
    a, b = np.asarray(a), np.asarray(b)
    if not np.issubdtype(a.dtype, np.floating):
      np.testing.assert_array_equal(a, b, err_msg=name)
    elif a.size:
      scale = float(np.max(np.abs(a)))
      np.testing.assert_allclose(
          b, a, rtol=0, atol=TOLERANCE * scale + slack, err_msg=name
      )


@pytest.mark.parametrize('method', METHODS)
def test_micro_batches_give_the_whole_batch_step(method):
  learning_rate, kwargs = METHODS[method]
  config = default.get_config(
      model='mlp',
      optimizer=method,
      learning_rate=learning_rate,
      optimizer_kwargs=kwargs,
      batch_size=BATCH,
  )
  mesh = Mesh(np.asarray(jax.devices()), ('data',))
  batches = _batches(mesh)
  # Four micro-batches of one example per device.
  want = _train(config, None, batches, mesh)
  got = _train(config, 8, batches, mesh)

  _assert_close(want[2]['gradient'], got[2]['gradient'], 'gradient')
  _assert_close(want[1], got[1], 'metrics')
  # AdaLoss's accumulator (from `value`), ACME's adapted rate, its branch
  # and rejections (from `value_fn`), every method's moments.
  _assert_close(want[0].opt_state, got[0].opt_state, 'opt_state')
  # Adam-like steps divide by the gradient's root mean square, which for an
  # entry whose gradient is near zero magnifies its rounding: a hundredth of
  # a step.
  _assert_close(
      want[0].params, got[0].params, 'params', slack=learning_rate / 100
  )


def test_batchnorm_running_mean_moves_once_as_with_the_whole_batch():
  config = default.get_config(
      model='resnet8', optimizer='adamw', batch_size=BATCH
  )
  mesh = Mesh(np.asarray(jax.devices()), ('data',))
  batches = _batches(mesh, num_batches=1)
  want = _train(config, None, batches, mesh)[0].model_state
  got = _train(config, 8, batches, mesh)[0].model_state
  # The first BatchNorm normalises the stem's output, which micro-batches
  # do not change: its running mean and the whole batch's agree.
  stem = lambda state: state['bn1']['mean'].value  # noqa: E731
  _assert_close(stem(want), stem(got), 'mean')


def test_a_micro_batch_must_divide_over_the_batch_and_devices(tmp_path):
  config = default.get_config(
      model='mlp', batch_size=BATCH, micro_batch=12, max_steps=1
  )
  with pytest.raises(ValueError, match='one of 32, 16, 8.$'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_the_proposed_micro_batch_is_the_largest_predicted_to_fit():
  def estimate(micro_batch):  # 10 MiB and 1 MiB an example
    return (10 + micro_batch) * 2**20

  available = memory_check.Available(50 * 2**20, 'a test')
  with pytest.raises(ValueError) as refusal:
    memory_check.check_fits(
        estimate(128),
        available,
        micro_batch=128,
        batch_size=128,
        num_devices=4,
        estimate=estimate,
    )
  # 90% of 50 MiB is 45 MiB: 32 needs 42 MiB; 64, 74 MiB.
  assert str(refusal.value) == (
      "The training step needs about 138.0 MiB per device (XLA's estimate "
      'for a batch of 128), more than 90% of the 50.0 MiB available (a '
      'test); nothing was run. Add --micro-batch 32 (about 42.0 MiB): each '
      'step then sums the loss and gradient over micro-batches.'
  )


class _FakeDevice:
  """A device as the memory check reads it."""

  def __init__(self, platform, stats, kind='test accelerator'):
    self.platform, self.device_kind, self._stats = platform, kind, stats

  def memory_stats(self):
    return self._stats


def test_an_accelerator_offers_its_allocators_least_free_memory(monkeypatch):
  monkeypatch.delenv(memory_check.LIMIT_VARIABLE, raising=False)
  devices = [
      _FakeDevice('gpu', {'bytes_limit': 80, 'bytes_in_use': 10}),
      _FakeDevice('gpu', {'bytes_limit': 80, 'bytes_in_use': 30}),
  ]
  monkeypatch.setattr(memory_check.jax, 'local_devices', lambda: devices)
  assert memory_check.available_per_device() == (50, 'test accelerator memory')


def test_cpu_devices_share_the_hosts_available_memory(monkeypatch, tmp_path):
  monkeypatch.delenv(memory_check.LIMIT_VARIABLE, raising=False)
  meminfo = tmp_path / 'meminfo'
  meminfo.write_text(
      'MemTotal:       24000000 kB\nMemAvailable:    8000000 kB\n'
  )
  monkeypatch.setattr(memory_check, '_MEMINFO', meminfo)
  devices = [_FakeDevice('cpu', None), _FakeDevice('cpu', None)]
  monkeypatch.setattr(memory_check.jax, 'local_devices', lambda: devices)
  assert memory_check.available_per_device() == (
      8000000 * 1024 // 2,
      f'MemAvailable of {meminfo}, shared by 2 CPU devices',
  )
  # Without /proc/meminfo, or on a device that reports nothing: unknown.
  monkeypatch.setattr(memory_check, '_MEMINFO', tmp_path / 'absent')
  assert memory_check.available_per_device() is None
  devices[:] = [_FakeDevice('tpu', {})]
  assert memory_check.available_per_device() is None


def test_a_step_that_cannot_fit_is_refused_before_training(
    tmp_path, monkeypatch, capsys
):
  monkeypatch.setenv(memory_check.LIMIT_VARIABLE, '1000')

  def no_training(*args, **kwargs):
    raise AssertionError('a training step ran')

  monkeypatch.setattr(train.Steps, 'train', no_training)
  status = cli.main([
      'adaloss',
      '-c',
      str(adaloss_config.CONFIG_DIR / 'config_cifar100_adaloss.json'),
      '--model',
      'mlp',
      '--bs',
      '16',
      '--no-progress',
      '--workdir',
      str(tmp_path / 'run'),
  ])

  assert status == 2
  err = capsys.readouterr().err
  assert err.startswith('error: The training step needs about ')
  assert err.count('\n') == 1
  assert (
      '(EXPERIMENTS_MEMORY_LIMIT); nothing was run. Even --micro-batch 8 '
      'needs about '
  ) in err
  assert not (tmp_path / 'run').exists()


def test_the_process_says_what_fits_in_one_line(tmp_path):
  env = dict(
      os.environ,
      PYTHONPATH=os.pathsep.join(
          p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p
      ),
      XLA_FLAGS='--xla_force_host_platform_device_count=1',
  )
  # ResNet-8's step on a batch of 256 needs about 240 MiB, on one example
  # 8 MiB (measured, jax 0.10.2 on a CPU): 90 of a 100 MiB limit fit 64.
  env[memory_check.LIMIT_VARIABLE] = str(100 * 2**20)

  def run():
    return subprocess.run(
        [
            sys.executable,
            '-m',
            'experiments',
            'adaloss',
            '-c',
            str(adaloss_config.CONFIG_DIR / 'config_cifar100_adaloss.json'),
            '--model',
            'resnet8',
            '--bs',
            '256',
            '--max-steps',
            '1',
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

  refused = run()
  assert refused.returncode == 2, refused.stderr
  # One message, after the lines that announce the step's compilation.
  message = [
      line
      for line in refused.stderr.splitlines()
      if not line.startswith(('Compiling the training step', 'Compiled the'))
  ]
  assert len(message) == 1, refused.stderr
  assert message[0].startswith('error: The training step needs about ')
  assert 'Add --micro-batch 64 (about ' in refused.stderr, refused.stderr
  assert not (tmp_path / 'run').exists()
