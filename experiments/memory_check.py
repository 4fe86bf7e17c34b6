"""Whether a compiled training step fits in memory, known before it runs.

A run too large for its machine would otherwise be killed by the operating
system's out-of-memory killer minutes into training, without a message (on a
CPU), or fail in its first step (on an accelerator). The training loop
compiles its step first and compares XLA's memory analysis of the compiled
program with the memory available to each device:

* on a GPU or TPU, the allocator's ``bytes_limit`` less what is in use;
* on a CPU, ``MemAvailable`` of ``/proc/meminfo``, shared by the host's CPU
  devices (elsewhere, without ``/proc/meminfo``, nothing is checked);
* or the bytes in the environment variable ``EXPERIMENTS_MEMORY_LIMIT``,
  per device, which overrides both.

A step fits when it needs at most :data:`USABLE_FRACTION` of that memory: the
rest is for what XLA's analysis of the step does not count (the batches the
input pipeline prepares ahead, the evaluation, the allocator's slack). A
step that does not fit is refused with the estimate and the largest
``--micro-batch`` that the estimates predict to fit.
"""

from collections.abc import Callable
import os
import pathlib
from typing import NamedTuple

import jax

LIMIT_VARIABLE = 'EXPERIMENTS_MEMORY_LIMIT'
# ViT-S/16 at 224 pixels with a batch of 128 (the AdaLoss config) was
# estimated at 97% of MemAvailable on a CPU and killed in its first step.
USABLE_FRACTION = 0.9
_MEMINFO = pathlib.Path('/proc/meminfo')


class Available(NamedTuple):
  """The memory a device has for a step.

  Attributes:
    num_bytes: the bytes.
    source: where the figure comes from, for messages.
  """

  num_bytes: int
  source: str


def available_per_device() -> Available | None:
  """The memory available to each local device; None where unknown."""
  override = os.environ.get(LIMIT_VARIABLE)
  if override is not None:
    try:
      return Available(int(override), LIMIT_VARIABLE)
    except ValueError:
      raise ValueError(
          f'{LIMIT_VARIABLE} must be a number of bytes, not {override!r}.'
      ) from None
  devices = jax.local_devices()
  stats = devices[0].memory_stats()
  if stats and 'bytes_limit' in stats:
    free = min(
        s['bytes_limit'] - s.get('bytes_in_use', 0)
        for s in (d.memory_stats() for d in devices)
    )
    return Available(free, f'{devices[0].device_kind} memory')
  if devices[0].platform != 'cpu' or not _MEMINFO.exists():
    return None
  for line in _MEMINFO.read_text().splitlines():
    if line.startswith('MemAvailable:'):
      kib = int(line.split()[1])
      shared = f', shared by {len(devices)} CPU devices' if devices[1:] else ''
      return Available(
          kib * 1024 // len(devices), f'MemAvailable of {_MEMINFO}{shared}'
      )
  return None


def step_bytes(compiled: jax.stages.Compiled) -> int | None:
  """The peak memory per device of `compiled`, by XLA's memory analysis.

  Its arguments and outputs (less the donated arguments whose buffers the
  outputs reuse) and its temporaries; None where XLA gives no analysis.
  """
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return (
      analysis.argument_size_in_bytes
      + analysis.output_size_in_bytes
      - analysis.alias_size_in_bytes
      + analysis.temp_size_in_bytes
  )


def micro_batch_sizes(batch_size: int, num_devices: int) -> list[int]:
  """The valid ``--micro-batch`` values, largest first: divisors of the
  batch that divide over the devices.

  Example:
    >>> micro_batch_sizes(32, 8)
    [32, 16, 8]
  """
  return [
      m
      for m in range(batch_size, 0, -1)
      if batch_size % m == 0 and m % num_devices == 0
  ]


def _size(num_bytes: float) -> str:
  if num_bytes >= 2**30:
    return f'{num_bytes / 2**30:.2f} GiB'
  return f'{num_bytes / 2**20:.1f} MiB'


def check_fits(
    needed: int,
    available: Available,
    *,
    micro_batch: int,
    batch_size: int,
    num_devices: int,
    estimate: Callable[[int], int],
) -> None:
  """Refuses a step that needs more than its share of the memory available.

  Memory grows about linearly with the micro-batch: between the step's
  estimate and `estimate` at the smallest micro-batch, the largest micro-batch
  predicted to fit is proposed.

  Args:
    needed: the step's bytes per device (:func:`step_bytes`).
    available: from :func:`available_per_device`.
    micro_batch: the step's micro-batch (the batch without micro-batches).
    batch_size: the global batch.
    num_devices: the devices the batch is split over.
    estimate: the step's bytes per device at another micro-batch; called
      only for a step that does not fit.

  Raises:
    ValueError: one message, with the estimate and the ``--micro-batch``
      predicted to fit.
  """
  usable = USABLE_FRACTION * available.num_bytes
  if needed <= usable:
    return
  in_micro_batches = (
      f' in micro-batches of {micro_batch}' if micro_batch < batch_size else ''
  )
  problem = (
      f"The training step needs about {_size(needed)} per device (XLA's "
      f'estimate for a batch of {batch_size}{in_micro_batches}), more than '
      f'{USABLE_FRACTION:.0%} of the {_size(available.num_bytes)} available '
      f'({available.source}); nothing was run.'
  )
  smallest = micro_batch_sizes(batch_size, num_devices)[-1]
  least = estimate(smallest) if smallest < micro_batch else needed
  if least > usable:
    raise ValueError(
        f'{problem} Even --micro-batch {smallest} needs about {_size(least)}: '
        'use a smaller model or images, or a machine with more memory.'
    )
  per_example = (needed - least) / (micro_batch - smallest)
  fitting = next(
      m
      for m in micro_batch_sizes(batch_size, num_devices)
      if m < micro_batch and least + per_example * (m - smallest) <= usable
  )
  predicted = least + per_example * (fitting - smallest)
  raise ValueError(
      f'{problem} Add --micro-batch {fitting} (about {_size(predicted)}): '
      'each step then sums the loss and gradient over micro-batches.'
  )
