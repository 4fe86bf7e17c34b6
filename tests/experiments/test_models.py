"""The experiments' models: published parameter counts, and a training step.

Counts come from ``nnx.eval_shape``, so no preset is allocated; each training
step uses the smallest network of its family.
"""

import functools
from unittest import mock

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import models
from experiments.models import (
    densenet,
    pyramidnet,
    resnet,
    resnet_cifar,
    vgg,
    wide_resnet,
)


def _count(model, kind=nnx.Param) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, kind)))


@functools.cache
def _abstract(name: str, **overrides):
  """The model ``name`` for 10 classes, with shapes but no values."""
  # Every key drawn writes its stream's counter, and under tracing that write
  # inspects the new counter at a cost that grows with the trace so far, which
  # makes tracing a deep network quadratic in its depth. Shapes do not depend
  # on the keys, so every draw here reuses the stream's key unchanged.
  with mock.patch.object(
      nnx.RngStream, '__call__', lambda stream: stream.key[...]
  ):
    return nnx.eval_shape(
        lambda: models.create_model(
            name, num_classes=10, rngs=nnx.Rngs(0), **overrides
        )
    )


# name: (exact count for 10 classes, published count, relative tolerance).
COUNTS = {
    # He et al. 2016, Table 6.
    'resnet20': (269_722, 0.27e6, 0.02),
    'resnet32': (464_154, 0.46e6, 0.02),
    'resnet44': (658_586, 0.66e6, 0.02),
    'resnet56': (853_018, 0.85e6, 0.02),
    'resnet110': (1_727_962, 1.7e6, 0.02),
    # The table in the scale-free AdamW code's resnet.py.
    'resnet218': (3_477_850, 3.5e6, 0.02),
    # Huang et al. 2017, Table 2 (DenseNet-BC, L = 100, k = 12), given to one
    # digit: 769,162 is 3.9% below it.
    'densenet_bc100': (769_162, 0.8e6, 0.04),
    # Zagoruyko and Komodakis 2016, Tables 4 and 5.
    'wrn16_8': (10_961_370, 11.0e6, 0.02),
    'wrn28_10': (36_479_194, 36.5e6, 0.02),
    'wrn40_8': (35_748_314, 35.7e6, 0.02),
    # Han et al. 2017, Table 4. The authors' own code (which the ACME code
    # copies) builds 1,772,706 parameters for PyramidNet-110 (alpha 48), 4.3%
    # above the paper's rounded 1.7 M; this is that network.
    'pyramidnet110_48': (1_772_706, 1.7e6, 0.05),
    'pyramidnet272_200_bottleneck': (26_210_842, 26.0e6, 0.02),
}


@pytest.mark.parametrize('name', sorted(COUNTS))
def test_parameter_count_is_the_published_one(name):
  exact, published, tolerance = COUNTS[name]
  count = _count(_abstract(name))
  assert abs(count - published) / published < tolerance
  assert count == exact


def _torchvision_resnet_on_cifar(imagenet_count):
  # A 3x3 stem instead of the 7x7 one, and 10 classes instead of 1000.
  return imagenet_count - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 - 513 * 990


# torchvision's VGG classifier: 7x7x512 features, two hidden layers of 4096.
_TORCHVISION_VGG_CLASSIFIER = 25088 * 4096 + 4096 + 4097 * 4096 + 4097 * 1000


def _torchvision_vgg_on_cifar(imagenet_count):
  # 512 features, two hidden layers of 512, and 10 classes.
  return imagenet_count - _TORCHVISION_VGG_CLASSIFIER + 2 * 513 * 512 + 513 * 10


# torchvision's published counts for its ImageNet models, and what they become
# with these CIFAR stems and classifiers.
CIFAR_VARIANTS_OF_TORCHVISION = {
    'resnet18': (11_689_512, _torchvision_resnet_on_cifar),
    'resnet34': (21_797_672, _torchvision_resnet_on_cifar),
    # Its 7x7 stem also has a BatchNorm, and 1024 features reach the head.
    'densenet121': (
        7_978_856,
        lambda count: (
            count - 7 * 7 * 3 * 64 - 2 * 64 + 3 * 3 * 3 * 64 - 1025 * 990
        ),
    ),
    'vgg11': (132_863_336, _torchvision_vgg_on_cifar),
    'vgg16': (138_357_544, _torchvision_vgg_on_cifar),
    'vgg16_bn': (138_365_992, _torchvision_vgg_on_cifar),
}


@pytest.mark.parametrize('name', sorted(CIFAR_VARIANTS_OF_TORCHVISION))
def test_adabelief_models_are_torchvision_ones_with_a_cifar_stem_and_head(name):
  imagenet_count, on_cifar = CIFAR_VARIANTS_OF_TORCHVISION[name]
  assert _count(_abstract(name)) == on_cifar(imagenet_count)


def test_vgg16_with_a_single_linear_head_is_the_usual_14_7_million():
  # bearpaw's and kuangliu's CIFAR VGG-16: BatchNorm, Linear(512, classes).
  count = _count(_abstract('vgg16_bn', classifier_widths=()))
  assert count == 138_365_992 - _TORCHVISION_VGG_CLASSIFIER + 513 * 10
  assert abs(count - 14.7e6) / 14.7e6 < 0.02


def test_the_acme_codes_wrn_16_8_is_wrn_22_8():
  # That code builds one more unit per stage than (depth - 4) / 6; its
  # WideResNet(16, 8) has 17,158,106 parameters for 10 classes.
  assert _count(_abstract('wrn16_8', depth=22)) == 17_158_106


@pytest.mark.parametrize('name', ['resnet20', 'densenet_bc100'])
def test_without_batch_norm_there_is_no_batch_norm_at_all(name):
  with_norm = _abstract(name)
  without = _abstract(name, batch_norm=False)
  assert _count(without, nnx.BatchStat) == 0
  assert not any(
      isinstance(module, nnx.BatchNorm)
      for _, module in nnx.iter_modules(without)
  )
  # Each BatchNorm has as many parameters (scale, offset) as statistics (mean,
  # variance), and no convolution gains a bias in its place.
  assert _count(without) == _count(with_norm) - _count(with_norm, nnx.BatchStat)


# The smallest network of every family: (builder, input height and width).
SMALLEST = {
    'cifar_resnet': (functools.partial(resnet_cifar.CifarResNet, 8), 16),
    'cifar_resnet_without_bn': (
        functools.partial(resnet_cifar.CifarResNet, 8, batch_norm=False),
        16,
    ),
    'resnet': (functools.partial(resnet.ResNet, 10, width=8), 16),
    'densenet': (functools.partial(densenet.DenseNet, 10), 16),
    # Five 2x2 pools need 32 pixels.
    'vgg': (functools.partial(vgg.VGG, 11, batch_norm=True), 32),
    'wide_resnet': (
        functools.partial(wide_resnet.WideResNet, 10, 2, dropout_rate=0.3),
        16,
    ),
    # Odd sizes: the stride-2 shortcuts' pools must round up like the convs.
    'pyramidnet': (functools.partial(pyramidnet.PyramidNet, 8, 6), 15),
    'pyramidnet_bottleneck': (
        functools.partial(pyramidnet.PyramidNet, 11, 6, bottleneck=True),
        15,
    ),
}
WITH_DROPOUT = ('vgg', 'wide_resnet')


# These programs run once, on tiny inputs: XLA:CPU's expensive optimisations
# would cost more time to compile than they save.
_compile_quickly = functools.partial(
    jax.jit,
    static_argnums=0,
    compiler_options={
        'xla_backend_optimization_level': 1,
        'xla_llvm_disable_expensive_passes': True,
    },
)


@_compile_quickly
def _initial_state(make_model):
  return nnx.state(make_model())


@_compile_quickly
def _gradients(graphdef, state, images, labels):
  model = nnx.merge(graphdef, state)

  def loss_fn(model):
    logits = model(images)
    return (
        optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(),
        logits,
    )

  grads, logits = nnx.grad(loss_fn, has_aux=True)(model)
  return grads, logits, nnx.state(model)


@_compile_quickly
def _forward(graphdef, state, images):
  model = nnx.merge(graphdef, state)
  return model(images), nnx.state(model)


def _numpy(tree):
  return jax.tree.map(np.asarray, tree)


@functools.cache
def _training_run(family):
  """One gradient step in train mode, then forward passes; what they change."""
  builder, size = SMALLEST[family]

  def make_model():
    # RBG keys: threefry's sampler is slow to compile on CPU.
    return builder(num_classes=5, rngs=nnx.Rngs(jax.random.key(0, impl='rbg')))

  model = nnx.merge(
      nnx.graphdef(nnx.eval_shape(make_model)), _initial_state(make_model)
  )
  images = jax.random.normal(jax.random.key(1), (2, size, size, 3))
  labels = jnp.array([0, 3])

  def forward():
    logits, state = _forward(*nnx.split(model), images)
    nnx.update(model, state)
    return np.asarray(logits)

  run = {'initial_stats': _numpy(nnx.state(model, nnx.BatchStat))}
  grads, logits, state = _gradients(*nnx.split(model), images, labels)
  nnx.update(model, state)
  run.update(
      logits=np.asarray(logits),
      grads=grads,
      params=nnx.state(model, nnx.Param),
      trained_stats=_numpy(nnx.state(model, nnx.BatchStat)),
  )
  if family in WITH_DROPOUT:
    # The WRN's classifier starts at zero, which would hide what precedes it.
    model.linear.kernel[...] = jax.random.normal(
        jax.random.key(2), model.linear.kernel.shape
    )
    run['train_outputs'] = [forward() for _ in range(2)]
  model.eval()
  run['stats_before_eval'] = _numpy(nnx.state(model, nnx.BatchStat))
  run['eval_outputs'] = [forward() for _ in range(2)]
  run['stats_after_eval'] = _numpy(nnx.state(model, nnx.BatchStat))
  return run


def _trees_equal(a, b):
  return jax.tree.all(jax.tree.map(np.array_equal, a, b))


@pytest.mark.parametrize('family', sorted(SMALLEST))
def test_a_training_step_gives_logits_and_finite_gradients_for_every_parameter(
    family,
):
  run = _training_run(family)
  assert run['logits'].shape == (2, 5)
  assert jax.tree.structure(run['grads']) == jax.tree.structure(run['params'])
  for path, grad in nnx.to_flat_state(run['grads']):
    assert np.all(np.isfinite(grad[...])), path
  assert any(np.any(grad != 0) for grad in jax.tree.leaves(run['grads']))


@pytest.mark.parametrize('family', sorted(SMALLEST))
def test_batch_statistics_move_in_train_mode_only(family):
  run = _training_run(family)
  has_batch_norm = bool(jax.tree.leaves(run['initial_stats']))
  assert has_batch_norm == (not family.endswith('without_bn'))
  if has_batch_norm:
    assert not _trees_equal(run['initial_stats'], run['trained_stats'])
    assert _trees_equal(run['stats_before_eval'], run['stats_after_eval'])


@pytest.mark.parametrize('family', sorted(SMALLEST))
def test_dropout_is_active_in_train_mode_only(family):
  run = _training_run(family)
  np.testing.assert_array_equal(*run['eval_outputs'])
  if family in WITH_DROPOUT:
    assert not np.allclose(*run['train_outputs'])


def test_pyramidnet_shortcut_pool_averages_only_the_covered_pixels():
  # As PyTorch's AvgPool2d(2, ceil_mode=True), which the reference code uses.
  image = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
  pooled = pyramidnet.average_pool_2x2(image)
  np.testing.assert_allclose(pooled[0, :, :, 0], [[3.0, 4.5], [7.5, 9.0]])


@pytest.mark.parametrize(
    'name, overrides, message',
    [
        ('resnet20', {'depth': 21}, '6n \\+ 2'),
        ('resnet34', {'depth': 50}, 'one of'),
        ('densenet_bc100', {'depth': 99}, '6n \\+ 4'),
        ('densenet121', {'depth': 120}, 'make a depth of 121'),
        ('vgg16', {'depth': 15}, 'one of'),
        ('wrn16_8', {'depth': 17}, '6n \\+ 4'),
        ('pyramidnet272_200_bottleneck', {'depth': 111}, '9n \\+ 2'),
    ],
)
def test_a_depth_that_the_family_cannot_build_is_refused(
    name, overrides, message
):
  with pytest.raises(ValueError, match=message):
    models.create_model(name, num_classes=10, rngs=nnx.Rngs(0), **overrides)


def test_an_unknown_model_lists_the_known_ones():
  with pytest.raises(ValueError, match='Unknown model.*pyramidnet110_48'):
    models.create_model('resnet19', num_classes=10, rngs=nnx.Rngs(0))
