"""Language-model batches as AWD-LSTM serves them: batchify, then BPTT windows.

A split's token stream (``ptb.load_tokens``) is cut into ``batch_size``
contiguous columns (:func:`batchify`), and training walks down the rows in
windows whose length is drawn afresh for each window (:func:`bptt_windows`),
carrying the LSTM state from one window to the next. Everything stays
time-major, ``(steps, batch)``, as in AWD-LSTM's ``utils.py``: row ``t`` holds
the ``t``-th token of every column.

Training windows follow AWD-LSTM's ``main.py``: the base length is ``bptt``
with probability 0.95 and ``bptt / 2`` otherwise, the window length is
``max(5, int(normal(base, 5)))``, and a window that would run past the data is
cut at its end. The learning rate of that step is scaled by ``seq_len / bptt``
with the drawn, uncut ``seq_len`` (:attr:`Window.seq_len`). Evaluation uses
fixed windows of ``bptt`` rows, with :data:`EVAL_BATCH_SIZE` columns for
validation and :data:`TEST_BATCH_SIZE` for the test set. AWD-LSTM's
``evaluate`` sums ``length * mean loss`` over the windows and divides by the
number of rows, ``len(data)``, although ``len(data) - 1`` rows have targets;
a trainer that wants its numbers to the last digit divides the same way.

Window lengths vary, so a jitted step would compile once per length;
``pad_to_multiple_of`` pads every window up to a few fixed lengths and marks the
real steps in :attr:`Window.mask`, which the model's ``mask`` argument and the
loss honour.

The window lengths are drawn from a NumPy ``Generator``; together with the next
start row it is the iterator's whole state (:meth:`BPTTWindows.get_state`), so a
run resumes mid-epoch on exactly the windows it would have served.

References:
  Merity, Keskar and Socher, `Regularizing and Optimizing LSTM Language Models
  <https://arxiv.org/abs/1708.02182>`_, ICLR 2018.
"""

from collections.abc import Iterator, Sequence
import dataclasses
from typing import Any

import numpy as np

EVAL_BATCH_SIZE = 10  # columns of the validation data in AWD-LSTM
TEST_BATCH_SIZE = 1  # columns of the test data in AWD-LSTM
_FULL_BPTT_PROBABILITY = 0.95  # else the base length is bptt / 2
_SEQ_LEN_STDDEV = 5.0
_MIN_SEQ_LEN = 5


def batchify(tokens: np.ndarray, batch_size: int) -> np.ndarray:
  """Cuts a token stream into ``batch_size`` contiguous columns, time-major.

  The remainder that does not fill a whole row is dropped, as AWD-LSTM does;
  column ``j`` holds tokens ``j * nbatch`` to ``(j + 1) * nbatch - 1``.

  Args:
    tokens: the token ids of a split, in order, shape ``(num_tokens,)``.
    batch_size: number of columns.

  Returns:
    int32 array of shape ``(num_tokens // batch_size, batch_size)``.

  Raises:
    ValueError: if there are fewer tokens than columns.

  Example:
    >>> import numpy as np
    >>> batchify(np.arange(11), 2)
    array([[0, 5],
           [1, 6],
           [2, 7],
           [3, 8],
           [4, 9]], dtype=int32)
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 1:
    raise ValueError(f'tokens must be one-dimensional, got {tokens.shape}.')
  num_rows = len(tokens) // batch_size
  if num_rows == 0:
    raise ValueError(f'{len(tokens)} tokens cannot fill {batch_size} columns.')
  columns = tokens[: num_rows * batch_size].reshape(batch_size, num_rows)
  return np.ascontiguousarray(columns.T, dtype=np.int32)


@dataclasses.dataclass(frozen=True)
class Window:
  """One BPTT window of a batchified split.

  Attributes:
    inputs: int32 ``(steps, batch)`` token ids, rows ``start`` to
      ``start + length - 1`` of the data, then zeros for padding.
    targets: int32 ``(steps, batch)``, the next token of each input (rows
      ``start + 1`` to ``start + length``), then zeros for padding.
    mask: bool ``(steps,)``, True on the ``length`` real steps.
    start: first row of the window in the data.
    seq_len: the drawn window length before cutting at the end of the data
      (``bptt`` in evaluation); AWD-LSTM scales the step's learning rate by
      ``seq_len / bptt``.
  """

  inputs: np.ndarray
  targets: np.ndarray
  mask: np.ndarray
  start: int
  seq_len: int

  @property
  def length(self) -> int:
    """Number of real (unpadded) steps."""
    return int(self.mask.sum())


class BPTTWindows(Iterator[Window]):
  """One pass over a batchified split in BPTT windows (:func:`bptt_windows`)."""

  def __init__(
      self,
      data: np.ndarray,
      bptt: int,
      *,
      rng: int | Sequence[int] | np.random.Generator | None,
      train: bool,
      pad_to_multiple_of: int | None = None,
  ):
    if data.ndim != 2:
      raise ValueError(f'data must be (rows, batch), got {data.shape}.')
    if bptt < 1:
      raise ValueError(f'bptt must be positive, got {bptt}.')
    if train and rng is None:
      raise ValueError('Training windows need an rng (a seed or Generator).')
    self._data = data
    self._bptt = bptt
    self._train = train
    self._pad_to_multiple_of = pad_to_multiple_of
    self._rng = np.random.default_rng(rng) if train else None
    self._position = 0

  def exhausted(self) -> bool:
    """Whether the pass is over: the next ``next()`` raises StopIteration."""
    # AWD-LSTM's loops: `while i < len - 1 - 1` in training,
    # `range(0, len - 1, bptt)` in evaluation.
    rows = len(self._data)
    return self._position >= (rows - 2 if self._train else rows - 1)

  def _draw_seq_len(self) -> int:
    if not self._train:
      return self._bptt
    base = (
        self._bptt
        if self._rng.random() < _FULL_BPTT_PROBABILITY
        else self._bptt / 2
    )
    return max(_MIN_SEQ_LEN, int(self._rng.normal(base, _SEQ_LEN_STDDEV)))

  def __next__(self) -> Window:
    if self.exhausted():
      raise StopIteration
    start = self._position
    seq_len = self._draw_seq_len()
    length = min(seq_len, len(self._data) - 1 - start)
    steps = length
    if self._pad_to_multiple_of:
      steps = -(-length // self._pad_to_multiple_of) * self._pad_to_multiple_of
    padding = ((0, steps - length), (0, 0))
    inputs = np.pad(self._data[start : start + length], padding)
    targets = np.pad(self._data[start + 1 : start + 1 + length], padding)
    self._position = start + seq_len
    return Window(
        inputs=inputs,
        targets=targets,
        mask=np.arange(steps) < length,
        start=start,
        seq_len=seq_len,
    )

  def get_state(self) -> dict[str, Any]:
    """The next start row and the length RNG's state (JSON-serialisable)."""
    return {
        'position': self._position,
        'rng': None if self._rng is None else self._rng.bit_generator.state,
    }

  def set_state(self, state: dict[str, Any]) -> None:
    """Resumes from a state returned by :meth:`get_state`."""
    self._position = int(state['position'])
    if self._rng is not None:
      self._rng.bit_generator.state = state['rng']


def bptt_windows(
    data: np.ndarray,
    bptt: int,
    rng: int | Sequence[int] | np.random.Generator | None = None,
    *,
    train: bool = True,
    pad_to_multiple_of: int | None = None,
) -> BPTTWindows:
  """Serves a batchified split in BPTT windows, as AWD-LSTM's training loop.

  In training, each window's length is drawn as AWD-LSTM's ``main.py`` draws
  it (see the module docstring) and the next window starts where the drawn
  length ends, so consecutive windows tile the rows. In evaluation the windows
  are ``bptt`` rows long and need no ``rng``. Targets are the inputs shifted by
  one row.

  Args:
    data: ``(rows, batch)`` token ids from :func:`batchify`.
    bptt: the base window length (70 in AWD-LSTM).
    rng: a seed, a sequence of seeds (e.g. ``(seed, epoch)``) or a NumPy
      ``Generator``, which is advanced in place so that successive epochs go
      on drawing from one stream as AWD-LSTM's global NumPy generator does.
      Needed only for training.
    train: draw variable lengths (True) or use fixed ``bptt`` windows (False).
    pad_to_multiple_of: if given, pad every window's steps with zeros up to a
      multiple of this (marked False in ``mask``) to bound the number of
      shapes a jitted step sees.

  Returns:
    An iterator of :class:`Window` with ``get_state``/``set_state``.

  Example:
    >>> import numpy as np
    >>> data = batchify(np.arange(40), 2)
    >>> [(w.start, w.length) for w in bptt_windows(data, 8, train=False)]
    [(0, 8), (8, 8), (16, 3)]
    >>> windows = bptt_windows(data, 8, rng=0)
    >>> first = next(windows)
    >>> bool((first.targets[:-1] == first.inputs[1:]).all())
    True
  """
  return BPTTWindows(
      data, bptt, rng=rng, train=train, pad_to_multiple_of=pad_to_multiple_of
  )
