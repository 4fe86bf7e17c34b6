"""Shared pieces of the benchmark scripts: timing, machine description, report.

Each script owns one section of BENCHMARKS.md, delimited by HTML comments, and
rewrites only that section, so the file is generated but sections measured on
different days or devices can stand side by side.
"""

import datetime
import pathlib
import platform
import statistics
import time

import jax
import optax

BENCHMARKS_MD = pathlib.Path(__file__).parent.parent / 'BENCHMARKS.md'


def median_seconds(fn, *, warmup: int = 2, repeats: int = 20) -> float:
  """Median wall time of `fn()`, which must block until its work is done."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def machine_description() -> str:
  device = jax.devices()[0]
  kind = getattr(device, 'device_kind', device.platform)
  import os  # pylint: disable=g-import-not-at-top
  return (f'{device.platform.upper()} ({kind}, {jax.device_count()} device(s)); '
          f'host {platform.machine()} with {os.cpu_count()} cores; '
          f'jax {jax.__version__}, optax {optax.__version__}; '
          f'{datetime.date.today().isoformat()}')


def write_section(name: str, markdown: str, path: pathlib.Path = BENCHMARKS_MD):
  """Replaces (or appends) the section `name` of BENCHMARKS.md."""
  begin, end = f'<!-- begin {name} -->', f'<!-- end {name} -->'
  block = f'{begin}\n{markdown.strip()}\n{end}'
  text = path.read_text() if path.exists() else '# Benchmarks\n'
  if begin in text and end in text:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = head + block + tail
  else:
    text = text.rstrip() + '\n\n' + block + '\n'
  path.write_text(text)
