"""How long ACME's training step takes to compile, against optax.adam's.

Two kinds of program, each compiled from scratch once per round, the
optimizers in alternation:

* the optimizer alone: one jitted training step on a quadratic loss over N
  arrays of 64x64 (N = 8 to 256 by default), where the compilation is the
  optimizer's, growing with the number of parameter leaves;
* the whole training step of the CIFAR ResNet-20 with BatchNorm
  (``resnet20.py``, 59 leaves), with ACME's two loss evaluations.

Each compilation is XLA's, from the lowered program (``jax.jit(...).lower``)
to the executable, after clearing JAX's caches; the table gives the median
seconds over the rounds and the ratio to optax.adam's. The goals (issue #25 of
the project): the optimizer alone compiles in time linear in the leaves, in
at most 3x optax.adam's + 1 s at 64 leaves, and the whole ResNet-20 step in at
most 2.5x optax.adam's.

    python benchmarks/acme_compile.py                    # prints the table
    python benchmarks/acme_compile.py --leaves 8 64 --rounds 1 --no-resnet
    python benchmarks/acme_compile.py --write            # and BENCHMARKS.md
"""

import argparse
from collections.abc import Callable, Sequence
import statistics
import time

import jax
import jax.numpy as jnp
import optax
import report
import resnet20

import optax_adaptive

OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformationExtraArgs]] = {
    'optax.adam': lambda: optax.adam(1e-3),
    'acme': lambda: optax_adaptive.acme(1e-3),
    'acme, rate not adapted': lambda: optax_adaptive.acme(
        1e-3, adapt_learning_rate=False
    ),
    'acme + ASAM': lambda: optax_adaptive.acme(1e-3, asam=True),
}
BASELINE = 'optax.adam'
RESNET_OPTIMIZERS = {
    'optax.adam': 'optax.adam',
    'acme': 'acme',
    'acme + ASAM': 'acme + ASAM',
}


def quadratic_step(num_leaves: int, make_optimizer):
  """The lowered training step of the optimizer alone over `num_leaves`."""
  params = {
      f'w{i:03d}': jnp.full((64, 64), 0.01 * (i + 1)) for i in range(num_leaves)
  }

  def loss_fn(params):
    return sum(jnp.sum((x - 1.0) ** 2) for x in jax.tree.leaves(params))

  optimizer = make_optimizer()

  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(
        grads, opt_state, params, value=loss, value_fn=loss_fn
    )
    return optax.apply_updates(params, updates), opt_state

  return jax.jit(step).lower(params, optimizer.init(params))


def resnet_step(name: str, batch_size: int, depth: int):
  """The lowered whole training step of ResNet-`depth` with `name`."""
  graphdef, params, batch_stats = resnet20.split_model(
      batch_norm=True, depth=depth
  )
  loss = resnet20.loss_function(graphdef)
  images, labels = resnet20.random_batch(batch_size)
  optimizer = resnet20.methods()[name]
  step = resnet20.train_step(loss, name, optimizer)
  return step.lower(params, optimizer.init(params), batch_stats, images, labels)


def compile_seconds(lowered) -> float:
  """Wall seconds of XLA's compilation of `lowered`, from scratch."""
  jax.clear_caches()
  start = time.perf_counter()
  lowered.compile()
  return time.perf_counter() - start


def time_compilations(lowered: dict[str, object], rounds: int):
  """Seconds of each program's compilation per round, in alternation."""
  samples = {name: [] for name in lowered}
  for _ in range(rounds):
    for name, program in lowered.items():
      samples[name].append(compile_seconds(program))
  return samples


def leaves_table(leaf_counts: Sequence[int], rounds: int) -> str:
  """The optimizer alone: compile seconds per optimizer and leaf count."""
  names = list(OPTIMIZERS)
  lines = [
      '| leaves | ' + ' | '.join(names) + ' | acme / adam | goal at 64 |',
      '| ---: |' + ' ---: |' * len(names) + ' ---: | --- |',
  ]
  for count in leaf_counts:
    lowered = {
        name: quadratic_step(count, make) for name, make in OPTIMIZERS.items()
    }
    samples = time_compilations(lowered, rounds)
    medians = {name: statistics.median(samples[name]) for name in names}
    goal = ''
    if count == 64:
      limit = 3 * medians[BASELINE] + 1
      verdict = 'met' if medians['acme'] <= limit else 'missed'
      goal = f'acme ≤ {limit:.2f} s: {verdict}'
    lines.append(
        f'| {count} | '
        + ' | '.join(f'{medians[name]:.2f}' for name in names)
        + f' | {report.paired_ratio(samples["acme"], samples[BASELINE]):.1f}'
        + f' | {goal} |'
    )
    print(lines[-1], flush=True)
  return '\n'.join(lines)


def resnet_table(rounds: int, batch_size: int, depth: int) -> str:
  """The whole ResNet step: compile seconds per optimizer."""
  lowered = {
      label: resnet_step(name, batch_size, depth)
      for label, name in RESNET_OPTIMIZERS.items()
  }
  samples = time_compilations(lowered, rounds)
  lines = [
      '| whole ResNet-20 step | compile s | vs optax.adam | goal |',
      '| --- | ---: | ---: | --- |',
  ]
  for label in lowered:
    ratio = report.paired_ratio(samples[label], samples[BASELINE])
    goal = ''
    if label == 'acme':
      goal = f'≤ 2.5: {"met" if ratio <= 2.5 else "missed"}'
    lines.append(
        f'| {label} | {statistics.median(samples[label]):.2f} '
        f'| {ratio:.2f} | {goal} |'
    )
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  resnet20.add_model_arguments(parser)
  parser.add_argument(
      '--leaves',
      type=int,
      nargs='+',
      default=[8, 16, 32, 64, 128, 256],
      help='numbers of 64x64 leaves for the optimizer alone',
  )
  parser.add_argument(
      '--rounds', type=int, default=3, help='compilations of each program'
  )
  parser.add_argument(
      '--no-resnet',
      action='store_true',
      help='leave out the whole ResNet step',
  )
  parser.add_argument(
      '--write',
      action='store_true',
      help='update this section of BENCHMARKS.md',
  )
  args = parser.parse_args()

  parts = [
      f'Device: {report.machine_description()}.',
      (
          f'Median wall seconds of XLA compilation over {args.rounds} '
          'rounds, the programs compiled from scratch in alternation; '
          '"acme / adam" is the median of the round-by-round ratios. The '
          'optimizer alone: one training step on a quadratic loss over N '
          'leaves of 64x64.'
      ),
      '',
      leaves_table(args.leaves, args.rounds),
  ]
  if not args.no_resnet:
    parts += [
        '',
        f'ResNet-{args.depth} with BatchNorm, batch {args.batch_size}:',
        '',
        resnet_table(args.rounds, args.batch_size, args.depth),
    ]
  table = '\n'.join(parts)
  print(table)
  if args.write:
    report.write_run(
        'acme-compile',
        'ACME compile time against optax.adam',
        'python benchmarks/acme_compile.py --write',
        table,
        jax.devices()[0].platform,
    )


if __name__ == '__main__':
  main()
