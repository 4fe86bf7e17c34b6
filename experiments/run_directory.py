"""A training run's working directory: configuration, metrics, checkpoints.

Both training loops, ``experiments.train`` (image classifiers) and
``experiments.train_lm`` (the language model), keep their run's files through a
:class:`RunDirectory`:

* ``config.json``: the run's configuration;
* ``metrics.jsonl``: one JSON record a line, appended at every evaluation;
  :func:`read_metrics` reads them back;
* ``tensorboard/``: the records' scalars, for TensorBoard;
* ``checkpoints/``: Orbax checkpoints of the training state and of the
  run's :class:`Progress`, the latest three kept.

Every process takes part in writing each checkpoint; only process 0 writes
``config.json``, ``metrics.jsonl`` and ``tensorboard/``. A run of several
processes first checks that they were all given the same run
(:func:`check_same_run_in_every_process`).
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import signal
import sys
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from experiments.configs import default as default_config
from experiments.configs import language_model as language_model_config

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
_CHECKPOINTS_KEPT = 3

# The configuration of either training loop.
RunConfig = default_config.Config | language_model_config.Config


def read_metrics(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The metrics records a run has written into `workdir`, in order.

  A line is a record once its newline is written: a last line without one,
  cut short by a process killed while appending it, is left out.

  Args:
    workdir: the run's working directory.

  Returns:
    A dict per record of ``metrics.jsonl``; none if the run has not written
    that file yet.
  """
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  complete_lines = path.read_text().split('\n')[:-1]
  return [json.loads(line) for line in complete_lines if line]


class Interrupted(KeyboardInterrupt):
  """Ctrl-C stopped a run at a step boundary, its checkpoint written."""

  def __init__(self, step: int):
    super().__init__(
        f'interrupted at step {step}; resume with the same command and --resume'
    )
    self.step = step


class InterruptRequest:
  """Within ``with``, the first Ctrl-C (SIGINT) is only recorded.

  A training loop checks :attr:`requested` between steps, checkpoints and
  raises :class:`Interrupted`, so that the checkpoint is consistent; a second
  Ctrl-C raises ``KeyboardInterrupt`` at once, as without it. Outside the main
  thread, where Python cannot handle signals, it changes nothing.
  """

  def __init__(self):
    self.requested = False
    self._previous: Any = None

  def __enter__(self) -> 'InterruptRequest':
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGINT, self._record)
    return self

  def _record(self, signum, frame) -> None:
    del signum, frame
    self.requested = True
    signal.signal(signal.SIGINT, self._previous)
    print(
        'Ctrl-C: stopping after this step, with a checkpoint (Ctrl-C '
        'again to stop at once, without one).',
        file=sys.stderr,
        flush=True,
    )

  def __exit__(self, *exc_info) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)

  def stop_if_requested(self, run: 'RunDirectory', step: int) -> None:
    """After a Ctrl-C, waits for `run`'s checkpoints to be written and
    raises :class:`Interrupted` at `step`; otherwise does nothing."""
    if self.requested:
      run.close()
      raise Interrupted(step)


def check_same_run_in_every_process(
    config: RunConfig, workdir: str | os.PathLike[str]
) -> None:
  """Refuses, in every process, a run that the processes do not all share.

  The processes of a run on several hosts must all be given the same command.
  Each compares a digest of its configuration and working directory with
  every other's, before any of them writes anything.

  Args:
    config: this process's configuration.
    workdir: this process's working directory.

  Raises:
    ValueError: in every process, naming the processes whose configuration
      or working directory differs from process 0's.
  """
  digest = hashlib.sha256(
      json.dumps([config.to_json(), str(workdir)], sort_keys=True).encode()
  ).digest()
  digests = multihost_utils.process_allgather(np.frombuffer(digest, np.uint32))
  differing = [
      index
      for index, other in enumerate(digests)
      if not np.array_equal(other, digests[0])
  ]
  if differing:
    raise ValueError(
        'The processes were given different commands: the configuration or '
        f'working directory of process {", ".join(map(str, differing))} '
        "differs from process 0's. Start the same command on every host "
        '(but for --process-id).'
    )


class CheckpointError(ValueError):
  """A checkpoint that cannot be restored; the message names it."""


@dataclasses.dataclass
class Progress:
  """Where a run is; saved with every checkpoint, as JSON.

  Attributes:
    epoch: the epoch under way, counted from 0.
    batch: the next batch (or window) of that epoch.
    window: the training metrics' sums since the last record.
    seconds: training and evaluation time so far.
    data: the state of the training data's iterator.
  """

  epoch: int = 0
  batch: int = 0
  window: dict[str, float] = dataclasses.field(default_factory=dict)
  seconds: float = 0.0
  data: dict[str, Any] = dataclasses.field(default_factory=dict)


def _is_key(x) -> bool:
  return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_as_data(tree):
  """Typed PRNG keys as their raw data, which Orbax stores."""
  return jax.tree.map(
      lambda x: jax.random.key_data(x) if _is_key(x) else x, tree
  )


def _keys_from_data(template, tree):
  return jax.tree.map(
      lambda t, x: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t))
      if _is_key(t)
      else x,
      template,
      tree,
  )


def _summary(error: Exception, length: int = 200) -> str:
  """The type and the start of `error`'s message, on one line."""
  text = ' '.join(str(error).split())
  if len(text) > length:
    text = text[:length] + ' ...'
  return f'{type(error).__name__}: {text}'


def _write_atomically(path: pathlib.Path, text: str) -> None:
  """Replaces `path` by `text` whole: a process killed meanwhile leaves the
  old file or the new one, never a part."""
  partial = path.with_name(path.name + '.partial')
  partial.write_text(text)
  os.replace(partial, path)


class RunDirectory:
  """The files of a training run in its working directory.

  Opening a run directory only reads: it refuses a folder that has
  checkpoints unless the run resumes, and a resumed run whose settings are not
  those of the folder's ``config.json``. Nothing is written before
  :meth:`start`.

  Attributes:
    workdir: the run's working directory.
    is_chief: whether this process writes the configuration, the metrics and
      TensorBoard's files (process 0 does).
  """

  def __init__(self, config: RunConfig, workdir: pathlib.Path):
    """Opens the run of `config` in `workdir`.

    Args:
      config: the run's configuration.
      workdir: the run's working directory; it need not exist.

    Raises:
      ValueError: if `workdir` has checkpoints and ``config.resume`` is False,
        or if its ``config.json`` cannot be read or holds other settings than
        `config` (but for ``configs.default.RUN_CONTROLS``).
    """
    self.workdir = workdir
    self.is_chief = jax.process_index() == 0
    self._config_path = workdir / CONFIG_FILE
    self._metrics_path = workdir / METRICS_FILE
    self._writer = None
    # A resumed run removes what a process killed mid-save left: Orbax
    # writes a checkpoint into a temporary folder and renames it when
    # complete, so such folders are never restored, only in the way.
    self._checkpoints = ocp.CheckpointManager(
        (workdir / 'checkpoints').absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=_CHECKPOINTS_KEPT, cleanup_tmp_directories=config.resume
        ),
    )
    try:
      if self.latest_step() is not None:
        self._check_resumable(config)
    except ValueError:
      self._checkpoints.close()
      raise

  def _check_resumable(self, config: RunConfig) -> None:
    if not config.resume:
      raise ValueError(
          f'{self.workdir} already has checkpoints: resume from them '
          '(--resume) or choose another working directory.'
      )
    if not self._config_path.exists():
      return
    try:
      saved = json.loads(self._config_path.read_text())
    except json.JSONDecodeError as error:
      raise ValueError(f'Cannot read {self._config_path}: {error}.') from None
    changed = default_config.changed_settings(saved, config)
    if changed:
      raise ValueError(
          f'{self.workdir} holds a run with other settings '
          f'({", ".join(changed)}): resume it with its own settings, or '
          'choose another working directory.'
      )

  def latest_step(self) -> int | None:
    """The step of the latest complete checkpoint; None if there is none."""
    return self._checkpoints.latest_step()

  def restore(self, state: Any) -> tuple[Any, Progress]:
    """The latest checkpoint, into the structure of `state`.

    Args:
      state: the training state of a fresh run, whose structure, shapes and
        dtypes (PRNG keys' included) the restored state takes.

    Returns:
      ``(state, progress)`` as :meth:`save` saved them.

    Raises:
      CheckpointError: naming the checkpoint, if it cannot be restored.
    """
    step = self.latest_step()
    abstract = jax.tree.map(
        ocp.utils.to_shape_dtype_struct, _keys_as_data(state)
    )
    try:
      restored = self._checkpoints.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract),
              progress=ocp.args.JsonRestore(),
          ),
      )
    # Orbax and TensorStore raise many kinds of errors for damaged files.
    except Exception as error:  # pylint: disable=broad-exception-caught
      self._checkpoints.close()
      folder = self._checkpoints.directory
      raise CheckpointError(
          f'Cannot restore the checkpoint of step {step} in {folder} '
          f'({_summary(error)}). If it is damaged, move '
          f'{folder / str(step)} out of {folder} to resume from the one '
          'before.'
      ) from error
    return (
        _keys_from_data(state, restored.state),
        Progress(**restored.progress),
    )

  def start(self, config: RunConfig, step: int) -> list[dict[str, Any]]:
    """Writes `config` and opens the outputs of a run at `step`.

    Args:
      config: the run's configuration, written as ``config.json``.
      step: the step the run starts from (that of the restored checkpoint,
        or 0).

    Returns:
      The metrics records up to `step`, those of a resumed run's earlier
      part; the later ones, written after its last checkpoint, are dropped.
    """
    records = [r for r in read_metrics(self.workdir) if r['step'] <= step]
    if self.is_chief:
      self.workdir.mkdir(parents=True, exist_ok=True)
      _write_atomically(
          self._config_path, json.dumps(config.to_json(), indent=2) + '\n'
      )
      _write_atomically(
          self._metrics_path, ''.join(json.dumps(r) + '\n' for r in records)
      )
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._writer = SummaryWriter(str(self.workdir / 'tensorboard'))
    return records

  def write(self, record: dict[str, Any]) -> None:
    """Appends `record` to the metrics and its scalars to TensorBoard's."""
    if not self.is_chief:
      return
    with self._metrics_path.open('a') as f:
      f.write(json.dumps(record) + '\n')
    for key, value in record.items():
      if key not in ('epoch', 'step'):
        self._writer.add_scalar(key, value, record['step'])
    self._writer.flush()

  def save(self, state: Any, progress: Progress) -> None:
    """Checkpoints `state` and `progress` at ``state.step``."""
    saved = dataclasses.asdict(progress)
    saved['window'] = {k: float(v) for k, v in saved['window'].items()}
    self._checkpoints.save(
        int(state.step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_keys_as_data(state)),
            progress=ocp.args.JsonSave(saved),
        ),
        force=True,
    )

  def close(self) -> None:
    """Waits for the checkpoint being written, then closes every output."""
    self._checkpoints.wait_until_finished()
    self._checkpoints.close()
    if self._writer is not None:
      self._writer.close()
