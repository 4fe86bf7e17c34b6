"""`python -m experiments robustness`: a tiny grid, its table, its resumption.

Adam and SGD at two rates, one seed, three epochs of four steps of the small
convnet on digits, run once through the command line; the tests read its
folder. SGD (momentum 0.9) at a rate of 1e4 blows up: its loss is not finite.
"""

import json
import math
import pathlib
import re
import subprocess
import sys

import child_runs
import numpy as np
import pytest

from experiments import (
    cli,
    input_pipeline,
    robustness,
    robustness_report,
    robustness_run,
    run_directory,
)
from experiments.configs import robustness as robustness_config

PNG = b'\x89PNG\r\n\x1a\n'
GOOD_RATE, DIVERGING_RATE = 0.01, 1e4
FLAGS = [
    'robustness',
    '--methods',
    'sgd',
    '--rates',
    str(GOOD_RATE),
    str(DIVERGING_RATE),
    '--seeds',
    '1',
    '--epochs',
    '3',
    '--max-steps-per-epoch',
    '4',
]
TIMING_NOTE = "Adam's program took"


def _flags(workdir, *more):
  return [*FLAGS, '--workdir', str(workdir), *more]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  folder = tmp_path_factory.mktemp('robustness')
  assert cli.main(_flags(folder, '--no-progress')) == 0
  return folder


def _rows(text: str) -> list[list[str]]:
  return [
      [cell.strip() for cell in line.strip('|').split('|')]
      for line in text.splitlines()
      if line.startswith('|')
  ]


def _summary_rows(workdir) -> dict[str, list[str]]:
  header, _, *rows = _rows((workdir / robustness_run.TABLE_FILE).read_text())
  assert header[-1] == 'time per step vs Adam'
  return {row[0]: row[1:] for row in rows if len(row) == len(header)}


def _without_timings(text: str) -> str:
  """The table less what the clock measured: the time column and note."""
  kept = []
  for line in text.splitlines():
    if line.startswith(TIMING_NOTE):
      continue
    if line.startswith('| ') and line.count('|') == 8:
      line = line[: line.rstrip(' |').rfind('|')]
    kept.append(line)
  return '\n'.join(kept)


def _result(workdir, method):
  return json.loads((workdir / method / robustness_run.RESULT_FILE).read_text())


def test_the_table_and_the_figure_are_written(workdir):
  rows = _summary_rows(workdir)
  assert list(rows) == ['adam', 'sgd']  # adam, the reference, always runs
  assert rows['sgd'][0] == 'the step (momentum 0.9)'
  medians = {
      row[0]: row[1:]
      for row in _rows((workdir / robustness_run.TABLE_FILE).read_text())
      if len(row) == 3
  }
  assert medians['method'] == [f'{GOOD_RATE:g}', f'{DIVERGING_RATE:g}']
  for method in ('adam', 'sgd'):
    final = _result(workdir, method)['test_metric'][0]
    assert medians[method][0] == f'{final[0]:.4f}'
  assert (workdir / robustness_run.FIGURE_FILE).read_bytes().startswith(PNG)


def test_a_rate_chosen_to_diverge_is_detected(workdir):
  adam, sgd = _result(workdir, 'adam'), _result(workdir, 'sgd')
  assert sgd['test_loss'][0][1] is None  # not finite, stored as null
  assert math.isfinite(adam['test_loss'][0][0])
  grid = json.loads((workdir / robustness_run.GRID_FILE).read_text())
  facts = robustness_report.TaskFacts('accuracy', True, _chance(), 'digits')
  sgd_result = robustness_run.read_result(workdir / 'sgd')
  assert robustness_report.diverged(
      np.asarray(sgd_result.test_metric),
      np.asarray(sgd_result.test_loss),
      facts,
  )[0].tolist()[1]
  for method in ('adam', 'sgd'):
    result = robustness_run.read_result(workdir / method)
    summary = robustness_report.summarize(result, grid['rates'], facts)
    assert _summary_rows(workdir)[method][4] == f'{summary.diverged} of 2'
  assert not robustness_report.diverged(
      np.asarray(adam['test_metric'][0][0]),
      np.asarray(adam['test_loss'][0][0]),
      facts,
  )


def _chance() -> float:
  """The share of the most frequent class in digits' test split."""
  labels = input_pipeline.read_split('digits', 'test').labels
  return float(np.bincount(labels).max() / len(labels))


def test_the_time_ratio_is_finite_and_positive(workdir):
  rows = _summary_rows(workdir)
  assert rows['adam'][-1] == '1.00'
  ratio = float(rows['sgd'][-1])
  assert math.isfinite(ratio) and ratio > 0
  results = {
      m: robustness_run.read_result(workdir / m) for m in ('adam', 'sgd')
  }
  assert (
      f'{robustness_report.time_ratio(results, "sgd"):.2f}' == rows['sgd'][-1]
  )


class _CtrlCBeforeTheFirstEpochEnds(run_directory.InterruptRequest):
  """A Ctrl-C recorded as soon as the grid starts."""

  def __enter__(self):
    super().__enter__()
    self.requested = True
    return self


def test_resume_after_an_interrupt_completes_the_same_table(
    workdir, tmp_path, monkeypatch, capsys, caplog
):
  with monkeypatch.context() as patched:
    patched.setattr(
        run_directory, 'InterruptRequest', _CtrlCBeforeTheFirstEpochEnds
    )
    assert cli.main(_flags(tmp_path, '--no-progress')) == 130
  assert capsys.readouterr().err.endswith(
      'interrupted at step 4; resume with the same command and --resume\n'
  )
  # Stopped within Adam's grid, after its first epoch.
  assert not (tmp_path / 'adam' / robustness_run.RESULT_FILE).exists()
  assert not (tmp_path / robustness_run.TABLE_FILE).exists()
  assert cli.main(_flags(tmp_path, '--no-progress', '--resume')) == 0
  assert 'adam: resuming after epoch 1.' in caplog.text
  assert _without_timings(
      (tmp_path / robustness_run.TABLE_FILE).read_text()
  ) == _without_timings((workdir / robustness_run.TABLE_FILE).read_text())
  assert len(_result(tmp_path, 'adam')['timed_in']) == 1


def test_ctrl_c_stops_the_grid_and_resume_completes_it(
    workdir, tmp_path, monkeypatch
):
  # The two processes share compiled programs.
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  argv = _flags(tmp_path / 'grid')
  code, output, step = child_runs.interrupt_after_progress(argv)
  assert code == 130, output
  assert 'Traceback' not in output
  assert re.search(r'^step \d+/24, ', output, flags=re.MULTILINE), output
  assert step > 0, output
  assert not (tmp_path / 'grid' / robustness_run.TABLE_FILE).exists()
  subprocess.run(
      [sys.executable, '-m', 'experiments', *argv, '--resume', '--no-progress'],
      cwd=child_runs.ROOT,
      check=True,
      capture_output=True,
      timeout=child_runs.PATIENCE_SECONDS,
  )
  assert _without_timings(
      (tmp_path / 'grid' / robustness_run.TABLE_FILE).read_text()
  ) == _without_timings((workdir / robustness_run.TABLE_FILE).read_text())


def test_a_folder_of_another_grid_is_refused(workdir, capsys):
  assert cli.main(_flags(workdir, '--epochs', '2', '--resume')) == 2
  assert 'holds a grid with other settings (epochs)' in capsys.readouterr().err
  assert cli.main(_flags(workdir)) == 2
  assert 'already holds a robustness grid' in capsys.readouterr().err


def test_the_default_grid():
  grid, methods, workdir = robustness.grid_from_args(
      cli.build_parser().parse_args(['robustness'])
  )
  assert workdir == pathlib.Path('runs/robustness/digits')
  assert methods == list(robustness_config.DEFAULT_METHODS)
  assert len(methods) == 15 and 'acme_asam' not in methods
  np.testing.assert_allclose(
      grid.rates, 10.0 ** np.arange(-4, 1.01, 0.5), rtol=1e-3
  )
  assert (grid.seeds, grid.epochs, grid.batch_size) == ((0, 1, 2), 5, 64)


def _markov_text(rng, words: list[str], num_lines: int) -> str:
  """Lines in PTB's layout drawn from a sparse Markov chain over `words`,
  which a small LSTM learns within a few steps."""
  transitions = np.random.default_rng(0).dirichlet(
      np.full(len(words), 0.1), size=len(words)
  )
  lines = []
  for _ in range(num_lines):
    word = rng.integers(len(words))
    line = []
    for _ in range(rng.integers(5, 15)):
      line.append(words[word])
      word = rng.choice(len(words), p=transitions[word])
    lines.append(' ' + ' '.join(line) + '\n')
  return ''.join(lines)


def test_the_language_model_on_generated_text(tmp_path):
  words = [f'w{i}' for i in range(30)]
  rng = np.random.default_rng(1)
  text = tmp_path / 'text'
  text.mkdir()
  for split, num_lines in (('train', 300), ('valid', 10), ('test', 60)):
    (text / f'ptb.{split}.txt').write_text(_markov_text(rng, words, num_lines))
  flags = [
      'robustness', '--task', 'ptb', '--data', str(text),
      '--data-dir', str(tmp_path / 'tfds'), '--methods', 'adam',
      '--rates', str(GOOD_RATE), str(DIVERGING_RATE), '--seeds', '1',
      '--epochs', '1', '--max-steps-per-epoch', '10', '--batch-size', '4',
      '--bptt', '8', '--emsize', '8', '--nhid', '8', '--nlayers', '1',
      '--workdir', str(tmp_path / 'grid'), '--no-progress',
  ]  # fmt: skip
  assert cli.main(flags) == 0
  rows = _summary_rows(tmp_path / 'grid')
  assert list(rows) == ['adam']
  vocab_size = len(words) + 1  # and <eos>
  assert (
      'than chance (31)'
      in (tmp_path / 'grid' / robustness_run.TABLE_FILE).read_text()
  )
  (perplexity,) = _result(tmp_path / 'grid', 'adam')['test_metric']
  assert perplexity[0] < vocab_size  # learned from the text
  assert rows['adam'][4] == '1 of 2'  # the rate of 1e4 diverged
  figure = tmp_path / 'grid' / robustness_run.FIGURE_FILE
  assert figure.read_bytes().startswith(PNG)
