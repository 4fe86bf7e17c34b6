"""The problems of ``python -m experiments robustness``, written to be vmapped.

A task holds its data in memory and gives, for one copy of the model (one
rate and seed of the grid), pure functions that the grid vmaps over every
copy:

* :class:`DigitsTask`: :class:`~experiments.models.small_cnn.SmallCNN` on
  scikit-learn's digits at their native 8x8 pixels, one grey channel (the
  input pipeline's 32x32x3 images repeat every pixel in a 4x4 block and three
  channels; taking one of each gives the stored image back), normalised by
  the training pixels' mean and deviation. No augmentation; each seed
  shuffles every epoch its own way and drops the last incomplete batch. The
  metric is the test accuracy.
* :class:`LanguageModelTask`: a small AWD-LSTM (its dropouts and AR/TAR
  penalties at AWD-LSTM's defaults, sizes of the grid) on the PTB-format text
  of ``--data``: the training tokens in ``batch_size`` columns, windows of
  ``bptt`` tokens in order, the LSTM state carried from window to window and
  reset every epoch, no gradient clipping (it would shield every method from
  a large rate alike). The metric is the test perplexity, over the test text
  in 10 columns (AWD-LSTM's validation layout), full windows only.

A task's ``train_epoch`` takes ``step(params, opt_state, loss_fn)``, which
differentiates ``loss_fn(params) -> (loss, aux)`` and applies the method: the
grid builds it for each method, with ``value`` and ``value_fn`` (the same
batch and dropout masks) for the methods that read the loss.
"""

from collections.abc import Callable
import math
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import input_pipeline, lm_pipeline, ptb
from experiments.configs.robustness import Grid
from experiments.models import awd_lstm, small_cnn

# step(params, opt_state, loss_fn) -> (params, opt_state, loss, aux).
Step = Callable[..., tuple[Any, Any, jax.Array, Any]]
_DIGITS_SIDE = 8  # scikit-learn's digits are 8x8
_UPSAMPLED_BLOCK = 4  # the pipeline's 32x32 images repeat each pixel 4x4
_DIGITS_WIDTHS = (8, 16)
# AWD-LSTM's activation (AR) and temporal activation (TAR) penalties.
_AR_ALPHA = 2.0
_TAR_BETA = 1.0


def _steps_per_epoch(available: int, grid: Grid) -> int:
  if available < 1:
    raise ValueError('The training data do not fill one batch.')
  return min(available, grid.max_steps_per_epoch or available)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels
  ).mean()


class DigitsTask:
  """The small convnet on digits; see the module's documentation.

  Attributes:
    metric: ``'accuracy'``.
    higher_is_better: True.
    chance: the test accuracy of always predicting the most frequent test
      class.
    steps_per_epoch: optimizer steps in an epoch.
    shared: the arrays every copy reads (passed to the compiled programs).
  """

  metric = 'accuracy'
  higher_is_better = True

  def __init__(self, grid: Grid):
    train = input_pipeline.read_split('digits', 'train')
    test = input_pipeline.read_split('digits', 'test')
    train_pixels, test_pixels = (
        split.images[:, ::_UPSAMPLED_BLOCK, ::_UPSAMPLED_BLOCK, :1] / 255.0
        for split in (train, test)
    )
    mean, std = train_pixels.mean(), train_pixels.std()
    self.shared = {
        'train_images': jnp.asarray((train_pixels - mean) / std, jnp.float32),
        'train_labels': jnp.asarray(train.labels),
        'test_images': jnp.asarray((test_pixels - mean) / std, jnp.float32),
        'test_labels': jnp.asarray(test.labels),
    }
    self.chance = float(np.bincount(test.labels).max() / len(test.labels))
    self._batch_size = grid.batch_size
    self._num_train = len(train.labels)
    self.steps_per_epoch = _steps_per_epoch(
        self._num_train // grid.batch_size, grid
    )
    self.graphdef, _, _ = self._split(0)

  @staticmethod
  def _split(seed: int):
    model = small_cnn.SmallCNN(
        _DIGITS_WIDTHS,
        num_classes=10,
        image_size=_DIGITS_SIDE,
        channels=1,
        rngs=nnx.Rngs(seed),
    )
    return nnx.split(model, nnx.Param, ...)

  def initial_state(self, seed: int) -> tuple[nnx.State, nnx.State]:
    """The parameters and other variables of the model of `seed`."""
    _, params, model_state = self._split(seed)
    return params, model_state

  def epoch_inputs(self, seed: int, epoch: int) -> dict[str, np.ndarray]:
    """The batches of `epoch` for `seed`: ``(steps, batch)`` example indices.

    Example:
      >>> task = DigitsTask(Grid(batch_size=100, max_steps_per_epoch=2))
      >>> task.epoch_inputs(seed=0, epoch=3)['batches'].shape
      (2, 100)
    """
    order = np.random.default_rng((seed, epoch)).permutation(self._num_train)
    used = self.steps_per_epoch * self._batch_size
    return {
        'batches': (
            order[:used]
            .reshape(self.steps_per_epoch, self._batch_size)
            .astype(np.int32)
        )
    }

  def train_epoch(
      self, step: Step, params, model_state, opt_state, inputs, shared
  ):
    """An epoch of one copy; returns its state and mean training loss."""

    def one_step(carry, batch):
      params, opt_state = carry
      images = shared['train_images'][batch]
      labels = shared['train_labels'][batch]

      def loss_fn(p):
        model = nnx.merge(self.graphdef, p, model_state)
        return _cross_entropy(model(images), labels), None

      params, opt_state, loss, _ = step(params, opt_state, loss_fn)
      return (params, opt_state), loss

    (params, opt_state), losses = jax.lax.scan(
        one_step, (params, opt_state), inputs['batches']
    )
    return params, model_state, opt_state, jnp.mean(losses)

  def evaluate(
      self, params, model_state, shared
  ) -> tuple[jax.Array, jax.Array]:
    """One copy's test loss and accuracy."""
    model = nnx.merge(self.graphdef, params, model_state)
    logits = model(shared['test_images'])
    labels = shared['test_labels']
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return _cross_entropy(logits, labels), accuracy


class LanguageModelTask:
  """A small AWD-LSTM on PTB-format text; see the module's documentation.

  Attributes:
    metric: ``'perplexity'``.
    higher_is_better: False.
    chance: the vocabulary's size, the uniform prediction's perplexity.
    steps_per_epoch: optimizer steps (windows) in an epoch.
    shared: the token arrays every copy reads.
  """

  metric = 'perplexity'
  higher_is_better = False

  def __init__(self, grid: Grid, data_dir: str | None, text_dir: str | None):
    ptb.prepare(data_dir, manual_dir=text_dir)
    vocab_size = len(ptb.load_vocabulary(data_dir))
    train = lm_pipeline.batchify(
        ptb.load_tokens('train', data_dir), grid.batch_size
    )
    test = lm_pipeline.batchify(
        ptb.load_tokens('test', data_dir), lm_pipeline.EVAL_BATCH_SIZE
    )
    self._bptt = grid.bptt
    self._test_windows = (len(test) - 1) // grid.bptt
    if self._test_windows < 1:
      raise ValueError(
          f'The test text does not fill one window of {grid.bptt} tokens in '
          f'{lm_pipeline.EVAL_BATCH_SIZE} columns.'
      )
    self.shared = {'train': jnp.asarray(train), 'test': jnp.asarray(test)}
    self.chance = float(vocab_size)
    self.steps_per_epoch = _steps_per_epoch((len(train) - 1) // grid.bptt, grid)
    self._batch_size = grid.batch_size
    self._model_settings = {
        'embed_size': grid.embed_size,
        'hidden_size': grid.hidden_size,
        'num_layers': grid.num_layers,
    }
    self._vocab_size = vocab_size
    self.graphdef, _, _ = self._split(0)

  def _split(self, seed: int):
    model = awd_lstm.AWDLSTM(
        self._vocab_size, rngs=nnx.Rngs(seed), **self._model_settings
    )
    return nnx.split(model, nnx.Param, ...)

  def initial_state(self, seed: int) -> tuple[nnx.State, nnx.State]:
    """The parameters and dropout streams of the model of `seed`."""
    _, params, model_state = self._split(seed)
    return params, model_state

  def epoch_inputs(self, seed: int, epoch: int) -> dict[str, np.ndarray]:
    """Nothing: the windows are the same for every seed, and the dropout
    streams are in the model's state."""
    del seed, epoch
    return {}

  def _window(self, tokens: jax.Array, index: jax.Array):
    rows = jax.lax.dynamic_slice_in_dim(
        tokens, index * self._bptt, self._bptt + 1
    )
    return rows[:-1], rows[1:]

  def train_epoch(
      self, step: Step, params, model_state, opt_state, inputs, shared
  ):
    """An epoch of one copy; returns its state and mean training loss (the
    cross-entropy without the penalties)."""
    del inputs
    model = nnx.merge(self.graphdef, params, model_state)
    carry = model.init_carry(self._batch_size)

    def one_step(state, index):
      params, model_state, opt_state, carry = state
      inputs, targets = self._window(shared['train'], index)

      def loss_fn(p):
        model = nnx.merge(self.graphdef, p, model_state, copy=True)
        model.train()
        logits, new_carry, activations = model(inputs, carry)
        cross_entropy = _cross_entropy(logits, targets)
        penalty = awd_lstm.activation_regularization(
            activations, alpha=_AR_ALPHA, beta=_TAR_BETA
        )
        new_state = nnx.state(model, nnx.Not(nnx.Param))
        return cross_entropy + penalty, (cross_entropy, new_carry, new_state)

      params, opt_state, _, aux = step(params, opt_state, loss_fn)
      cross_entropy, carry, model_state = aux
      return (params, model_state, opt_state, carry), cross_entropy

    (params, model_state, opt_state, _), losses = jax.lax.scan(
        one_step,
        (params, model_state, opt_state, carry),
        jnp.arange(self.steps_per_epoch),
    )
    return params, model_state, opt_state, jnp.mean(losses)

  def evaluate(
      self, params, model_state, shared
  ) -> tuple[jax.Array, jax.Array]:
    """One copy's test loss (mean over tokens) and perplexity."""
    model = nnx.merge(self.graphdef, params, model_state, copy=True)
    model.eval()

    def one_window(carry, index):
      inputs, targets = self._window(shared['test'], index)
      logits, carry, _ = model(inputs, carry)
      return carry, _cross_entropy(logits, targets)

    _, losses = jax.lax.scan(
        one_window,
        model.init_carry(lm_pipeline.EVAL_BATCH_SIZE),
        jnp.arange(self._test_windows),
    )
    loss = jnp.mean(losses)
    return loss, jnp.exp(loss)


Task = DigitsTask | LanguageModelTask


def create(grid: Grid, data_dir: str | None, text_dir: str | None) -> Task:
  """The task of `grid`, its data read (and PTB prepared from `text_dir`).

  Raises:
    ValueError: ``ptb`` without `text_dir` and not prepared in `data_dir`
      is refused by ``experiments.ptb``; a split too short for one batch.
  """
  if grid.task == 'digits':
    return DigitsTask(grid)
  return LanguageModelTask(grid, data_dir, text_dir)


def diverged(
    metric: float, loss: float, chance: float, higher_is_better: bool
) -> bool:
  """Whether a run diverged: a loss that is not finite, or a metric no
  better than chance.

  Example:
    >>> diverged(0.11, 2.3, chance=0.11, higher_is_better=True)
    True
    >>> diverged(95.0, 4.5, chance=1e4, higher_is_better=False)
    False
    >>> diverged(0.9, math.nan, 0.1, higher_is_better=True)
    True
  """
  if not math.isfinite(loss) or not math.isfinite(metric):
    return True
  return metric <= chance if higher_is_better else metric >= chance


# The tasks in a phrase, for the table's and figure's titles.
DESCRIPTIONS = {
    'digits': 'a small convnet on scikit-learn digits (8x8)',
    'ptb': 'a small AWD-LSTM on PTB text',
}
