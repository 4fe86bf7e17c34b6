"""Steps per second and memory per device of the ResNet-20 step on 1-8 devices.

The training step of ``resnet20.py`` (CIFAR ResNet-20 with BatchNorm, a global
batch of 128 split over the devices) on 1, 2, 4 and 8 devices, in two layouts:

* data parallel: parameters and optimizer state replicated, the batch sharded;
* state sharded: as above, but every optimizer-state leaf is sharded over the
  devices along its largest axis that divides evenly (ZeRO stage 1); XLA
  gathers what the update needs.

Each device count runs in its own worker process (on a CPU, with that many
forced host devices: ``--xla_force_host_platform_device_count``), and the
programs of every worker are timed in alternation. Memory per device is read
from each compiled program: its arguments, outputs (less those that reuse a
donated argument) and temporaries, and, separately, the optimizer state's own
bytes on one device. On a CPU, forced host devices share the machine's cores,
so more devices cannot run faster there: the table shows what the sharding
costs and saves, not a speed-up. On a GPU host the device counts are those of
1, 2, 4 and 8 that it has, and the workers use as many of its real devices.

    python benchmarks/scaling.py                  # prints the table
    python benchmarks/scaling.py --method acme --rounds 5
    python benchmarks/scaling.py --write          # and updates BENCHMARKS.md
"""

import argparse
import statistics

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import report
import resnet20

LAYOUTS = ('data parallel', 'state sharded')


def sharded_spec(shape: tuple[int, ...], num_devices: int) -> P:
  """Shards the largest axis that `num_devices` divides; else replicated.

  Example:
    >>> tuple(sharded_spec((3, 3, 16, 32), 8))
    (None, None, None, 'data')
    >>> tuple(sharded_spec((10,), 4))
    ()
  """
  candidates = [
      axis
      for axis, size in enumerate(shape)
      if size % num_devices == 0 and size >= num_devices
  ]
  if num_devices == 1 or not candidates:
    return P()
  axis = max(candidates, key=lambda a: shape[a])
  return P(*(['data' if a == axis else None for a in range(len(shape))]))


def _device_bytes(tree) -> int:
  """Bytes of `tree` held on its first device."""
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


def build(*, num_devices: int, method: str, batch_size: int, depth: int):
  """The worker's programs: one step per layout (runs in the worker)."""
  devices = jax.devices()[:num_devices]
  if len(devices) < num_devices:
    raise ValueError(f'{num_devices} devices asked for, {len(devices)} found.')
  mesh = jax.make_mesh((num_devices,), ('data',), devices=devices)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P('data'))
  graphdef, params, batch_stats = resnet20.split_model(
      batch_norm=True, depth=depth
  )
  loss = resnet20.loss_function(graphdef)
  images, labels = resnet20.random_batch(batch_size)
  tx = resnet20.methods()[method]
  programs, info = {}, {
      'device': report.device_description(),
      'platform': jax.devices()[0].platform,
      'params': resnet20.num_params(params),
  }
  for layout in LAYOUTS:
    state = jax.eval_shape(tx.init, params)
    if layout == 'state sharded':
      state_sharding = jax.tree.map(
          lambda s: NamedSharding(mesh, sharded_spec(s.shape, num_devices)),
          state,
      )
    else:
      state_sharding = jax.tree.map(lambda _: replicated, state)
    param_sharding = jax.tree.map(lambda _: replicated, params)
    stats_sharding = jax.tree.map(lambda _: replicated, batch_stats)
    step = resnet20.train_step(
        loss,
        method,
        tx,
        in_shardings=(
            param_sharding,
            state_sharding,
            stats_sharding,
            batch_sharding,
            batch_sharding,
        ),
        out_shardings=(
            param_sharding,
            state_sharding,
            replicated,
            stats_sharding,
        ),
    )
    inputs = (
        jax.device_put(resnet20.copy_tree(params), param_sharding),
        jax.jit(tx.init, out_shardings=state_sharding)(params),
        jax.device_put(batch_stats, stats_sharding),
        jax.device_put(images, batch_sharding),
        jax.device_put(labels, batch_sharding),
    )
    compiled = step.lower(*inputs).compile()
    memory = compiled.memory_analysis()
    info[layout] = {
        'program_bytes': (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes
        ),
        'state_bytes': _device_bytes(inputs[1]),
    }
    programs[layout] = resnet20.step_program(compiled, *inputs)
  return programs, info


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--devices',
      type=int,
      nargs='+',
      help=(
          'device counts (default: 1, 2, 4, 8, forced host '
          'devices on a CPU; on a GPU host, those the host has)'
      ),
  )
  parser.add_argument(
      '--method', default='adamw', choices=list(resnet20.methods())
  )
  resnet20.add_model_arguments(
      parser, batch_help='the global batch, split over the devices'
  )
  parser.add_argument('--rounds', type=int, default=10)
  parser.add_argument(
      '--write',
      action='store_true',
      help='update this section of BENCHMARKS.md',
  )
  args = parser.parse_args()
  if args.devices is None:
    platform, available = report.jax_platform()
    args.devices = [
        n for n in (1, 2, 4, 8) if platform == 'cpu' or n <= available
    ]

  workers = {}
  for n in args.devices:
    # The flag makes n host devices where the CPU is JAX's platform and is
    # ignored beside a GPU; this process never starts JAX's backend, which
    # would take the GPU's memory from the workers.
    env = {'XLA_FLAGS': f'--xla_force_host_platform_device_count={n}'}
    workers[n] = report.Worker(
        build,
        dict(
            num_devices=n,
            method=args.method,
            batch_size=args.batch_size,
            depth=args.depth,
        ),
        env=env,
    )
  samples, info = report.time_in_alternation(
      workers, rounds=args.rounds, warmup=1
  )
  first = info[args.devices[0]]
  lines = [
      f'Device: {first["device"]}; {report.host_description()}.',
      (
          f'ResNet-{args.depth} with BatchNorm ({first["params"]:,}'
          f' parameters), `{args.method}`, global batch {args.batch_size};'
          f' median of {args.rounds} steps per program, every program of every'
          ' device count timed in alternation. Memory is per device, from the'
          ' compiled program.'
      ),
      '',
      (
          '| devices | layout | steps / s | vs 1 device | program memory (MB) '
          '| optimizer state (KB) |'
      ),
      '| ---: | --- | ---: | ---: | ---: | ---: |',
  ]
  for n in args.devices:
    for layout in LAYOUTS:
      times = samples[n, layout]
      ratio = report.paired_ratio(samples[args.devices[0], layout], times)
      facts = info[n][layout]
      lines.append(
          f'| {n} | {layout} | {1 / statistics.median(times):.2f} '
          f'| {ratio:.2f} | {facts["program_bytes"] / 1e6:.1f} '
          f'| {facts["state_bytes"] / 1e3:.0f} |'
      )
  table = '\n'.join(lines)
  print(table)
  if args.write:
    report.write_run(
        'scaling',
        'Scaling over devices',
        'python benchmarks/scaling.py --write',
        table,
        first['platform'],
    )


if __name__ == '__main__':
  main()
