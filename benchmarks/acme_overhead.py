"""What an ACME step costs over a plain Adam step, measured side by side.

ACME evaluates the loss and gradient twice per step (three times with ASAM),
so the floor is 2.0x a plain jitted Adam step on the same model and batch
(3.0x with ASAM); the goal is at most 2.15x (3.2x with ASAM). The model is the
experiments' CIFAR ResNet-20 with BatchNorm (``resnet20.py``), on a batch of
random 32x32x3 images; each program runs once per round, in alternation, and
the ratio is the median of the round-by-round ratios. A bare forward-backward
pass, a program of its own, is timed beside them: what one pass costs outside
a training step (where its gradients are fresh outputs rather than buffers
the update consumes).

    python benchmarks/acme_overhead.py            # prints the table
    python benchmarks/acme_overhead.py --rounds 10 --batch-size 256
    python benchmarks/acme_overhead.py --write    # and updates BENCHMARKS.md
"""

import argparse
import statistics

import jax
import report
import resnet20

FORWARD_BACKWARD = 'one forward-backward pass alone'
# The programs timed: name -> (key of resnet20.methods(), floor and goal).
VARIANTS = {
    'Adam (optax.adam, one evaluation)': ('optax.adam', ''),
    'ACME (Adam)': ('acme', '2.0 floor, goal ≤ 2.15'),
    'ACME (Adam) + ASAM': ('acme + ASAM', '3.0 floor, goal ≤ 3.2'),
}


def programs(batch_size: int, depth: int):
  """One blocking step of each variant, compiled and run once."""
  graphdef, params, batch_stats = resnet20.split_model(
      batch_norm=True, depth=depth
  )
  loss = resnet20.loss_function(graphdef)
  images, labels = resnet20.random_batch(batch_size)
  optimizers = resnet20.methods()
  _, forward_backward = resnet20.gradient_program(
      loss, params, batch_stats, images, labels
  )
  runs = {FORWARD_BACKWARD: forward_backward}
  for label, (name, _) in VARIANTS.items():
    tx = optimizers[name]
    runs[label] = resnet20.step_program(
        resnet20.train_step(loss, name, tx),
        resnet20.copy_tree(params),
        tx.init(params),
        batch_stats,
        images,
        labels,
    )
  return runs, resnet20.num_params(params)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  resnet20.add_model_arguments(parser)
  parser.add_argument(
      '--rounds',
      type=int,
      default=20,
      help='timed steps of each variant, one per round',
  )
  parser.add_argument(
      '--write',
      action='store_true',
      help='update this section of BENCHMARKS.md',
  )
  args = parser.parse_args()

  runs, num_params = programs(args.batch_size, args.depth)
  samples = report.time_alternately(runs, rounds=args.rounds, warmup=2)
  adam = samples['Adam (optax.adam, one evaluation)']
  lines = [
      f'Device: {report.machine_description()}.',
      (
          f'Model: CIFAR ResNet-{args.depth} with BatchNorm ({num_params:,} '
          f'parameters), batch {args.batch_size} of 32x32x3; median of '
          f'{args.rounds} jitted, donated steps of each, timed in alternation; '
          '"vs Adam" is the median of the round-by-round ratios.'
      ),
      '',
      '| step | ms / step | vs Adam | floor and goal |',
      '| --- | ---: | ---: | --- |',
  ]
  for label, (_, goal) in VARIANTS.items():
    lines.append(
        f'| {label} | {1e3 * statistics.median(samples[label]):.1f} '
        f'| {report.paired_ratio(samples[label], adam):.2f} | {goal} |'
    )
  lines.append(
      f'| {FORWARD_BACKWARD} (`jax.grad` of the loss, its own program) '
      f'| {1e3 * statistics.median(samples[FORWARD_BACKWARD]):.1f} '
      f'| {report.paired_ratio(samples[FORWARD_BACKWARD], adam):.2f} | |'
  )
  table = '\n'.join(lines)
  print(table)
  if args.write:
    report.write_run(
        'acme-overhead',
        'ACME step over an Adam step',
        'python benchmarks/acme_overhead.py --write',
        table,
        jax.devices()[0].platform,
    )


if __name__ == '__main__':
  main()
