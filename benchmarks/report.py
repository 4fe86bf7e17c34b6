"""Shared pieces of the benchmark scripts: timing, machine description, report.

Each script owns one section of BENCHMARKS.md, delimited by HTML comments, and
rewrites only that section, so the file is generated but sections measured on
different days or devices can stand side by side.

Programs that cannot share a process (different XLA flags, a different number
of host devices, JAX beside PyTorch without either's threads in the other's
way) run in worker processes that :func:`time_in_alternation` drives one call
at a time, in rounds, so that a change of load on a shared machine falls on
every program alike.
"""

from collections.abc import Callable, Mapping
import contextlib
import dataclasses
import datetime
import multiprocessing
import os
import pathlib
import platform
import statistics
import sys
import time
import traceback
from typing import Any

import jax
import optax

BENCHMARKS_MD = pathlib.Path(__file__).parent.parent / 'BENCHMARKS.md'

# `python benchmarks/SCRIPT.py` puts only benchmarks/ on the path; the models
# and pipelines the scripts build on are in experiments/, which is not
# installed with the library.
_REPOSITORY = str(pathlib.Path(__file__).resolve().parent.parent)
if _REPOSITORY not in sys.path:
  sys.path.append(_REPOSITORY)


def time_alternately(
    programs: Mapping[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int = 1,
) -> dict[str, list[float]]:
  """Seconds of one call of each program, per round, the programs alternating.

  Each round calls every program once, one after the other, so that a change
  of load on a shared machine falls on all of them alike instead of on
  whichever ran during it; :func:`paired_ratio` then compares two programs
  round by round.

  Args:
    programs: name -> a function that runs one step and returns once its work
      is done (``jax.block_until_ready``).
    rounds: timed rounds.
    warmup: untimed rounds before them.

  Returns:
    ``{name: [seconds of its call in each timed round]}``.
  """
  samples = {name: [] for name in programs}
  for round_index in range(warmup + rounds):
    for name, program in programs.items():
      start = time.perf_counter()
      program()
      elapsed = time.perf_counter() - start
      if round_index >= warmup:
        samples[name].append(elapsed)
  return samples


def machine_description() -> str:
  device = jax.devices()[0]
  kind = getattr(device, 'device_kind', device.platform)
  return (
      f'{device.platform.upper()} ({kind}, {jax.device_count()} device(s)); '
      f'{host_description()}'
  )


def device_description() -> str:
  """The first JAX device, e.g. ``'CPU (cpu)'``; starts JAX's backend."""
  device = jax.devices()[0]
  return f'{device.platform.upper()} ({getattr(device, "device_kind", "")})'


def host_description(**versions: str) -> str:
  """Host, library versions and date, without starting JAX's backend.

  Args:
    **versions: further libraries and their versions, e.g. ``torch='2.9'``.

  Returns:
    A line such as ``'host x86_64 with 2 cores; jax 0.7.1, optax 0.2.6;
    2026-01-31'``.
  """
  libraries = {'jax': jax.__version__, 'optax': optax.__version__, **versions}
  return (
      f'host {platform.machine()} with {os.cpu_count()} cores; '
      + ', '.join(f'{name} {version}' for name, version in libraries.items())
      + f'; {datetime.date.today().isoformat()}'
  )


@dataclasses.dataclass(frozen=True)
class Worker:
  """A process that builds programs and runs them when told to.

  Attributes:
    build: a module-level function; ``build(**kwargs)`` runs in the new process
      and returns ``(programs, info)``: a dict of functions that each run one
      step and return when its work is done, and a dict of facts to report
      (device, parameter count, ...). It should run each program once, so that
      compilation is not timed.
    kwargs: the arguments of ``build``.
    env: environment variables of the process, set before it starts (and so
      before it imports JAX): ``XLA_FLAGS``, for one.
  """

  build: Callable[..., tuple[dict[str, Callable[[], Any]], dict[str, Any]]]
  kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  env: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _serve(connection, build, kwargs):
  """The worker's side: build, report ready, then time what it is asked for."""
  try:
    programs, info = build(**kwargs)
    connection.send(('ready', list(programs), info))
    while (request := connection.recv()) is not None:
      name, min_seconds = request
      calls, start = 0, time.perf_counter()
      while True:
        programs[name]()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
          break
      connection.send(elapsed / calls)
  except Exception:  # pylint: disable=broad-except
    connection.send(('error', traceback.format_exc(), None))


@contextlib.contextmanager
def _environment(values: Mapping[str, str]):
  saved = {name: os.environ.get(name) for name in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for name, value in saved.items():
      if value is None:
        del os.environ[name]
      else:
        os.environ[name] = value


def time_in_alternation(
    workers: Mapping[str, Worker],
    *,
    rounds: int,
    warmup: int = 1,
    min_seconds: float = 0.0,
    one_build_at_a_time: bool = False,
) -> tuple[dict[tuple[str, str], list[float]], dict[str, dict[str, Any]]]:
  """Seconds per call of every program of every worker, timed in alternation.

  Each worker is a fresh Python process (started with ``spawn``, so that each
  can have its own XLA flags); they build their programs (concurrently unless
  told otherwise), then each round calls every program of every worker once,
  one at a time. JAX's GPU memory is not preallocated in the workers
  (``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless a worker's ``env`` says
  otherwise), as several may share one GPU.

  Args:
    workers: label -> worker.
    rounds: timed rounds.
    warmup: untimed rounds before them.
    min_seconds: a sample repeats its program until this much time has passed
      and is the mean of the calls, for steps too short to time one by one.
    one_build_at_a_time: start each worker once the one before it has built
      its programs, for builds that time something themselves (compilation).

  Returns:
    ``(samples, info)``: ``samples[label, program]`` holds one time per round;
    ``info[label]`` is what the worker's ``build`` reported.
  """
  context = multiprocessing.get_context('spawn')
  connections, processes, programs, info = {}, [], {}, {}

  def wait_until_built(label):
    status, names, facts = connections[label].recv()
    if status == 'error':
      raise RuntimeError(f'Worker {label!r} failed:\n{names}')
    programs[label], info[label] = names, facts

  try:
    for label, worker in workers.items():
      parent, child = context.Pipe()
      env = {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false', **worker.env}
      with _environment(env):
        process = context.Process(
            target=_serve,
            args=(child, worker.build, dict(worker.kwargs)),
            daemon=True,
        )
        process.start()
      connections[label] = parent
      processes.append(process)
      if one_build_at_a_time:
        wait_until_built(label)
    for label in connections:
      if label not in programs:
        wait_until_built(label)
    samples = {
        (label, name): [] for label in workers for name in programs[label]
    }
    for round_index in range(warmup + rounds):
      for label, name in samples:
        connections[label].send((name, min_seconds))
        seconds = connections[label].recv()
        if isinstance(seconds, tuple):
          raise RuntimeError(f'Worker {label!r} failed:\n{seconds[1]}')
        if round_index >= warmup:
          samples[label, name].append(seconds)
    return samples, info
  finally:
    for connection in connections.values():
      with contextlib.suppress(OSError):
        connection.send(None)
    for process in processes:
      process.join(timeout=30)
      if process.is_alive():
        process.kill()


def _platform_facts():
  return {}, {
      'platform': jax.devices()[0].platform,
      'devices': jax.device_count(),
  }


def jax_platform() -> tuple[str, int]:
  """JAX's platform (``'cpu'``, ``'gpu'``, ...) and its number of devices.

  Found in a worker process, so that the calling process never starts JAX's
  backend, which would take a GPU's memory from the workers it then starts.
  """
  _, info = time_in_alternation(
      {'probe': Worker(_platform_facts)}, rounds=0, warmup=0
  )
  return info['probe']['platform'], info['probe']['devices']


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
  """Median of the round-by-round ratios of two programs timed in alternation.

  A ratio of two samples taken one after the other is less exposed to the
  machine's load than the ratio of the two medians.
  """
  return statistics.median(a / b for a, b in zip(numerators, denominators))


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


def write_run(
    slug: str,
    title: str,
    command: str,
    table: str,
    platform: str,
    path: pathlib.Path = BENCHMARKS_MD,
) -> None:
  """Writes a script's table as its section for `platform` of BENCHMARKS.md.

  Args:
    slug: the script's section name, e.g. ``'update-cost'``; the section is
      ``SLUG-PLATFORM``, so each device's figures stand beside the others'.
    title: the section's heading, before ``(PLATFORM)``.
    command: the command line that rewrites the section.
    table: the markdown the run printed.
    platform: the JAX platform the figures were measured on, e.g. ``'cpu'``.
    path: the file to update.
  """
  write_section(
      f'{slug}-{platform}',
      f'## {title} ({platform.upper()})\n\n`{command}`\n\n{table}',
      path,
  )
