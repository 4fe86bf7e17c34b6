"""The run directory's metrics: what a run writes, read_metrics reads back."""

import json
import math

from experiments import run_directory
from experiments.configs import default


def test_read_metrics_reads_the_records_in_order(tmp_path):
  records = [
      {'epoch': 1, 'step': 10, 'train_loss': 0.5},
      {'epoch': 2, 'step': 20, 'train_loss': float('nan')},
  ]
  (tmp_path / 'metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in records)
  )
  read = run_directory.read_metrics(str(tmp_path))
  assert read[0] == records[0]
  assert read[1]['step'] == 20 and math.isnan(read[1]['train_loss'])


def test_read_metrics_leaves_out_a_last_line_cut_short(tmp_path):
  # As a process killed while appending a record leaves the file.
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1}\n{"step": 2}\n{"st')
  assert run_directory.read_metrics(tmp_path) == [{'step': 1}, {'step': 2}]


def test_read_metrics_of_a_run_that_wrote_none_is_empty(tmp_path):
  assert not run_directory.read_metrics(tmp_path / 'not_started')


def test_read_metrics_reads_what_a_run_directory_wrote(tmp_path):
  run = run_directory.RunDirectory(default.get_config(), tmp_path / 'run')
  assert not run.start(default.get_config(), step=0)
  written = [
      {'epoch': 1.0, 'step': 3, 'test_accuracy': 0.25},
      {'epoch': 2.0, 'step': 6, 'test_accuracy': 0.5},
  ]
  for record in written:
    run.write(record)
  run.close()
  assert run_directory.read_metrics(tmp_path / 'run') == written
