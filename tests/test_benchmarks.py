"""The benchmark scripts' pieces, at toy sizes: they measure what they say.

Nothing here is timed; the scripts' own runs produce BENCHMARKS.md.
"""

import gzip
import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / 'benchmarks'))
# pylint: disable=g-import-not-at-top,wrong-import-position
import cifar_read
import end_to_end
import report
import resnet20
import scaling
import step_profile
import update_cost

# pylint: enable=g-import-not-at-top,wrong-import-position


def test_write_section_replaces_only_its_own_section(tmp_path):
  path = tmp_path / 'BENCHMARKS.md'
  path.write_text('# Benchmarks\n\nintro\n')
  report.write_section('a', 'first', path)
  report.write_section('b', 'second', path)
  report.write_section('a', 'third', path)
  text = path.read_text()
  assert text.startswith('# Benchmarks\n\nintro\n')
  assert '<!-- begin a -->\nthird\n<!-- end a -->' in text
  assert '<!-- begin b -->\nsecond\n<!-- end b -->' in text
  assert 'first' not in text
  report.write_run(
      'c', 'Title', 'python c.py --write', '| table |', 'gpu', path
  )
  assert (
      '<!-- begin c-gpu -->\n## Title (GPU)\n\n`python c.py --write`\n\n'
      '| table |\n<!-- end c-gpu -->'
  ) in path.read_text()


def test_time_alternately_calls_every_program_once_per_round():
  calls = []
  samples = report.time_alternately(
      {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')},
      rounds=3,
      warmup=1,
  )
  assert calls == ['a', 'b'] * 4
  assert {name: len(times) for name, times in samples.items()} == {
      'a': 3,
      'b': 3,
  }
  assert report.paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


def test_update_cost_counts_the_compiled_traffic_and_the_state():
  params = {'w': jnp.zeros((256, 128)), 'b': jnp.zeros(128)}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
  buffer_bytes = sum(p.nbytes for p in jax.tree.leaves(params))
  sgd = update_cost.compile_step(optax.sgd(0.1), params, grads)
  adam = update_cost.compile_step(optax.adam(1e-3), params, grads)
  sgd.run()
  adam.run()
  # At least what one fused pass moves: g and p read, p written (+ m, v).
  assert sgd.traffic_bytes >= 3 * buffer_bytes
  assert adam.traffic_bytes >= 7 * buffer_bytes
  assert sgd.state_bytes == 0
  assert adam.state_bytes >= 2 * buffer_bytes


def test_every_method_of_the_update_cost_table_compiles():
  params = {'w': jnp.zeros((8, 4)), 'b': jnp.zeros(4)}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
  for tx, buffers in update_cost.methods().values():
    assert buffers >= 3
    update_cost.compile_step(tx, params, grads).run()


def _column(table: str, header: str) -> dict[str, str]:
  """A Markdown table's column `header`, by the rows' first cell."""
  rows = [
      [cell.strip() for cell in line.strip('|').split('|')]
      for line in table.splitlines()
      if line.startswith('| ') and not line.startswith('| ---')
  ]
  index = rows[0].index(header)
  return {row[0]: row[index] for row in rows[1:]}


def test_the_update_cost_tables_come_from_both_workers_programs():
  shapes = {'w': (16, 8), 'b': (8,)}
  programs, info = update_cost.jax_steps(shapes=shapes)
  assert set(programs) == {'copy', *update_cost.methods()}
  assert set(info['steps']) == set(update_cost.methods())
  samples = report.time_alternately(programs, rounds=1, warmup=0)
  table = update_cost.cost_table(samples, info, rounds=1, min_seconds=0.0)
  ratios = _column(table, 'vs optax.adam')
  assert set(ratios) == set(update_cost.methods())
  assert ratios['optax.adam'] == '1.00'
  assert all(0 < float(r) < math.inf for r in ratios.values()), ratios
  assert set(update_cost.TORCH_COUNTERPARTS) <= set(update_cost.methods())
  pytest.importorskip('torch')
  rules = {rule for rule, _ in update_cost.TORCH_COUNTERPARTS.values()}
  torch_programs, torch_info = update_cost.torch_steps(
      shapes=shapes, rules=sorted(rules)
  )
  assert {'adam', 'adam, fused', 'adadiff'} <= set(torch_programs)
  torch_samples = report.time_alternately(torch_programs, rounds=1, warmup=0)
  table = update_cost.torch_table(samples, torch_samples, torch_info)
  for name in update_cost.TORCH_COUNTERPARTS:
    assert f'\n| {name} | ' in table


def test_sharded_spec_picks_the_largest_divisible_axis():
  P = jax.sharding.PartitionSpec
  assert scaling.sharded_spec((3, 3, 16, 64), 8) == P(None, None, None, 'data')
  assert scaling.sharded_spec((64, 10), 2) == P('data', None)
  assert scaling.sharded_spec((10,), 4) == P()
  assert scaling.sharded_spec((16,), 1) == P()


def test_every_timed_method_has_a_pytorch_counterpart():
  assert set(end_to_end.TORCH_COUNTERPARTS) == set(resnet20.methods())


@pytest.mark.parametrize('batch_norm', [True, False])
def test_the_pytorch_resnet_is_the_jax_one(batch_norm):
  torch_reference = pytest.importorskip('torch_reference')
  _, params, _ = resnet20.split_model(batch_norm=batch_norm)
  model = torch_reference.CifarResNet(20, batch_norm=batch_norm)
  assert resnet20.num_params(params) == sum(
      p.numel() for p in model.parameters()
  )


def test_the_end_to_end_programs_run():
  programs, info = end_to_end.jax_steps(
      batch_norm=True, methods=['optax.adam', 'acme'], batch_size=8, depth=8
  )
  assert set(programs) == {'optax.adam', 'acme'}
  # What the script's table reports of them: a finite, positive time ratio.
  samples = report.time_alternately(programs, rounds=1, warmup=0)
  ratio = report.paired_ratio(samples['acme'], samples['optax.adam'])
  assert math.isfinite(ratio) and ratio > 0, samples
  assert info['platform'] == jax.devices()[0].platform
  pytest.importorskip('torch')
  programs, info = end_to_end.torch_steps(
      batch_norm=True,
      rules=[('adadiff', 1), ('adam', 2)],
      batch_size=8,
      depth=8,
  )
  assert len(programs) == 2
  for run in programs.values():
    run()


def test_step_profile_tells_a_programs_operations_apart():
  def program(images, kernel, matrix):
    features = jax.lax.conv_general_dilated(
        images,
        kernel,
        (1, 1),
        'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    return (
        jnp.transpose(features, (3, 1, 2, 0)),
        jnp.tanh(matrix) @ matrix,
        jnp.exp(matrix).sum(axis=0),
    )

  arguments = (
      jnp.ones((2, 8, 8, 3)),
      jnp.ones((3, 3, 3, 4)),
      jnp.ones((16, 16)),
  )
  kinds = step_profile.operation_kinds(
      jax.jit(program).lower(*arguments).compile().as_text()
  )
  assert set(kinds.values()) <= set(step_profile.KINDS)
  assert {
      'convolution',
      'matrix product',
      'transpose or copy',
      'reduction',
  } <= set(kinds.values())


def test_step_profile_counts_a_devices_events_over_its_hosts(tmp_path):
  def process(pid, name):
    return {
        'ph': 'M',
        'name': 'process_name',
        'pid': pid,
        'args': {'name': name},
    }

  def event(pid, op, duration, module='jit_step'):
    return {
        'ph': 'X',
        'pid': pid,
        'name': op,
        'dur': duration,
        'args': {'hlo_module': module, 'hlo_op': op},
    }

  def write(name, events):
    with gzip.open(tmp_path / name / 'x.trace.json.gz', 'wt') as f:
      json.dump({'traceEvents': events}, f)

  (tmp_path / 'cpu').mkdir()
  write(
      'cpu',
      [
          process(1, '/host:CPU'),
          event(1, 'fusion', 5),
          event(1, 'fusion', 2),
          event(1, 'other', 9, module='jit_x'),
      ],
  )
  assert step_profile.traced_times(tmp_path / 'cpu', 'jit_step') == {
      'fusion': 7
  }
  (tmp_path / 'gpu').mkdir()
  write(
      'gpu',
      [
          process(1, '/host:CPU'),
          process(2, '/device:GPU:0'),
          event(1, 'fusion', 1),
          event(2, 'fusion', 30),
          event(2, 'convolution', 40),
      ],
  )
  assert step_profile.traced_times(tmp_path / 'gpu', 'jit_step') == {
      'fusion': 30,
      'convolution': 40,
  }


def test_jax_platform_is_found_in_a_worker():
  assert report.jax_platform() == (
      jax.devices()[0].platform,
      jax.device_count(),
  )


def test_step_profile_finds_the_operations_in_the_trace():
  row = step_profile.profile(
      batch_norm=True, batch_size=2, depth=8, rounds=1, traced_steps=1
  )
  assert row['step'] > 0
  assert row['convolution'] > 0
  assert row['platform'] == jax.devices()[0].platform


def test_cifar_read_reports_the_new_paths_examples_per_second(tmp_path):
  table = cifar_read.measure(per_batch=4, rounds=1, workdir=tmp_path)
  row = next(line for line in table.splitlines() if 'cifar10_arrays' in line)
  build_seconds, examples_per_second, read_seconds = (
      float(cell.replace(',', '')) for cell in row.split('|')[2:5]
  )
  assert build_seconds > 0 and read_seconds > 0
  # 20 training images over the read time, printed to 3 digits.
  assert examples_per_second == pytest.approx(20 / read_seconds, rel=0.01)
  assert ("TFDS's `cifar10`" in table) == cifar_read.has_tensorflow()


def test_the_binary_layout_is_the_archives_images_as_tfds_reads_them(
    tmp_path,
):
  splits = cifar_read.cifar_archives.write_cifar10(tmp_path / 'a.tar.gz', 3)
  folder = cifar_read.write_binary_layout(tmp_path / 'extracted', splits)
  data = (folder / 'cifar-10-batches-bin' / 'data_batch_2.bin').read_bytes()
  # TFDS's builder: a label byte, then the red, green and blue planes.
  records = np.frombuffer(data, np.uint8).reshape(-1, 1 + 3 * 32 * 32)
  np.testing.assert_array_equal(records[:, 0], splits['train'].labels[3:6])
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(images, splits['train'].images[3:6])
