"""What one optimizer step costs, against optax's built-ins, in one run.

For every transformation of the library and the optax built-ins it is compared
with, times one jitted ``update`` + ``apply_updates`` on a parameter tree shaped
like ResNet-50's (25.6 M float32 parameters), parameters and state donated,
every program called once per round in alternation (median of the rounds). An
optimizer step is memory-bound, so two counts of parameter-sized buffers read
and written per step explain its time:

* nominal: what the method must move in one fused pass (Adam: read g, m, v, p
  and write m, v, p, 7 in all); relative to Adam, the time it should take is
  that count over 7. This is the bound the library aims at.
* compiled: what the compiled program moves, from XLA's cost analysis of it.
  XLA:CPU gives each updated buffer its own pass over its inputs, so Adam
  itself moves 10 there; a method whose time follows its compiled count is
  limited by the compiler's fusion, not by its own arithmetic.

The script also reports the program's temporary buffers (XLA:CPU allocates
them afresh every step, and touching new pages costs time too), the state's
size from the compiled ``init``, and the machine's copy bandwidth, measured in
the same rounds, and how long XLA took to compile each step (once, so a
rough figure; what a user waits for at the first step).

Beside them, in the same rounds, PyTorch's ``optimizer.step()`` on a tree of
the same shapes: ``torch.optim``'s SGD, Adam (with its L2 ``weight_decay``)
and AdamW, and AdaDiff as its authors' optimizer computes it, each in the form
``torch.optim`` picks by default (what the authors' code runs) and, where
PyTorch has one, its fused kernel. JAX and PyTorch run in worker processes of
their own, built one after the other so that no build slows another's timed
compilation.

    python benchmarks/update_cost.py            # prints the tables
    python benchmarks/update_cost.py --no-torch # without PyTorch's steps
    python benchmarks/update_cost.py --write    # and updates BENCHMARKS.md
"""

import argparse
from collections.abc import Callable
import importlib.util
import statistics
import time
from typing import NamedTuple

import end_to_end
import jax
import jax.numpy as jnp
import optax
import report

import optax_adaptive


def resnet50_shapes() -> dict[str, tuple[int, ...]]:
  """The shapes of ResNet-50's parameters in Flax layouts (HWIO kernels)."""
  shapes = {'stem/kernel': (7, 7, 3, 64), 'stem/bn': (2, 64)}
  in_channels = 64
  for stage, (blocks, width) in enumerate(
      zip((3, 4, 6, 3), (64, 128, 256, 512))
  ):
    for block in range(blocks):
      name = f'stage{stage}/block{block}'
      out_channels = 4 * width
      shapes[f'{name}/conv1'] = (1, 1, in_channels, width)
      shapes[f'{name}/conv2'] = (3, 3, width, width)
      shapes[f'{name}/conv3'] = (1, 1, width, out_channels)
      for i, channels in enumerate((width, width, out_channels)):
        shapes[f'{name}/bn{i + 1}'] = (2, channels)
      if block == 0:
        shapes[f'{name}/projection'] = (1, 1, in_channels, out_channels)
        shapes[f'{name}/projection_bn'] = (2, out_channels)
      in_channels = out_channels
  shapes['head/kernel'] = (2048, 1000)
  shapes['head/bias'] = (1000,)
  return shapes


# name: (optimizer, parameter-sized buffers read + written per step by a
# single fused pass). The SGD-type rules read g and p and write p; a global
# norm reads g once more; Adam-type rules add m and v (read and written);
# AdaDiff adds g_prev.
def methods() -> dict[str, tuple[optax.GradientTransformationExtraArgs, int]]:
  oa = optax_adaptive
  return {
      'optax.sgd': (optax.sgd(0.1), 3),
      'optax.adam': (optax.adam(1e-3), 7),
      'optax.adamw': (optax.adamw(1e-3, weight_decay=1e-4), 7),
      'optax.adabelief': (optax.adabelief(1e-3), 7),
      'adaloss': (oa.adaloss(0.1, weight_decay=1e-4), 3),
      'sgd_constant': (oa.sgd_constant(0.1, b0=1.0, weight_decay=1e-4), 3),
      'sgd_decay_sqrt': (oa.sgd_decay_sqrt(0.1, b0=1.0, weight_decay=1e-4), 3),
      'adagrad_norm (global)': (oa.adagrad_norm(0.1), 4),
      'adagrad_norm (rows)': (oa.adagrad_norm(0.1, granularity='rows'), 4),
      'adam_l2': (oa.adam_l2(1e-3, weight_decay=1e-4), 7),
      'adamw': (oa.adamw(1e-3, weight_decay=1e-4), 7),
      'adam_prox': (oa.adam_prox(1e-3, weight_decay=1e-4), 7),
      'adadiff': (oa.adadiff(1e-3), 9),
      'adadiff (L2 1e-4)': (oa.adadiff(1e-3, weight_decay=1e-4), 9),
  }


# The library's name -> (the PyTorch rule of `torch_reference.OPTIMIZERS`
# timed beside it, whether it is the same method or only the closest step).
# AdaLoss's optimizer step is SGD's (its authors divide the loss by b_t before
# the backward pass); PyTorch's AdaDiff always adds its L2 term.
TORCH_COUNTERPARTS = {
    'optax.sgd': ('sgd', True),
    'optax.adam': ('adam', True),
    'optax.adamw': ('adamw', True),
    'adaloss': ('adaloss', True),
    'sgd_constant': ('sgd', True),
    'sgd_decay_sqrt': ('sgd', True),
    'adagrad_norm (global)': ('sgd', False),
    'adam_l2': ('adam_l2', True),
    'adamw': ('adamw', True),
    'adam_prox': ('adamw', False),
    'adadiff': ('adadiff', False),
    'adadiff (L2 1e-4)': ('adadiff', True),
}


class Step(NamedTuple):
  """A compiled optimizer step and what XLA says of it."""

  run: Callable[[], None]  # one donated step, blocking until it is done
  traffic_bytes: float  # bytes the program reads and writes
  temp_bytes: int  # its temporary buffers
  state_bytes: int  # the optimizer state's size
  compile_seconds: float  # lowering and compiling the step


def compile_step(tx, params, grads) -> Step:
  """The jitted update + apply_updates of `tx`, compiled, and its costs."""

  def step(params, state, grads, loss):
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state

  params = jax.tree.map(jnp.copy, params)
  init = jax.jit(tx.init).lower(params).compile()
  carry = [params, init(params)]
  loss = jnp.float32(1.0)
  start = time.perf_counter()
  compiled = (
      jax.jit(step, donate_argnums=(0, 1)).lower(*carry, grads, loss).compile()
  )
  compile_seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost  # older JAX: a list

  def run():
    carry[:] = compiled(carry[0], carry[1], grads, loss)
    jax.block_until_ready(carry)

  return Step(
      run,
      cost['bytes accessed'],
      compiled.memory_analysis().temp_size_in_bytes,
      init.memory_analysis().output_size_in_bytes,
      compile_seconds,
  )


def copy_program(num_params: int) -> Callable[[], None]:
  """Reads and rewrites one float32 array of `num_params`: the copy-bandwidth
  probe. One array, not the tree: a program per leaf would add the dispatch
  of 161 small kernels to what should be the memory's speed alone."""
  scale = jax.jit(lambda x: x * 1.0001, donate_argnums=0)
  carry = [jnp.zeros(num_params, jnp.float32)]

  def run():
    carry[0] = scale(carry[0])
    jax.block_until_ready(carry)

  return run


def jax_steps(*, shapes: dict[str, tuple[int, ...]]):
  """Builds the JAX worker's programs (runs in the worker process).

  Returns:
    ``(programs, info)``: ``'copy'`` and one donated step per method;
    ``info['steps'][name]`` holds a step's costs (the fields of ``Step`` but
    ``run``), beside the device and the tree's size.
  """
  params = {
      name: jnp.zeros(shape, jnp.float32) for name, shape in shapes.items()
  }
  grads = jax.tree.map(lambda x: jnp.full_like(x, 1e-3), params)
  num_params = sum(x.size for x in jax.tree.leaves(params))
  # Compiled first, so that the first step's compile time is not JAX's start.
  programs = {'copy': copy_program(num_params)}
  programs['copy']()
  costs = {}
  for name, (tx, _) in methods().items():
    step = compile_step(tx, params, grads)
    step.run()
    programs[name] = step.run
    costs[name] = {
        field: value
        for field, value in step._asdict().items()
        if field != 'run'
    }
  info = {
      'machine': report.machine_description(),
      'platform': jax.devices()[0].platform,
      'num_params': num_params,
      'buffer_bytes': sum(x.nbytes for x in jax.tree.leaves(params)),
      'steps': costs,
  }
  return programs, info


def torch_label(rule: str, fused: bool) -> str:
  return f'{rule}, fused' if fused else rule


def torch_steps(*, shapes: dict[str, tuple[int, ...]], rules: list[str]):
  """Builds the PyTorch worker's programs (runs in the worker process).

  Args:
    shapes: the parameter tree's shapes.
    rules: keys of ``torch_reference.OPTIMIZERS``.

  Returns:
    ``(programs, info)``: ``optimizer.step()`` of each rule, and of its fused
    form where it has one, on parameters and gradients of `shapes`, labelled
    by ``torch_label``.
  """
  # pylint: disable=g-import-not-at-top
  import torch
  import torch_reference
  # pylint: enable=g-import-not-at-top
  device = torch_reference.default_device()
  programs = {}
  forms = [(rule, False) for rule in rules] + [
      (rule, True) for rule in rules if rule in torch_reference.FUSED_RULES
  ]
  for rule, fused in forms:
    params = [
        torch.zeros(shape, device=device, requires_grad=True)
        for shape in shapes.values()
    ]
    for param in params:
      param.grad = torch.full_like(param, 1e-3)
    options = {'fused': True} if fused else {}
    optimizer = torch_reference.OPTIMIZERS[rule](params, **options)
    run = torch_reference.blocking(optimizer.step, device)
    run()
    programs[torch_label(rule, fused)] = run
  info = {
      'device': torch_reference.device_description(device),
      'torch': torch.__version__,
      'fused_rules': sorted(torch_reference.FUSED_RULES),
  }
  return programs, info


def cost_table(samples, info, *, rounds: int, min_seconds: float) -> str:
  """The update-cost table of the JAX worker's run."""
  steps = info['steps']
  num_params, buffer_bytes = info['num_params'], info['buffer_bytes']
  bandwidth = 2 * buffer_bytes / statistics.median(samples['copy'])
  nominal = {name: buffers for name, (_, buffers) in methods().items()}
  adam_buffers = steps['optax.adam']['traffic_bytes'] / buffer_bytes
  lines = [
      f'Device: {info["machine"]}.',
      (
          f'Parameters: {num_params / 1e6:.1f} M float32 (ResNet-50 shapes);'
          f' median of {rounds} rounds, every program once per round, each'
          f' sample the mean of as many calls as fill {1e3 * min_seconds:.0f}'
          ' ms (at least one); copy bandwidth measured in the same rounds:'
          f' {bandwidth / 1e9:.1f} GB/s (read + write). Buffers are'
          ' parameter-sized reads and writes per step: "nominal" in one fused'
          ' pass, "compiled" by the compiled program (XLA\'s cost analysis).'
          ' "vs nominal" is the time ratio to optax.adam over the nominal'
          ' ratio (buffers / 7): the library\'s goal is at most 1.05. "vs'
          ' compiled" is the time ratio over the ratio of compiled buffers to'
          f" optax.adam's ({adam_buffers:.0f}). GB/s is the nominal traffic"
          ' over the time. "compile" is the lowering and compilation of the'
          ' step, timed once.'
      ),
      '',
      (
          '| method | ms / step | vs optax.adam | buffers: nominal | compiled '
          '| vs nominal | vs compiled | GB/s | % of copy bandwidth '
          '| temporaries (bytes / param) | state bytes / param | compile (s) |'
      ),
      (
          '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---:'
          ' | ---: | ---: |'
      ),
  ]
  for name, step in steps.items():
    seconds = statistics.median(samples[name])
    ratio = report.paired_ratio(samples[name], samples['optax.adam'])
    buffers = step['traffic_bytes'] / buffer_bytes
    achieved = nominal[name] * buffer_bytes / seconds
    lines.append(
        f'| {name} | {1e3 * seconds:.1f} | {ratio:.2f} | {nominal[name]} '
        f'| {buffers:.0f} | {ratio / (nominal[name] / 7):.2f} '
        f'| {ratio / (buffers / adam_buffers):.2f} | {achieved / 1e9:.1f} '
        f'| {100 * achieved / bandwidth:.0f}% '
        f'| {step["temp_bytes"] / num_params:.2f} '
        f'| {step["state_bytes"] / num_params:.2f} '
        f'| {step["compile_seconds"]:.2f} |'
    )
  return '\n'.join(lines)


def torch_table(jax_samples, torch_samples, torch_info) -> str:
  """Each method's step against PyTorch's on the same tree, same rounds."""
  fused_rules = set(torch_info['fused_rules'])
  lines = [
      (
          f'PyTorch {torch_info["torch"]}: {torch_info["device"]}; its'
          ' `optimizer.step()` on parameters and gradients of the same shapes,'
          ' timed in the same rounds. "default" is the form `torch.optim`'
          ' picks when the code does not choose (a loop over the tensors on a'
          " CPU, the multi-tensor form on a GPU), as the authors' code runs"
          ' it; "fused" is PyTorch\'s fused kernel (`fused=True`), where it'
          ' has one. "PyTorch / JAX" is the median of the round-by-round'
          ' ratios of step times: above 1, the JAX step is the faster.'
      ),
      '',
      (
          '| method | JAX ms | PyTorch step | default ms | PyTorch / JAX '
          '| fused ms | PyTorch fused / JAX |'
      ),
      '| --- | ---: | --- | ---: | ---: | ---: | ---: |',
  ]
  for name, (rule, same) in TORCH_COUNTERPARTS.items():
    jax_times = jax_samples[name]
    cells = [
        f'{1e3 * statistics.median(jax_times):.1f}',
        end_to_end.TORCH_NAMES[rule] + ('' if same else ' (closest)'),
    ]
    for fused in (False, True):
      if fused and rule not in fused_rules:
        cells += ['—', '—']
        continue
      times = torch_samples[torch_label(rule, fused)]
      cells += [
          f'{1e3 * statistics.median(times):.1f}',
          f'{report.paired_ratio(times, jax_times):.2f}',
      ]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=40)
  parser.add_argument(
      '--min-seconds',
      type=float,
      default=0.05,
      help=(
          'repeat a step within a sample until this long; '
          'the sample is the mean'
      ),
  )
  parser.add_argument(
      '--no-torch',
      action='store_true',
      help="leave out PyTorch's optimizer steps",
  )
  parser.add_argument(
      '--write',
      action='store_true',
      help='update this section of BENCHMARKS.md',
  )
  args = parser.parse_args()

  shapes = resnet50_shapes()
  workers = {'jax': report.Worker(jax_steps, dict(shapes=shapes))}
  with_torch = not args.no_torch and bool(importlib.util.find_spec('torch'))
  if with_torch:
    rules = sorted({rule for rule, _ in TORCH_COUNTERPARTS.values()})
    workers['torch'] = report.Worker(
        torch_steps, dict(shapes=shapes, rules=rules)
    )
  samples, info = report.time_in_alternation(
      workers,
      rounds=args.rounds,
      warmup=2,
      min_seconds=args.min_seconds,
      one_build_at_a_time=True,
  )
  jax_samples = {
      name: times for (label, name), times in samples.items() if label == 'jax'
  }
  table = cost_table(
      jax_samples, info['jax'], rounds=args.rounds, min_seconds=args.min_seconds
  )
  if with_torch:
    torch_samples = {
        name: times
        for (label, name), times in samples.items()
        if label == 'torch'
    }
    table += '\n\n' + torch_table(jax_samples, torch_samples, info['torch'])
  print(table)
  if args.write:
    report.write_run(
        'update-cost',
        'Update cost',
        'python benchmarks/update_cost.py --write',
        table,
        info['jax']['platform'],
    )


if __name__ == '__main__':
  main()
