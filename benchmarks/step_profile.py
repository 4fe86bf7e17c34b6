r"""Where ResNet-20's forward-backward time goes, by kind of operation.

The jitted loss and gradient of ``experiments.models``' ResNet-20 (batch 128,
with and without BatchNorm) runs under JAX's profiler; the time of each of its
operations (XLA:CPU's thunks, a GPU's kernels) is summed by what the compiled
program says the operation is: a convolution, a matrix product, a transpose
or copy (of a layout), a reduction, or another (elementwise) fusion. Each XLA
setting runs in a process of its own, one after the other.

This is the measurement behind the end-to-end commentary: on XLA:CPU the
weight gradient of a convolution needs its operands transposed (batch
innermost), XLA fuses their elementwise producers into those transposes, and
the fused transposes take nearly as long as the convolutions themselves.

    python benchmarks/step_profile.py                # prints the table
    python benchmarks/step_profile.py --settings default \
        'instruction fusion off'
    python benchmarks/step_profile.py --write        # updates BENCHMARKS.md
"""

import argparse
import collections
import gzip
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Any

import end_to_end
import jax
import report
import resnet20

KINDS = (
    'convolution',
    'matrix product',
    'transpose or copy',
    'reduction',
    'elementwise and other',
)

# The settings profiled on a CPU (XLA_SETTINGS' flags are XLA:CPU's; a GPU
# profiles its default alone): those that decide where the transposes' time
# goes.
CPU_SETTINGS = [
    'default',
    'YNNPACK fusions off',
    'instruction fusion off',
    'instruction fusion and YNNPACK fusions off',
    'YNNPACK for elementwise ops only',
    'YNNPACK for elementwise ops and reductions',
    'YNNPACK for elementwise ops and reductions, instruction fusion off',
]

# XLA:GPU's command buffers (CUDA graphs) run many operations as one, and
# the profiler then names each kernel by its command buffer instead of its
# operation; the flag is XLA's on every platform and does nothing on a CPU.
PROFILE_FLAGS = '--xla_gpu_enable_command_buffer='

_COMPUTATION = re.compile(r'^(?:ENTRY )?%(\S+) .*\{$')
# `%name = shape opcode(operands), attributes`; a tuple shape is parenthesised.
_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT )?%(\S+) = (?:\(.*?\)|\S+) ([a-z][\w-]*)\((.*)$'
)
_CALLED = re.compile(r'(?:calls|to_apply)=%([\w.-]+)')
_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def operation_kinds(hlo_text: str) -> dict[str, str]:
  """The kind (one of ``KINDS``) of each operation of a compiled program.

  An operation is what the runtime executes and the profiler names: an
  instruction of the entry computation. A fusion, or a library call that
  wraps a computation, is of the kind of the most telling operation it calls:
  a convolution, else a matrix product, else a transpose or copy (of a
  layout), else a reduction.

  Args:
    hlo_text: ``compiled.as_text()`` of the program.

  Returns:
    Instruction name -> kind.
  """
  opcodes = collections.defaultdict(set)  # computation -> opcodes it runs
  calls = collections.defaultdict(set)  # computation -> computations
  entry_operations = {}  # name -> (opcode, called, target)
  computation, is_entry = None, False
  for line in hlo_text.splitlines():
    if match := _COMPUTATION.match(line):
      computation, is_entry = match.group(1), line.startswith('ENTRY')
      continue
    if computation is None or not (match := _INSTRUCTION.match(line)):
      continue
    name, opcode, rest = match.groups()
    target = _TARGET.search(rest)
    opcodes[computation].add(
        f'custom-call:{target.group(1)}' if target else opcode
    )
    called = set(_CALLED.findall(rest))
    calls[computation] |= called
    if is_entry:
      entry_operations[name] = (opcode, called, target and target.group(1))

  def reached(names, seen):
    for name in names - seen:
      seen.add(name)
      reached(calls[name], seen)
    return seen

  kinds = {}
  for name, (opcode, called, target) in entry_operations.items():
    ops = {opcode} | ({f'custom-call:{target}'} if target else set())
    for callee in reached(called, set()):
      ops |= opcodes[callee]
    # Library calls (cuDNN, cuBLAS) are custom calls named by their target.
    targets = ' '.join(
        op for op in ops if op.startswith('custom-call:')
    ).lower()
    if 'convolution' in ops or 'conv' in targets:
      kinds[name] = 'convolution'
    elif 'dot' in ops or 'gemm' in targets or 'matmul' in targets:
      kinds[name] = 'matrix product'
    elif {'transpose', 'copy'} & ops:
      kinds[name] = 'transpose or copy'
    elif {'reduce', 'reduce-window'} & ops:
      kinds[name] = 'reduction'
    else:
      kinds[name] = 'elementwise and other'
  return kinds


def traced_times(trace_dir: str, module: str) -> dict[str, float]:
  """Microseconds that each operation of `module` took in a trace, summed.

  An operation's events are its device's where the trace has a device's
  (``/device:GPU:0``, a GPU's kernels), else the host's (XLA:CPU's thunks):
  a GPU's host may record the launches under the same names.
  """
  host, device = collections.Counter(), collections.Counter()
  for path in pathlib.Path(trace_dir).rglob('*.trace.json.gz'):
    with gzip.open(path) as f:
      events = json.load(f).get('traceEvents', [])
    processes = {
        event['pid']: event['args'].get('name', '')
        for event in events
        if event.get('ph') == 'M' and event.get('name') == 'process_name'
    }
    for event in events:
      args = event.get('args', {})
      if event.get('ph') == 'X' and args.get('hlo_module') == module:
        on_device = processes.get(event['pid'], '').startswith('/device:')
        (device if on_device else host)[args['hlo_op']] += event['dur']
  return device or host


def profile(
    *,
    batch_norm: bool,
    batch_size: int,
    depth: int,
    rounds: int,
    traced_steps: int,
) -> dict[str, Any]:
  """Median milliseconds of the forward-backward pass and its time per kind.

  Returns:
    ``step``: the median milliseconds of a call; for each of ``KINDS``, the
    milliseconds per call of its operations; ``transposes``: how many
    operations of the program are transposes or copies; ``device`` and
    ``platform``.
  """
  graphdef, params, batch_stats = resnet20.split_model(
      batch_norm=batch_norm, depth=depth
  )
  loss = resnet20.loss_function(graphdef)
  images, labels = resnet20.random_batch(batch_size)
  compiled, step = resnet20.gradient_program(
      loss, params, batch_stats, images, labels
  )
  module = re.match(r'HloModule (\S+?),', compiled.as_text()).group(1)
  kinds = operation_kinds(compiled.as_text())
  seconds = report.time_alternately({'step': step}, rounds=rounds, warmup=0)[
      'step'
  ]
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(traced_steps):
        step()
    per_operation = traced_times(trace_dir, module)
  if not per_operation:
    raise RuntimeError(f'The profiler recorded no operation of {module}.')
  result = dict.fromkeys(KINDS, 0.0)
  for name, microseconds in per_operation.items():
    result[kinds.get(name, 'elementwise and other')] += (
        microseconds / 1e3 / traced_steps
    )
  transposes = sum(kind == 'transpose or copy' for kind in kinds.values())
  return {
      'step': 1e3 * statistics.median(seconds),
      **result,
      'transposes': transposes,
      'device': report.device_description(),
      'platform': jax.devices()[0].platform,
  }


def run_setting(flags: str, args) -> dict[str, dict[str, Any]]:
  """:func:`profile` with and without BatchNorm in a process with `flags`
  (and ``PROFILE_FLAGS``)."""
  command = [
      sys.executable,
      __file__,
      '--profile-worker',
      '--batch-size',
      str(args.batch_size),
      '--depth',
      str(args.depth),
      '--rounds',
      str(args.rounds),
      '--traced-steps',
      str(args.traced_steps),
      '--batch-norm',
      *('on' if b else 'off' for b in args.batch_norm),
  ]
  env = {**os.environ, 'XLA_FLAGS': f'{flags} {PROFILE_FLAGS}'.strip()}
  output = subprocess.run(
      command, env=env, check=True, capture_output=True, text=True
  ).stdout
  return json.loads(output.splitlines()[-1])


def table(args) -> tuple[str, str]:
  """The markdown table of every setting, and JAX's platform."""
  results = {
      setting: run_setting(end_to_end.XLA_SETTINGS[setting], args)
      for setting in args.settings
  }
  first = next(iter(results.values()))[_norm_key(args.batch_norm[0])]
  lines = [
      f'Device: {first["device"]}; {report.host_description()}.',
      f'`jax.grad` of the loss of ResNet-{args.depth}, batch '
      f'{args.batch_size} of random 32x32x3 images: "step" is the median of '
      f'{args.rounds} blocking calls; the other columns are milliseconds per '
      f'call of its operations by kind, summed over {args.traced_steps} calls '
      "under JAX's profiler (operations that overlap are each counted, so a "
      'row may sum to more than its step). '
      + (
          'On XLA:CPU the convolutions that Eigen computes (all of them with '
          'YNNPACK fusions off) run asynchronously and their events time only '
          'their launch, so there the convolution column is not what they '
          'cost; the other columns are synchronous loops. '
          if first['platform'] == 'cpu'
          else "XLA's command buffers are off (`"
          + PROFILE_FLAGS
          + '`), as they hide which operation a kernel is. '
      )
      + 'XLA_FLAGS of each setting as in `end_to_end.py`.',
      '',
      '| XLA setting | BatchNorm | step (ms) | '
      + ' | '.join(KINDS)
      + ' | transposes and copies in the program |',
      '| --- | --- | ---: |' + ' ---: |' * len(KINDS) + ' ---: |',
  ]
  for setting, by_norm in results.items():
    for batch_norm in args.batch_norm:
      row = by_norm[_norm_key(batch_norm)]
      lines.append(
          f'| {setting} | {_norm_key(batch_norm)} | {row["step"]:.0f} | '
          + ' | '.join(f'{row[kind]:.0f}' for kind in KINDS)
          + f' | {row["transposes"]} |'
      )
  return '\n'.join(lines), first['platform']


def _norm_key(batch_norm: bool) -> str:
  return 'on' if batch_norm else 'off'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  resnet20.add_model_arguments(parser)
  parser.add_argument(
      '--rounds', type=int, default=7, help='timed calls of each program'
  )
  parser.add_argument(
      '--traced-steps', type=int, default=3, help='calls under the profiler'
  )
  parser.add_argument(
      '--batch-norm', nargs='+', choices=['on', 'off'], default=['on', 'off']
  )
  parser.add_argument(
      '--settings',
      nargs='+',
      choices=list(end_to_end.XLA_SETTINGS),
      help=(
          'XLA settings of end_to_end.py (default: those of '
          'CPU_SETTINGS on a CPU, the default alone elsewhere)'
      ),
  )
  parser.add_argument(
      '--write',
      action='store_true',
      help='update this section of BENCHMARKS.md',
  )
  parser.add_argument(
      '--profile-worker', action='store_true', help=argparse.SUPPRESS
  )
  args = parser.parse_args()
  args.batch_norm = [b == 'on' for b in args.batch_norm]

  if args.profile_worker:
    print(
        json.dumps({
            _norm_key(batch_norm): profile(
                batch_norm=batch_norm,
                batch_size=args.batch_size,
                depth=args.depth,
                rounds=args.rounds,
                traced_steps=args.traced_steps,
            )
            for batch_norm in args.batch_norm
        })
    )
    return
  if args.settings is None:
    platform, _ = report.jax_platform()
    args.settings = CPU_SETTINGS if platform == 'cpu' else ['default']
  markdown, platform = table(args)
  print(markdown)
  if args.write:
    report.write_run(
        'step-profile',
        'Where the forward-backward time goes',
        'python benchmarks/step_profile.py --write',
        markdown,
        platform,
    )


if __name__ == '__main__':
  main()
