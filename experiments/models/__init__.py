"""Flax NNX models used by the experiments, by name.

Every model takes NHWC images and returns logits; BatchNorm and Dropout follow
``model.train()`` / ``model.eval()``. The CIFAR presets, with the paper that
trains each and its parameters for 10 classes:

* ``resnet8`` (tests) to ``resnet218``: He et al.'s CIFAR ResNets, as the
  scale-free AdamW paper's code builds them (``batch_norm=False`` there);
  ResNet-20 has 269,722 parameters.
* ``densenet_bc100``: DenseNet-BC-100 (k = 12), scale-free AdamW (769,162).
* ``resnet18``, ``resnet34``, ``densenet121``, ``vgg11``, ``vgg16``: the
  AdaBelief / AdaDiff CIFAR code's (ResNet-34: 21,282,122); ``vgg16_bn`` is
  ``vgg16`` with BatchNorm.
* ``wrn16_8``, ``wrn28_10``, ``wrn40_8``: Wide ResNets for ACME.
* ``pyramidnet110_48``, ``pyramidnet272_200_bottleneck``: PyramidNets for ACME.
* ``mlp``: one hidden layer of 256 ReLU units, the small model of the AdaLoss
  b0 table on digits (789,258).
* ``small_cnn``: two 3x3 convolutions of 8 and 16 channels, each with 2x2 max
  pooling, and a linear head; written so that ``jax.vmap`` over many copies
  stays fast on a CPU (``robustness`` trains one per learning rate and seed,
  on digits at 8x8: 1,898 parameters).

A family's arguments may be overridden by name, so command lines map onto
them directly: ``create_model('wrn16_8', depth=28, width=10, ...)``,
``create_model('pyramidnet110_48', depth=200, alpha=240, bottleneck=True,
...)``, ``create_model('resnet20', batch_norm=False, ...)``.
"""

from collections.abc import Callable
import functools

from flax import nnx

from experiments.models import (
    densenet,
    mlp,
    pyramidnet,
    resnet,
    resnet_cifar,
    resnet_imagenet,
    small_cnn,
    vgg,
    vit,
    wide_resnet,
)

_partial = functools.partial

MODELS: dict[str, Callable[..., nnx.Module]] = {
    'resnet8': _partial(resnet_cifar.CifarResNet, depth=8),
    'resnet20': _partial(resnet_cifar.CifarResNet, depth=20),
    'resnet32': _partial(resnet_cifar.CifarResNet, depth=32),
    'resnet44': _partial(resnet_cifar.CifarResNet, depth=44),
    'resnet56': _partial(resnet_cifar.CifarResNet, depth=56),
    'resnet110': _partial(resnet_cifar.CifarResNet, depth=110),
    'resnet218': _partial(resnet_cifar.CifarResNet, depth=218),
    'resnet18': _partial(resnet.ResNet, depth=18),
    'resnet34': _partial(resnet.ResNet, depth=34),
    'densenet_bc100': _partial(densenet.DenseNet, depth=100, growth_rate=12),
    'densenet121': _partial(
        densenet.DenseNet,
        depth=121,
        growth_rate=32,
        stage_sizes=(6, 12, 24, 16),
        kernel_init=resnet.TORCH_DEFAULT_KERNEL_INIT,
    ),
    'vgg11': _partial(vgg.VGG, depth=11),
    'vgg16': _partial(vgg.VGG, depth=16),
    'vgg16_bn': _partial(vgg.VGG, depth=16, batch_norm=True),
    'wrn16_8': _partial(wide_resnet.WideResNet, depth=16, width=8),
    'wrn28_10': _partial(wide_resnet.WideResNet, depth=28, width=10),
    'wrn40_8': _partial(wide_resnet.WideResNet, depth=40, width=8),
    'pyramidnet110_48': _partial(pyramidnet.PyramidNet, depth=110, alpha=48),
    'pyramidnet272_200_bottleneck': _partial(
        pyramidnet.PyramidNet, depth=272, alpha=200, bottleneck=True
    ),
    'resnet50': resnet_imagenet.resnet50,
    'vit_s16': vit.vit_s16,
    'vit_tiny': vit.vit_tiny_test,
    'mlp': _partial(mlp.MLP, hidden_sizes=(256,)),
    'small_cnn': _partial(small_cnn.SmallCNN, widths=(8, 16)),
}


def create_model(
    name: str, *, num_classes: int, rngs: nnx.Rngs, **overrides
) -> nnx.Module:
  """Builds the model ``name`` for ``num_classes`` classes.

  Args:
    name: a key of ``MODELS``.
    num_classes: outputs of the classifier.
    rngs: random streams for the initialisation (and dropout, where any).
    **overrides: arguments of the model's family that replace the preset's,
      e.g. ``depth``, ``width``, ``alpha``, ``batch_norm``, ``dropout_rate``.

  Returns:
    The model, in training mode.

  Raises:
    ValueError: if ``name`` is not a key of ``MODELS``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> def logits(images):
    ...   model = create_model('wrn16_8', num_classes=100, depth=10, width=1,
    ...                        rngs=nnx.Rngs(0))
    ...   return model(images)
    >>> nnx.eval_shape(logits, jnp.zeros((2, 32, 32, 3))).shape
    (2, 100)
  """
  if name not in MODELS:
    raise ValueError(
        f'Unknown model {name!r}; choose one of {", ".join(sorted(MODELS))}.'
    )
  return MODELS[name](num_classes=num_classes, rngs=rngs, **overrides)
