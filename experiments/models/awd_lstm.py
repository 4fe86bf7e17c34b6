"""AWD-LSTM language model (Merity et al., 2018) in Flax NNX.

A port of AWD-LSTM's ``model.py`` as AdaBelief's and AdaDiff's PTB experiments
run it: an embedding, ``num_layers`` single-layer LSTMs, and a decoder that
reuses the embedding matrix (tied weights) with its own bias. Every tensor is
time-major, ``(steps, batch, features)``, like the reference.

Regularisation, all off after ``model.eval()`` and on after ``model.train()``:

* ``dropoute``: embedding dropout, which drops whole rows of the embedding
  matrix (every occurrence of a word in the window) and scales the rest by
  ``1 / (1 - dropoute)``.
* ``dropouti``, ``dropouth``, ``dropout``: locked (variational) dropout, one
  mask per sequence shared by every time step, on the embeddings, between
  LSTM layers and on the last layer's output.
* ``wdrop``: DropConnect on each LSTM's hidden-to-hidden matrix, one
  element-wise mask per forward call (per window), as ``weight_drop.py``
  applies ``dropout`` to ``weight_hh_l0`` before each call.

The call returns the last layer's output before and after its dropout
(:class:`Activations`), from which :func:`activation_regularization` computes
the AR and TAR terms the training loss adds.

Each LSTM has PyTorch's parameters and initialisation, uniform in
``(-1/sqrt(hidden), 1/sqrt(hidden))``, with both biases (``b_ih`` and
``b_hh``), so the parameter count is PyTorch's: with vocabulary 10,000,
``embed_size=400`` and ``hidden_size=1150``, 24,221,600 for three layers and
13,632,400 for two. Kernels are stored transposed (``input_kernel`` is
``weight_ih_l0.T``), gates in PyTorch's order: input, forget, cell, output.
The embedding is uniform in ``(-0.1, 0.1)``, the decoder bias zero.

The carry (each layer's ``(h, c)``) goes in and comes out of every call, so a
training loop passes it from one window to the next; being an input, it is
never differentiated through, which is AWD-LSTM's ``repackage_hidden``.

References:
  Merity, Keskar and Socher, `Regularizing and Optimizing LSTM Language Models
  <https://arxiv.org/abs/1708.02182>`_, ICLR 2018.
  Gal and Ghahramani, `A Theoretically Grounded Application of Dropout in
  Recurrent Neural Networks <https://arxiv.org/abs/1512.05287>`_, NeurIPS 2016.
"""

import math
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

LayerCarry = tuple[jax.Array, jax.Array]  # (h, c), each (batch, hidden)
Carry = tuple[LayerCarry, ...]
_EMBEDDING_INIT_RANGE = 0.1


class Activations(NamedTuple):
  """The last LSTM layer's output, for the AR and TAR penalties.

  Attributes:
    raw: ``(steps, batch, features)`` before the output dropout (TAR's input).
    dropped: the same after the output dropout, what the decoder reads (AR's
      input).
  """

  raw: jax.Array
  dropped: jax.Array


def _uniform(key: jax.Array, shape: tuple[int, ...], bound: float) -> jax.Array:
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _dropout_mask(
    key: jax.Array, rate: float, shape: tuple[int, ...]
) -> jax.Array:
  """Kept entries are ``1 / (1 - rate)``, dropped ones 0."""
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  return keep.astype(jnp.float32) / (1.0 - rate)


class LSTMLayer(nnx.Module):
  """One PyTorch-style LSTM layer with DropConnect on its recurrent matrix.

  Args:
    input_size: features of the input.
    hidden_size: features of ``h`` and ``c``.
    wdrop: DropConnect rate on the hidden-to-hidden matrix in training.
    rngs: ``params`` for the initialisation, ``dropout`` for the masks.
  """

  def __init__(
      self,
      input_size: int,
      hidden_size: int,
      *,
      wdrop: float = 0.0,
      rngs: nnx.Rngs,
  ):
    gates = 4 * hidden_size
    # One draw for the four tensors: they share PyTorch's distribution, and
    # one random-bits computation compiles much faster than four.
    values = _uniform(
        rngs.params(),
        (input_size + hidden_size + 2, gates),
        1.0 / math.sqrt(hidden_size),
    )
    self.input_kernel = nnx.Param(values[:input_size])
    self.hidden_kernel = nnx.Param(values[input_size:-2])
    self.input_bias = nnx.Param(values[-2])
    self.hidden_bias = nnx.Param(values[-1])
    self.hidden_size = hidden_size
    self.wdrop = wdrop
    self.deterministic = False
    self.rngs = rngs.dropout.fork()

  def init_carry(self, batch_size: int) -> LayerCarry:
    """Zero ``(h, c)``, each ``(batch_size, hidden_size)``."""
    shape = (batch_size, self.hidden_size)
    # Two buffers, not one twice: a training step may donate the carry.
    return jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32)

  def __call__(
      self, inputs: jax.Array, carry: LayerCarry, mask: jax.Array | None = None
  ) -> tuple[jax.Array, LayerCarry]:
    """Runs the layer over time.

    Args:
      inputs: ``(steps, batch, input_size)``.
      carry: ``(h, c)`` before the first step.
      mask: optional ``(steps,)`` or ``(steps, batch)`` booleans; on a False
        step the carry is left as it was (padding).

    Returns:
      The outputs ``h``, ``(steps, batch, hidden_size)``, and the final carry.
    """
    hidden_kernel = self.hidden_kernel[...]
    if not self.deterministic and self.wdrop > 0:
      hidden_kernel = hidden_kernel * _dropout_mask(
          self.rngs(), self.wdrop, hidden_kernel.shape
      )
    # The input projection of every step is one matrix product, outside the
    # sequential loop.
    projected = (
        inputs @ self.input_kernel[...]
        + self.input_bias[...]
        + self.hidden_bias[...]
    )
    steps, batch = inputs.shape[:2]
    if mask is None:
      mask = jnp.ones((steps, batch), bool)
    mask = jnp.broadcast_to(mask.reshape(steps, -1), (steps, batch))[..., None]

    def step(carry: LayerCarry, step_inputs):
      h, c = carry
      projected_t, mask_t = step_inputs
      gates = projected_t + h @ hidden_kernel
      input_gate, forget_gate, cell_gate, output_gate = jnp.split(gates, 4, -1)
      new_c = jax.nn.sigmoid(forget_gate) * c + jax.nn.sigmoid(
          input_gate
      ) * jnp.tanh(cell_gate)
      new_h = jax.nn.sigmoid(output_gate) * jnp.tanh(new_c)
      new_h = jnp.where(mask_t, new_h, h)
      new_c = jnp.where(mask_t, new_c, c)
      return (new_h, new_c), new_h

    carry, outputs = jax.lax.scan(step, carry, (projected, mask))
    return outputs, carry


class AWDLSTM(nnx.Module):
  """AWD-LSTM language model; see the module docstring.

  The dropout defaults are those of AdaBelief's PTB runs, which AdaDiff reuses
  (AWD-LSTM's README command for PTB): ``--dropouti 0.4 --dropouth 0.25`` and
  AWD-LSTM's defaults for the rest.

  Args:
    vocab_size: number of words (10,000 for PTB).
    embed_size: embedding size (AWD-LSTM's ``emsize``).
    hidden_size: hidden size of every LSTM but the last (``nhid``).
    num_layers: number of LSTM layers (``nlayers``).
    tie_weights: decode with the embedding matrix; the last LSTM then has
      ``embed_size`` units.
    dropout: locked dropout on the last LSTM's output.
    dropouth: locked dropout between LSTM layers.
    dropouti: locked dropout on the embeddings.
    dropoute: embedding (word) dropout.
    wdrop: DropConnect on the hidden-to-hidden matrices.
    rngs: ``params`` for the initialisation, ``dropout`` for the masks.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = AWDLSTM(50, embed_size=8, hidden_size=16, num_layers=2,
    ...                 rngs=nnx.Rngs(0))
    >>> model.eval()  # no dropout
    >>> carry = model.init_carry(batch_size=3)
    >>> logits, carry, activations = model(jnp.zeros((7, 3), int), carry)
    >>> logits.shape, activations.raw.shape, [h.shape for h, _ in carry]
    ((7, 3, 50), (7, 3, 8), [(3, 16), (3, 8)])
  """

  def __init__(
      self,
      vocab_size: int,
      *,
      embed_size: int = 400,
      hidden_size: int = 1150,
      num_layers: int = 3,
      tie_weights: bool = True,
      dropout: float = 0.4,
      dropouth: float = 0.25,
      dropouti: float = 0.4,
      dropoute: float = 0.1,
      wdrop: float = 0.5,
      rngs: nnx.Rngs,
  ):
    if num_layers < 1:
      raise ValueError(f'num_layers must be at least 1, got {num_layers}.')
    self.embedding = nnx.Param(
        _uniform(rngs.params(), (vocab_size, embed_size), _EMBEDDING_INIT_RANGE)
    )
    output_size = embed_size if tie_weights else hidden_size
    sizes = [embed_size] + [hidden_size] * (num_layers - 1) + [output_size]
    self.layers = nnx.List([
        LSTMLayer(sizes[i], sizes[i + 1], wdrop=wdrop, rngs=rngs)
        for i in range(num_layers)
    ])
    if tie_weights:
      self.decoder_kernel = None
    else:
      self.decoder_kernel = nnx.Param(
          _uniform(
              rngs.params(), (output_size, vocab_size), _EMBEDDING_INIT_RANGE
          )
      )
    self.decoder_bias = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))
    self.dropout = dropout
    self.dropouth = dropouth
    self.dropouti = dropouti
    self.dropoute = dropoute
    self.deterministic = False
    self.rngs = rngs.dropout.fork()

  def init_carry(self, batch_size: int) -> Carry:
    """Zero ``(h, c)`` for every layer, as AWD-LSTM's ``init_hidden``."""
    return tuple(layer.init_carry(batch_size) for layer in self.layers)

  def _locked_dropout(self, x: jax.Array, rate: float) -> jax.Array:
    if self.deterministic or rate == 0:
      return x
    return x * _dropout_mask(self.rngs(), rate, (1,) + x.shape[1:])

  def _embed(self, tokens: jax.Array) -> jax.Array:
    embedding = self.embedding[...]
    embedded = embedding[tokens]
    if self.deterministic or self.dropoute == 0:
      return embedded
    # Scaling the looked-up rows by their word's mask is the same as looking
    # them up in the masked matrix, as embed_regularize.py does, for less work.
    row_mask = _dropout_mask(self.rngs(), self.dropoute, (embedding.shape[0],))
    return embedded * row_mask[tokens][..., None]

  def __call__(
      self, tokens: jax.Array, carry: Carry, mask: jax.Array | None = None
  ) -> tuple[jax.Array, Carry, Activations]:
    """Predicts the next token at every step.

    Args:
      tokens: int ``(steps, batch)`` token ids.
      carry: from :meth:`init_carry` or the previous window.
      mask: optional ``(steps,)`` booleans, False on padded steps, where the
        carry is held (``lm_pipeline.Window.mask``).

    Returns:
      ``(logits, carry, activations)``: logits ``(steps, batch, vocab_size)``,
      the carry after the last real step, and the last layer's outputs for
      :func:`activation_regularization`.
    """
    x = self._locked_dropout(self._embed(tokens), self.dropouti)
    new_carry = []
    for index, (layer, layer_carry) in enumerate(zip(self.layers, carry)):
      x, layer_carry = layer(x, layer_carry, mask)
      new_carry.append(layer_carry)
      if index < len(self.layers) - 1:
        x = self._locked_dropout(x, self.dropouth)
    dropped = self._locked_dropout(x, self.dropout)
    kernel = (
        self.embedding[...].T
        if self.decoder_kernel is None
        else self.decoder_kernel[...]
    )
    logits = dropped @ kernel + self.decoder_bias[...]
    return logits, tuple(new_carry), Activations(raw=x, dropped=dropped)


def activation_regularization(
    activations: Activations,
    *,
    alpha: float,
    beta: float,
    mask: jax.Array | None = None,
) -> jax.Array:
  """AWD-LSTM's AR and TAR penalties on the last layer's output.

  ``alpha * mean(dropped**2) + beta * mean((raw[1:] - raw[:-1])**2)``, the
  terms ``main.py`` adds to the cross-entropy. With a mask, the means run over
  real steps only, and TAR over pairs of consecutive real steps.

  Args:
    activations: from the model's call.
    alpha: weight of activation regularisation (AR; 2 in AWD-LSTM).
    beta: weight of temporal activation regularisation (TAR; 1 in AWD-LSTM).
    mask: optional ``(steps,)`` booleans, False on padded steps.

  Returns:
    The scalar penalty.

  Example:
    >>> import jax.numpy as jnp
    >>> raw = jnp.array([[[1.0]], [[3.0]]])
    >>> activation_regularization(
    ...     Activations(raw, 2 * raw), alpha=2.0, beta=1.0)
    Array(44., dtype=float32)
  """
  raw, dropped = activations
  steps = raw.shape[0]
  if mask is None:
    mask = jnp.ones((steps,), bool)
  mask = mask.astype(jnp.float32)
  features = math.prod(raw.shape[1:])
  pairs = mask[1:] * mask[:-1]
  squares = jnp.sum(dropped**2, axis=tuple(range(1, raw.ndim)))
  differences = jnp.sum(
      (raw[1:] - raw[:-1]) ** 2, axis=tuple(range(1, raw.ndim))
  )
  ar = jnp.sum(mask * squares) / (jnp.sum(mask) * features)
  tar = jnp.sum(pairs * differences) / jnp.maximum(jnp.sum(pairs) * features, 1)
  return alpha * ar + beta * tar
