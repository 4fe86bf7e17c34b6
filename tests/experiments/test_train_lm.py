"""The language-model loop and ``python -m experiments adadiff-ptb`` end to end.

Runs train a 2-layer AWD-LSTM of 8 and 16 units on a tiny corpus in PTB's
format written to a temporary directory; the training windows are padded to
one length and the evaluation windows are one length per batch size, so the
steps compile once each and the runs of a test share them.
"""

import dataclasses
import json
import math
import re
import signal

import child_runs
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import run_files

from experiments import (
    cli,
    lm_pipeline,
    ptb,
    ptb_check,
    run_directory,
    train_lm,
)
from experiments.configs import adadiff_ptb

_SENTENCES = [
    ' the market rose in the morning',
    ' shares of the company fell',
    ' the company said the market fell in N',
    ' <unk> rose N',
]
_BPTT = 8
_WINDOW_MULTIPLE = 24  # every training window (5 to about 20 steps) fits
# One model and one optimizer for every test here, so that they share the
# compiled steps: AdaDiff, light dropout, the command's flags and the same as
# adadiff_ptb's arguments.
_SETTINGS = {
    'emsize': 8,
    'nhid': 16,
    'nlayers': 2,
    'batch_size': 4,
    'bptt': _BPTT,
    'seed': 3,
    'optimizer': 'adadiff',
    'lr': 0.05,
    'clip': 0.25,
    'dropout': 0.1,
    'dropouth': 0.1,
    'dropouti': 0.1,
    'dropoute': 0.05,
    'wdrop': 0.1,
}
_FLAGS = [f'--{k}={v}' for k, v in _SETTINGS.items()] + [
    f'--window-multiple={_WINDOW_MULTIPLE}',
    '--no-progress',
]


def _lines(seed: int, count: int) -> str:
  rng = np.random.default_rng(seed)
  return ''.join(
      _SENTENCES[i] + '\n' for i in rng.integers(0, len(_SENTENCES), count)
  )


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """PTB prepared from a corpus of 40 training lines (8 windows an epoch)."""
  root = tmp_path_factory.mktemp('ptb')
  (root / 'text').mkdir()
  for name, seed, count in [
      ('ptb.train.txt', 0, 40),
      ('ptb.valid.txt', 1, 30),
      ('ptb.test.txt', 2, 20),
  ]:
    (root / 'text' / name).write_text(_lines(seed, count))
  ptb.prepare(root / 'tfds', manual_dir=root / 'text')
  return root / 'tfds'


def _config(data_dir, **overrides):
  return adadiff_ptb.get_config(
      **_SETTINGS,
      data_dir=str(data_dir),
      window_multiple=_WINDOW_MULTIPLE,
      progress_bar=False,
      **overrides,
  )


def test_adadiff_ptb_command_writes_metrics_and_checkpoints_and_resumes(
    data_dir, tmp_path
):
  command = [
      'adadiff-ptb',
      '--data-dir',
      str(data_dir),
      *_FLAGS,
      '--epochs',
      '2',
      '--when',
      '1',
      '--workdir',
  ]
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  assert cli.main(command + [str(straight)]) == 0
  records = run_directory.read_metrics(straight)
  assert [r['epoch'] for r in records] == [1, 2]
  for record in records:
    for prefix in ('train', 'val', 'test'):
      assert record[f'{prefix}_perplexity'] == pytest.approx(
          math.exp(record[f'{prefix}_loss'])
      )
  assert [r['learning_rate'] for r in records] == pytest.approx([0.05, 0.005])
  assert list((straight / 'tensorboard').iterdir())
  config = json.loads((straight / 'config.json').read_text())
  assert config['optimizer'] == 'adadiff'
  assert config['optimizer_kwargs']['weight_decay'] == 1.2e-6
  steps_in_all = records[-1]['step']
  assert run_files.latest_checkpoint(straight)[0] == steps_in_all

  # Stopped mid-epoch after a checkpoint of its own, then resumed: the
  # windows, the carried state, the dropout streams and the optimizer state
  # pick up where they were.
  assert (
      cli.main(
          command
          + [str(resumed), '--max-steps', '4', '--checkpoint-every', '3']
      )
      == 0
  )
  step, stopped = run_files.latest_checkpoint(resumed)
  assert step == 4 and stopped['progress']['batch'] == 4
  assert cli.main(command + [str(resumed), '--resume']) == 0
  assert [r['step'] for r in run_directory.read_metrics(resumed)] == [4] + [
      r['step'] for r in records
  ]
  for key in ('train_loss', 'val_loss', 'test_loss'):
    assert run_directory.read_metrics(resumed)[-1][key] == records[-1][key], key
  _, want = run_files.latest_checkpoint(straight)
  _, got = run_files.latest_checkpoint(resumed)
  assert got['progress']['data'] == want['progress']['data']
  for a, b in zip(
      jax.tree.leaves(got['state']), jax.tree.leaves(want['state']), strict=True
  ):
    np.testing.assert_array_equal(a, b)


def test_ctrl_c_during_a_step_stops_after_it_with_its_checkpoint(
    data_dir, tmp_path, monkeypatch
):
  original = train_lm.device_window
  windows_read = []

  def device_window_then_ctrl_c(window):
    windows_read.append(window)
    if len(windows_read) == 3:
      signal.raise_signal(signal.SIGINT)
    return original(window)

  monkeypatch.setattr(train_lm, 'device_window', device_window_then_ctrl_c)
  # Python's own, or SIG_IGN in a process started in the background (CI).
  handler = signal.getsignal(signal.SIGINT)
  with pytest.raises(run_directory.Interrupted, match='interrupted at step 3;'):
    train_lm.train_and_evaluate(_config(data_dir, num_epochs=2), str(tmp_path))
  step, checkpoint = run_files.latest_checkpoint(tmp_path)
  assert step == 3 and checkpoint['progress']['batch'] == 3
  assert len(windows_read) == 3
  assert signal.getsignal(signal.SIGINT) is handler  # restored


def test_ctrl_c_checkpoints_and_resume_continues(data_dir, tmp_path):
  """The command in a subprocess, its output a pipe: it announces each
  window length's compilation, prints progress lines, and stops on Ctrl-C
  with a checkpoint and one line."""
  argv = ['adadiff-ptb', '--data-dir', str(data_dir), '--epochs', '1000']
  argv += [flag for flag in _FLAGS if flag != '--no-progress']
  argv += ['--workdir', str(tmp_path)]
  code, output, step = child_runs.interrupt_after_progress(argv)
  assert code == 130, output
  assert 'Traceback' not in output
  assert re.search(
      rf'^Compiling the training step for windows of {_WINDOW_MULTIPLE}'
      r' steps\.\.\.\nCompiled the training step for windows of'
      rf' {_WINDOW_MULTIPLE} steps in \d+\.\d s\.$',
      output,
      flags=re.MULTILINE,
  )
  # 1000 epochs of the rows over bptt windows, the windows' mean length.
  rows = len(ptb.load_tokens('train', data_dir)) // 4
  total = 1000 * math.ceil((rows - 1) / _BPTT)
  assert re.search(rf'^step \d+/~{total}, ', output, flags=re.MULTILINE)
  assert step > 0, output  # the last line says where the run stopped
  assert run_files.latest_checkpoint(tmp_path)[0] == step

  resumed = child_runs.resume(argv, max_steps=step + 2)
  assert f'Resuming {tmp_path} from step {step}.' in resumed
  assert run_directory.read_metrics(tmp_path)[-1]['step'] == step + 2


def test_a_step_runs_on_the_first_window_from_a_zero_state_at_seq_len_over_bptt(
    data_dir, tmp_path
):
  config = _config(data_dir, max_steps=1)
  train_lm.train_and_evaluate(config, str(tmp_path))
  _, checkpoint = run_files.latest_checkpoint(tmp_path)

  # The first window of AWD-LSTM's draws under the seed.
  window = next(
      lm_pipeline.bptt_windows(
          lm_pipeline.batchify(ptb.load_tokens('train', data_dir), 4),
          _BPTT,
          rng=np.random.default_rng(3),
          pad_to_multiple_of=_WINDOW_MULTIPLE,
      )
  )
  assert window.seq_len != _BPTT
  graphdef, state, _ = train_lm.create_train_state(
      config, len(ptb.load_vocabulary(data_dir))
  )
  totals = {'loss_sum': jnp.zeros([]), 'count': jnp.zeros([])}
  want, _ = train_lm.jitted_train_step(graphdef, config)(
      state,
      totals,
      train_lm.device_window(window),
      np.float32(window.seq_len / _BPTT),
  )
  for got, expected in zip(
      jax.tree.leaves(checkpoint['state']['params']),
      jax.tree.leaves(want.params.to_pure_dict()),
      strict=True,
  ):
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize('optimizer', train_lm.METHODS)
def test_scaling_the_updates_is_scaling_the_rate(optimizer):
  """What the loop does to follow main.py's per-window change of `lr`: for
  every method it allows, over steps that clip and that do not."""
  scale = 0.7
  tx, at_scaled_rate = (
      train_lm.create_optimizer(
          adadiff_ptb.get_config(
              optimizer=optimizer, lr=lr, clip=1.0, wdecay=0.01
          )
      )
      for lr in (0.1, 0.1 * scale)
  )
  params = {'w': jnp.linspace(-1.0, 1.0, 5)}
  state, reference_state = tx.init(params), at_scaled_rate.init(params)
  reference_params = params
  for gradient_scale in (10.0, 0.1, 1.0):
    grads = jax.tree.map(lambda w, s=gradient_scale: s * (3 * w - 1), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, optax.tree.scale(scale, updates))
    reference, reference_state = at_scaled_rate.update(
        grads, reference_state, reference_params
    )
    reference_params = optax.apply_updates(reference_params, reference)
    np.testing.assert_allclose(params['w'], reference_params['w'], rtol=1e-6)


def test_validation_and_test_are_read_in_10_and_1_columns(
    data_dir, tmp_path, monkeypatch
):
  shapes = []
  original = train_lm.eval_step

  def recording_eval_step(graphdef, params, model_state, carry, window):
    shapes.append(window['inputs'].shape)
    return original(graphdef, params, model_state, carry, window)

  monkeypatch.setattr(train_lm, 'eval_step', recording_eval_step)
  train_lm.train_and_evaluate(_config(data_dir, max_steps=1), str(tmp_path))
  rows = {
      split: len(ptb.load_tokens(split, data_dir)) // columns
      for split, columns in [('validation', 10), ('test', 1)]
  }
  assert shapes == (
      [(_BPTT, 10)] * math.ceil((rows['validation'] - 1) / _BPTT)
      + [(_BPTT, 1)] * math.ceil((rows['test'] - 1) / _BPTT)
  )
  assert train_lm.EVAL_SPLITS == {
      'val': ('validation', 10),
      'test': ('test', 1),
  }


def test_train_step_lowers_the_perplexity_of_a_tiny_corpus(data_dir):
  config = _config(data_dir)
  tokens = ptb.load_tokens('train', data_dir)
  vocab_size = len(ptb.load_vocabulary(data_dir))
  graphdef, state, _ = train_lm.create_train_state(config, vocab_size)
  step = train_lm.jitted_train_step(graphdef, config)

  def perplexity():
    return math.exp(train_lm.evaluate(graphdef, state, tokens, 10, _BPTT))

  before = perplexity()
  totals = {'loss_sum': jnp.zeros([]), 'count': jnp.zeros([])}
  lengths = np.random.default_rng(0)
  data = lm_pipeline.batchify(tokens, 4)
  for _ in range(12):  # epochs of 8 windows
    state = state.replace(carry=train_lm.zero_carry(graphdef, state, 4))
    for window in lm_pipeline.bptt_windows(
        data, _BPTT, rng=lengths, pad_to_multiple_of=_WINDOW_MULTIPLE
    ):
      state, totals = step(
          state,
          totals,
          train_lm.device_window(window),
          np.float32(window.seq_len / _BPTT),
      )
  after = perplexity()
  assert np.isfinite(float(totals['loss_sum']))
  assert before > 0.8 * vocab_size
  assert after < 0.5 * before


def test_an_optimizer_whose_state_depends_on_the_rate_is_refused(data_dir):
  config = dataclasses.replace(_config(data_dir), optimizer='adaloss')
  with pytest.raises(ValueError, match='adadiff, adam, adabelief, sgd'):
    train_lm.train_and_evaluate(config, '.')


def test_unigram_baseline_is_add_one_smoothed():
  train, test = np.array([0, 0, 0, 1]), np.array([0, 2])
  probabilities = np.array([4, 2, 1]) / 7
  want = math.exp(-np.mean(np.log(probabilities[test])))
  assert ptb_check.unigram_perplexity(train, test, 3) == pytest.approx(want)
