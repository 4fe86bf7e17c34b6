"""What an ACME step costs over a plain Adam step, measured side by side.

ACME evaluates the loss and gradient twice per step (three times with ASAM),
so the floor is 2.0x a plain jitted Adam step on the same model and batch
(3.0x with ASAM); the goal is at most 2.15x (3.2x with ASAM). The model is a
small CIFAR-style CNN with BatchNorm, on a batch of random 32x32x3 images.

    python benchmarks/acme_overhead.py            # prints the table
    python benchmarks/acme_overhead.py --steps 50 --batch-size 256
    python benchmarks/acme_overhead.py --write    # and updates BENCHMARKS.md
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import optax_adaptive
import report


class SmallCNN(nnx.Module):
  """Three conv-BN-ReLU stages (16, 32, 64 channels) and a linear head."""

  def __init__(self, *, num_classes: int = 10, rngs: nnx.Rngs):
    channels = (3, 16, 32, 64)
    self.convs = nnx.List([
        nnx.Conv(cin, cout, (3, 3), strides=(1 if i == 0 else 2),
                 use_bias=False, rngs=rngs)
        for i, (cin, cout) in enumerate(zip(channels, channels[1:]))])
    self.norms = nnx.List([nnx.BatchNorm(c, rngs=rngs) for c in channels[1:]])
    self.head = nnx.Linear(channels[-1], num_classes, rngs=rngs)

  def __call__(self, x):
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x)))
    return self.head(x.mean(axis=(1, 2)))


def make_loss(graphdef):
  def loss_fn(params, batch_stats, images, labels):
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    logits = model(images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, nnx.state(model, nnx.BatchStat)
  return loss_fn


def adam_step(loss_fn, optimizer):
  def step(params, opt_state, batch_stats, images, labels):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, images, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, batch_stats
  return jax.jit(step, donate_argnums=(0, 1))


def interleaved_median_seconds(steps, params, batch, num_steps, warmup=3):
  """Median seconds per step of each variant, timed in alternation.

  One step of every variant per round, so a change of load on a shared machine
  falls on all of them alike instead of on whichever ran during it.
  """
  carries = {name: [jax.tree.map(jnp.copy, params), optimizer.init(params)]
             for name, (_, optimizer) in steps.items()}
  times = {name: [] for name in steps}
  for round_index in range(warmup + num_steps):
    for name, (step, _) in steps.items():
      carry = carries[name]
      start = time.perf_counter()
      new_params, opt_state, loss, _ = step(carry[0], carry[1], *batch)
      jax.block_until_ready(loss)
      elapsed = time.perf_counter() - start
      carry[:] = [new_params, opt_state]
      if round_index >= warmup:
        times[name].append(elapsed)
  return {name: statistics.median(t) for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--steps', type=int, default=20,
                      help='timed steps of each variant (after 3 warm-up steps)')
  parser.add_argument('--write', action='store_true',
                      help='update this section of BENCHMARKS.md')
  args = parser.parse_args()

  model = SmallCNN(rngs=nnx.Rngs(0))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  loss_fn = make_loss(graphdef)
  keys = jax.random.split(jax.random.key(1))
  images = jax.random.normal(keys[0], (args.batch_size, 32, 32, 3))
  labels = jax.random.randint(keys[1], (args.batch_size,), 0, 10)
  batch = (batch_stats, images, labels)

  adam = optax.adam(1e-3)
  variants = {
      'Adam (optax.adam, one evaluation)': (adam_step(loss_fn, adam), adam),
  }
  for name, kwargs in [('ACME (Adam)', {}), ('ACME (Adam) + ASAM', {'asam': True})]:
    optimizer = optax_adaptive.acme(1e-3, **kwargs)
    variants[name] = (optax_adaptive.acme_step(loss_fn, optimizer, has_aux=True),
                      optimizer)

  times = interleaved_median_seconds(variants, params, batch, args.steps)
  for name, seconds in times.items():
    print(f'{name:36s} {1e3 * seconds:8.2f} ms', flush=True)

  base = times['Adam (optax.adam, one evaluation)']
  goals = {'ACME (Adam)': '2.0 floor, goal ≤ 2.15',
           'ACME (Adam) + ASAM': '3.0 floor, goal ≤ 3.2'}
  lines = [
      f'Device: {report.machine_description()}.',
      f'Model: a 3-stage conv-BN-ReLU CNN ({sum(x.size for x in jax.tree.leaves(params)):,}'
      f' parameters), batch {args.batch_size} of 32x32x3, median of '
      f'{args.steps} jitted, donated steps of each, timed in alternation.',
      '',
      '| step | ms / step | vs Adam | floor and goal |',
      '| --- | ---: | ---: | --- |',
  ]
  for name, seconds in times.items():
    lines.append(f'| {name} | {1e3 * seconds:.1f} | {seconds / base:.2f} '
                 f'| {goals.get(name, "")} |')
  table = '\n'.join(lines)
  print(table)
  if args.write:
    platform = jax.devices()[0].platform
    report.write_section(
        f'acme-overhead-{platform}',
        f'## ACME step over an Adam step ({platform.upper()})\n\n'
        '`python benchmarks/acme_overhead.py --write`\n\n' + table)


if __name__ == '__main__':
  main()
