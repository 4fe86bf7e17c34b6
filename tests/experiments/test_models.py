"""The experiments' models: published parameter counts and a training step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import models


def _count(model, kind=nnx.Param):
  return sum(v.size for _, v in nnx.to_flat_state(nnx.state(model, kind)))


# name: (exact count for 10 classes, published figure, its source).
PUBLISHED = {
    'resnet20': (269_722, 0.27e6),  # He et al. 2016, Table 6
    'resnet32': (464_154, 0.46e6),
    'resnet44': (658_586, 0.66e6),
    'resnet56': (853_018, 0.85e6),
    'resnet110': (1_727_962, 1.7e6),
    'resnet218': (3_477_850, 3.5e6),  # the scale-free code's table
}


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_cifar_resnet_parameter_count_is_the_published_one(name):
  exact, published = PUBLISHED[name]
  model = nnx.eval_shape(
      lambda: models.create_model(name, num_classes=10, rngs=nnx.Rngs(0)))
  count = _count(model)
  assert count == exact
  assert abs(count - published) / published < 0.02


def test_without_batch_norm_there_is_no_batch_norm_at_all():
  model = models.create_model('resnet20', num_classes=10, batch_norm=False,
                              rngs=nnx.Rngs(0))
  assert _count(model, nnx.BatchStat) == 0
  # Only the norms' scales and offsets go: the stem's 16 channels and, for
  # each stage width, two norms in each of its three blocks.
  assert _count(model) == 269_722 - 2 * (16 + 6 * (16 + 32 + 64))


@pytest.mark.parametrize('batch_norm', [True, False])
def test_a_training_step_has_finite_gradients_and_moves_statistics_in_train_mode(
    batch_norm):
  model = models.create_model('resnet8', num_classes=10, batch_norm=batch_norm,
                              rngs=nnx.Rngs(0))
  images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  labels = jnp.arange(4)

  def loss_fn(model):
    logits = model(images)
    assert logits.shape == (4, 10)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

  stats_before = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
  grads = nnx.grad(loss_fn)(model)
  for path, g in nnx.to_flat_state(grads):
    assert np.all(np.isfinite(g[...])), path
  moved = nnx.state(model, nnx.BatchStat)
  if batch_norm:
    assert not jax.tree.all(jax.tree.map(jnp.allclose, stats_before, moved))
    model.eval()
    frozen = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
    model(images)
    assert jax.tree.all(jax.tree.map(
        jnp.array_equal, frozen, nnx.state(model, nnx.BatchStat)))


def test_depth_must_be_six_n_plus_two():
  with pytest.raises(ValueError, match='6n \\+ 2'):
    models.create_model('resnet20', num_classes=10, depth=21, rngs=nnx.Rngs(0))


def test_an_unknown_model_lists_the_known_ones():
  with pytest.raises(ValueError, match='resnet20'):
    models.create_model('resnet19', num_classes=10, rngs=nnx.Rngs(0))
