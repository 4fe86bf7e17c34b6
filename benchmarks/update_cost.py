"""What one optimizer step costs, against optax's built-ins, in one run.

For every transformation of the library and the optax built-ins it is compared
with, times one jitted ``update`` + ``apply_updates`` on a parameter tree shaped
like ResNet-50's (25.6 M float32 parameters), buffers donated, median of many
runs. An optimizer step is memory-bound: each method must read and write a
known number of parameter-sized buffers (Adam: read g, m, v, p and write m, v,
p, 7 in all), so the time it should take relative to Adam is that count over 7.
The script measures the machine's copy bandwidth in the same run and reports
how close each method comes to its own bound. It also reads each method's
state size from the compiled ``init``'s memory analysis.

    python benchmarks/update_cost.py            # prints the tables
    python benchmarks/update_cost.py --write    # and updates BENCHMARKS.md
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import optax

import optax_adaptive
import report


def resnet50_shaped_params() -> dict[str, jax.Array]:
  """Zeros shaped like ResNet-50's parameters in Flax layouts (HWIO kernels)."""
  shapes = {'stem/kernel': (7, 7, 3, 64), 'stem/bn': (2, 64)}
  in_channels = 64
  for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
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
  return {name: jnp.zeros(shape, jnp.float32) for name, shape in shapes.items()}


# name: (optimizer, parameter-sized buffers read + written per step).
# The SGD-type rules read g and p and write p; a global norm reads g once more;
# Adam-type rules add m and v (read and written); AdaDiff adds g_prev.
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
      'adadiff': (oa.adadiff(1e-3, weight_decay=1e-4), 9),
  }


def time_step(tx, params, grads, repeats):
  """Median seconds of one donated, jitted update + apply_updates."""
  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state, grads, loss):
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state

  params = jax.tree.map(jnp.copy, params)
  carry = [params, tx.init(params)]
  loss = jnp.float32(1.0)

  def run():
    carry[:] = step(carry[0], carry[1], grads, loss)
    jax.block_until_ready(carry)

  seconds = report.median_seconds(run, repeats=repeats)
  state_bytes = jax.jit(tx.init).lower(params).compile().memory_analysis()
  return seconds, state_bytes.output_size_in_bytes


def copy_bandwidth(params, repeats) -> float:
  """Bytes per second of reading and rewriting the whole tree once."""
  scale = jax.jit(lambda t: jax.tree.map(lambda x: x * 1.0001, t),
                  donate_argnums=0)
  carry = [jax.tree.map(jnp.copy, params)]

  def run():
    carry[0] = scale(carry[0])
    jax.block_until_ready(carry)

  nbytes = sum(x.nbytes for x in jax.tree.leaves(params))
  return 2 * nbytes / report.median_seconds(run, repeats=repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--write', action='store_true',
                      help='update this section of BENCHMARKS.md')
  args = parser.parse_args()

  params = resnet50_shaped_params()
  num_params = sum(x.size for x in jax.tree.leaves(params))
  grads = jax.tree.map(lambda x: jnp.full_like(x, 1e-3), params)
  bandwidth = copy_bandwidth(params, args.repeats)
  buffer_bytes = 4 * num_params

  results = {}
  for name, (tx, buffers) in methods().items():
    seconds, state_bytes = time_step(tx, params, grads, args.repeats)
    results[name] = (seconds, buffers, state_bytes)
    print(f'{name:24s} {1e3 * seconds:8.2f} ms', flush=True)

  adam_seconds = results['optax.adam'][0]
  lines = [
      f'Device: {report.machine_description()}.',
      f'Parameters: {num_params / 1e6:.1f} M float32 (ResNet-50 shapes); '
      f'copy bandwidth measured in the same run: {bandwidth / 1e9:.1f} GB/s '
      '(read + write). "vs bound" is the time ratio to optax.adam over the '
      'traffic ratio to Adam (buffers / 7): 1.00 means the method costs exactly '
      'what its memory traffic says; the goal is at most 1.05.',
      '',
      '| method | ms / step | vs optax.adam | buffers moved | vs bound '
      '| GB/s | % of copy bandwidth | state bytes / param |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for name, (seconds, buffers, state_bytes) in results.items():
    ratio = seconds / adam_seconds
    achieved = buffers * buffer_bytes / seconds
    lines.append(
        f'| {name} | {1e3 * seconds:.1f} | {ratio:.2f} | {buffers} '
        f'| {ratio / (buffers / 7):.2f} | {achieved / 1e9:.1f} '
        f'| {100 * achieved / bandwidth:.0f}% | {state_bytes / num_params:.2f} |')
  table = '\n'.join(lines)
  print(table)
  if args.write:
    report.write_section(
        f'update-cost-{jax.devices()[0].platform}',
        f'## Update cost ({jax.devices()[0].platform.upper()})\n\n'
        '`python benchmarks/update_cost.py --write`\n\n' + table)


if __name__ == '__main__':
  main()
