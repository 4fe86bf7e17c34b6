"""AWD-LSTM: parameter counts, regularisation switches, carry and training."""

import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import lm_pipeline, ptb
from experiments.models import awd_lstm

# Compiling is most of these tests' time: models are initialised under one jit
# (eagerly, every parameter shape compiles on its own), with 'rbg' keys, whose
# random bits compile about twice as fast on CPU as the default threefry's,
# and the tests share models and jitted calls at one shape.


def _create(module_class, *args, seed=0, **kwargs):
  return nnx.jit(
      lambda: module_class(
          *args, rngs=nnx.Rngs(jax.random.key(seed, impl='rbg')), **kwargs
      )
  )()


def _num_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _pytorch_count(vocab, embed, hidden, layers):
  """awd-lstm's `total_params`: tied embedding, decoder bias, torch.nn.LSTMs.

  A torch.nn.LSTM layer has weight_ih (4h x in), weight_hh (4h x h) and two
  bias vectors, b_ih and b_hh (4h each); the last layer has `embed` units.
  """
  sizes = [embed] + [hidden] * (layers - 1) + [embed]
  lstm = sum(
      4 * out * (inp + out) + 2 * 4 * out
      for inp, out in zip(sizes[:-1], sizes[1:])
  )
  return vocab * embed + vocab + lstm


@pytest.mark.parametrize('num_layers', [2, 3])
def test_parameter_count_matches_pytorch_awd_lstm(num_layers):
  model = nnx.eval_shape(
      lambda: awd_lstm.AWDLSTM(
          10_000,
          embed_size=400,
          hidden_size=1150,
          num_layers=num_layers,
          rngs=nnx.Rngs(0),
      )
  )
  count = _num_params(model)
  assert count == _pytorch_count(10_000, 400, 1150, num_layers)
  if num_layers == 3:
    assert round(count / 1e6) == 24  # awd-lstm's README: "24M"


def test_untied_model_has_its_own_decoder_and_a_full_size_last_layer():
  model = nnx.eval_shape(
      lambda: awd_lstm.AWDLSTM(
          30,
          embed_size=4,
          hidden_size=6,
          num_layers=2,
          tie_weights=False,
          rngs=nnx.Rngs(0),
      )
  )
  assert model.decoder_kernel.shape == (6, 30)
  assert model.layers[-1].hidden_kernel.shape == (6, 24)


_VOCAB, _STEPS, _BATCH = 23, 6, 2


@nnx.jit
def _forward(model, tokens, carry, mask):
  return model(tokens, carry, mask)


@pytest.fixture(scope='module')
def small_model():
  return _create(
      awd_lstm.AWDLSTM, _VOCAB, embed_size=6, hidden_size=10, num_layers=3
  )


def test_initialisation_follows_awd_lstm_and_pytorch(small_model):
  embedding = np.asarray(small_model.embedding[...])
  assert np.abs(embedding).max() <= 0.1 and embedding.std() > 0.04
  assert not np.asarray(small_model.decoder_bias[...]).any()
  for layer in small_model.layers:
    bound = 1 / math.sqrt(layer.hidden_size)
    for param in (
        layer.input_kernel,
        layer.hidden_kernel,
        layer.input_bias,
        layer.hidden_bias,
    ):
      values = np.asarray(param[...])
      assert np.abs(values).max() <= bound
      assert values.std() > 0.4 * bound


@nnx.jit
def _layer_forward(layer, inputs, carry):
  return layer(inputs, carry)


@pytest.fixture(scope='module')
def lstm_layer():
  return _create(awd_lstm.LSTMLayer, 5, 7, wdrop=0.5)


def _lstm_inputs():
  rng = np.random.default_rng(0)
  return [
      jnp.asarray(rng.normal(size=shape), jnp.float32)
      for shape in [(6, 3, 5), (3, 7), (3, 7)]
  ]


def test_lstm_layer_matches_torch_lstm(lstm_layer):
  torch = pytest.importorskip('torch')
  layer = nnx.clone(lstm_layer)
  layer.eval()
  reference = torch.nn.LSTM(5, 7)
  assert sum(p.numel() for p in reference.parameters()) == _num_params(layer)
  with torch.no_grad():
    for name, param in [
        ('weight_ih_l0', layer.input_kernel),
        ('weight_hh_l0', layer.hidden_kernel),
        ('bias_ih_l0', layer.input_bias),
        ('bias_hh_l0', layer.hidden_bias),
    ]:
      getattr(reference, name).copy_(torch.tensor(np.asarray(param[...]).T))
  inputs, h, c = _lstm_inputs()
  outputs, (final_h, final_c) = _layer_forward(layer, inputs, (h, c))
  want, (want_h, want_c) = reference(
      torch.tensor(np.asarray(inputs)),
      (torch.tensor(np.asarray(h))[None], torch.tensor(np.asarray(c))[None]),
  )
  np.testing.assert_allclose(outputs, want.detach().numpy(), atol=1e-5)
  np.testing.assert_allclose(final_h, want_h[0].detach().numpy(), atol=1e-5)
  np.testing.assert_allclose(final_c, want_c[0].detach().numpy(), atol=1e-5)


def _tokens(seed=0):
  return jnp.asarray(
      np.random.default_rng(seed).integers(0, _VOCAB, (_STEPS, _BATCH))
  )


def _first_steps(count):
  return jnp.arange(_STEPS) < count


def test_carry_shapes(small_model):
  carry = small_model.init_carry(4)
  assert [(h.shape, c.shape) for h, c in carry] == [
      ((4, 10), (4, 10)),
      ((4, 10), (4, 10)),
      ((4, 6), (4, 6)),
  ]
  assert not any(np.asarray(x).any() for x in jax.tree.leaves(carry))


def test_the_carry_is_threaded_through_windows_and_held_on_padding(small_model):
  model = nnx.clone(small_model)
  model.eval()
  tokens, carry = _tokens(), model.init_carry(_BATCH)
  logits, carry_after, activations = _forward(
      model, tokens, carry, _first_steps(_STEPS)
  )
  assert logits.shape == (_STEPS, _BATCH, _VOCAB)
  assert (
      activations.raw.shape == activations.dropped.shape == (_STEPS, _BATCH, 6)
  )
  assert jax.tree.map(jnp.shape, carry_after) == jax.tree.map(jnp.shape, carry)
  # Steps 0-3, then 4-5 padded to the same length, are one window over 0-5.
  first, carry_mid, _ = _forward(model, tokens, carry, _first_steps(4))
  rest = jnp.concatenate([tokens[4:], tokens[:4]])
  second, carry_end, _ = _forward(model, rest, carry_mid, _first_steps(2))
  np.testing.assert_allclose(first[:4], logits[:4], atol=1e-5)
  np.testing.assert_allclose(second[:2], logits[4:], atol=1e-5)
  for got, want in zip(
      jax.tree.leaves(carry_end), jax.tree.leaves(carry_after)
  ):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_dropout_is_on_in_training_and_off_in_evaluation(small_model):
  model = nnx.clone(small_model)
  tokens, carry, mask = (
      _tokens(),
      model.init_carry(_BATCH),
      _first_steps(_STEPS),
  )
  train_a, _, activations = _forward(model, tokens, carry, mask)
  train_b, _, _ = _forward(model, tokens, carry, mask)
  assert not np.allclose(train_a, train_b)
  assert not np.allclose(activations.raw, activations.dropped)
  model.eval()
  eval_a, _, activations = _forward(model, tokens, carry, mask)
  eval_b, _, _ = _forward(model, tokens, carry, mask)
  np.testing.assert_array_equal(eval_a, eval_b)
  np.testing.assert_array_equal(activations.raw, activations.dropped)
  model.train()
  assert not np.allclose(_forward(model, tokens, carry, mask)[0], eval_a)


def test_weight_drop_masks_only_the_recurrent_matrix_once_per_call(lstm_layer):
  # As weight_drop.py's own check: from a zero state the first step does not
  # see the hidden-to-hidden matrix, so only later steps differ.
  layer = nnx.clone(lstm_layer)
  inputs, zeros = _lstm_inputs()[0], layer.init_carry(3)
  first, _ = _layer_forward(layer, inputs, zeros)
  second, _ = _layer_forward(layer, inputs, zeros)
  np.testing.assert_allclose(first[0], second[0], atol=1e-6)
  assert not np.allclose(first[1:], second[1:])
  layer.eval()
  third, _ = _layer_forward(layer, inputs, zeros)
  fourth, _ = _layer_forward(layer, inputs, zeros)
  np.testing.assert_array_equal(third, fourth)


@nnx.jit
def _embed(model, tokens):
  return model._embed(tokens)  # pylint: disable=protected-access


def test_embedding_dropout_drops_whole_words(small_model):
  model = nnx.clone(small_model)
  model.dropoute = 0.5
  words = np.arange(_VOCAB)
  tokens = np.stack([words, words[::-1]], axis=1)
  embedded = np.asarray(_embed(model, jnp.asarray(tokens)))
  table = np.asarray(model.embedding[...])
  scales = []
  for word in words:
    scale = embedded[tokens == word] / table[word]
    assert np.allclose(scale, scale.flat[0])
    scales.append(scale.flat[0])
  np.testing.assert_allclose(sorted(set(np.round(scales, 5))), [0.0, 2.0])


@jax.jit
def _penalty(raw, dropped, mask):
  return awd_lstm.activation_regularization(
      awd_lstm.Activations(raw, dropped), alpha=2.0, beta=1.0, mask=mask
  )


def test_activation_regularization_is_the_two_means_and_honours_a_mask():
  rng = np.random.default_rng(0)
  raw, dropped = (
      rng.normal(size=(6, 2, 3)).astype(np.float32) for _ in range(2)
  )
  want = 2.0 * np.mean(dropped**2) + np.mean((raw[1:] - raw[:-1]) ** 2)
  np.testing.assert_allclose(
      _penalty(raw, dropped, np.ones(6, bool)), want, rtol=1e-5
  )
  # Padding after step 4 changes nothing but the steps counted.

  def padded(x):
    return np.concatenate([x[:4], rng.normal(size=(2, 2, 3))])

  truncated = 2.0 * np.mean(dropped[:4] ** 2) + np.mean(
      (raw[1:4] - raw[:3]) ** 2
  )
  np.testing.assert_allclose(
      _penalty(padded(raw), padded(dropped), np.arange(6) < 4),
      truncated,
      rtol=1e-5,
  )


_SENTENCES = [
    ' the market rose in the morning',
    ' shares of the company fell',
    ' the company said the market fell in N',
    ' <unk> rose N',
]


@nnx.jit
def _train_step(model, optimizer, window, carry):
  def loss_fn(model):
    logits, carry_out, activations = model(
        window['inputs'], carry, window['mask']
    )
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits, window['targets']
    )
    steps = window['mask'][:, None]
    loss = jnp.sum(losses * steps) / (jnp.sum(steps) * losses.shape[1])
    penalty = awd_lstm.activation_regularization(
        activations, alpha=2.0, beta=1.0, mask=window['mask']
    )
    return loss + penalty, carry_out

  (_, carry), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  optimizer.update(model, grads)
  return carry


@nnx.jit
def _window_loss(model, window, carry):
  logits, carry, _ = model(window['inputs'], carry, window['mask'])
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits, window['targets']
  )
  return jnp.sum(losses * window['mask'][:, None]), carry


def _perplexity(model, data, bptt):
  model.eval()
  carry, total = model.init_carry(data.shape[1]), 0.0
  for window in lm_pipeline.bptt_windows(
      data, bptt, train=False, pad_to_multiple_of=bptt
  ):
    loss, carry = _window_loss(model, _arrays(window), carry)
    total += float(loss)
  model.train()
  return math.exp(total / ((len(data) - 1) * data.shape[1]))


def _arrays(window):
  return {
      'inputs': jnp.asarray(window.inputs),
      'targets': jnp.asarray(window.targets),
      'mask': jnp.asarray(window.mask),
  }


def test_a_few_adam_steps_lower_the_perplexity_of_a_tiny_corpus():
  rng = np.random.default_rng(0)
  lines = [_SENTENCES[i] for i in rng.integers(0, len(_SENTENCES), 200)]
  vocabulary = ptb.build_vocabulary(lines)
  ids = {word: i for i, word in enumerate(vocabulary)}
  tokens = np.array([ids[t] for line in lines for t in ptb.tokenize_line(line)])
  data = lm_pipeline.batchify(tokens, 4)
  model = _create(
      awd_lstm.AWDLSTM,
      len(vocabulary),
      embed_size=16,
      hidden_size=32,
      num_layers=2,
      dropout=0.1,
      dropouth=0.1,
      dropouti=0.1,
      dropoute=0.05,
      wdrop=0.1,
  )
  optimizer = nnx.Optimizer(model, optax.adam(2e-2), wrt=nnx.Param)
  before = _perplexity(model, data, bptt=24)
  generator = np.random.default_rng(0)
  for _ in range(3):  # epochs
    carry = model.init_carry(4)
    for window in lm_pipeline.bptt_windows(
        data, 12, rng=generator, pad_to_multiple_of=24
    ):
      carry = _train_step(model, optimizer, _arrays(window), carry)
  after = _perplexity(model, data, bptt=24)
  assert before > 0.8 * len(vocabulary)
  assert after < 0.5 * before
