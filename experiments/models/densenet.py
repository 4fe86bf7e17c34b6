"""DenseNet-BC for CIFAR (BC-100 and 121), with or without BatchNorm.

A 3x3 stem of ``2 * growth_rate`` channels, dense stages of bottleneck layers
(BN-ReLU-1x1 conv to ``4 * growth_rate``, BN-ReLU-3x3 conv to ``growth_rate``,
output concatenated to the input), transitions between stages (BN-ReLU-1x1 conv
to ``floor(compression * channels)``, 2x2 average pool), and BN-ReLU, global
average pooling (the original's 8x8 pool, on 32x32 images) and a linear
classifier at the end.

DenseNet-BC-100 (k = 12) is the scale-free AdamW paper's, from its code (after
bearpaw's ``pytorch-classification``), which the paper runs with
``--no-batch-norm``: ``batch_norm=False`` removes every BatchNorm, keeps the
ReLUs, and adds no bias. Its convolution kernels are normal with variance
2 / (kernel height * width * out_channels) (Kaiming, fan-out); the classifier
keeps PyTorch's default. DenseNet-121 (four stages of 6, 12, 24 and 16 layers,
k = 32) is the one AdaBelief's and AdaDiff's CIFAR code trains, where every
layer keeps PyTorch's default initialisation. A layer's new channels follow
its input, as in bearpaw's code; that code (after kuangliu's) puts them first,
which is the same network up to a fixed order of the channels.
"""

from collections.abc import Callable, Sequence
import math

from flax import nnx
import jax
import jax.numpy as jnp

from experiments.models.resnet import KAIMING_NORMAL_FAN_OUT, torch_linear
from experiments.models.resnet import batch_norm as _batch_norm
from experiments.models.resnet import conv as _conv


class _NormReluConv(nnx.Module):
  """BatchNorm (unless switched off), ReLU, then a convolution without bias."""

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int,
      *,
      batch_norm: bool,
      kernel_init: Callable[..., jax.Array],
      rngs: nnx.Rngs,
  ):
    self.bn = _batch_norm(in_features, rngs=rngs) if batch_norm else None
    self.conv = _conv(
        in_features,
        out_features,
        kernel_size,
        kernel_init=kernel_init,
        rngs=rngs,
    )

  def __call__(self, x):
    return self.conv(jax.nn.relu(x if self.bn is None else self.bn(x)))


class BottleneckLayer(nnx.Module):
  """Adds ``growth_rate`` channels to its input through a 1x1 and a 3x3 conv."""

  def __init__(
      self,
      in_features: int,
      growth_rate: int,
      *,
      batch_norm: bool,
      kernel_init: Callable[..., jax.Array],
      rngs: nnx.Rngs,
  ):
    self.reduce = _NormReluConv(
        in_features,
        4 * growth_rate,
        1,
        batch_norm=batch_norm,
        kernel_init=kernel_init,
        rngs=rngs,
    )
    self.grow = _NormReluConv(
        4 * growth_rate,
        growth_rate,
        3,
        batch_norm=batch_norm,
        kernel_init=kernel_init,
        rngs=rngs,
    )

  def __call__(self, x):
    return jnp.concatenate([x, self.grow(self.reduce(x))], axis=-1)


class Transition(nnx.Module):
  """Compresses the channels with a 1x1 conv and halves the resolution."""

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      batch_norm: bool,
      kernel_init: Callable[..., jax.Array],
      rngs: nnx.Rngs,
  ):
    self.compress = _NormReluConv(
        in_features,
        out_features,
        1,
        batch_norm=batch_norm,
        kernel_init=kernel_init,
        rngs=rngs,
    )

  def __call__(self, x):
    return nnx.avg_pool(self.compress(x), (2, 2), strides=(2, 2))


class DenseNet(nnx.Module):
  """DenseNet-BC for 32x32 images; NHWC in, logits out.

  With ``stage_sizes=None`` there are three stages of ``(depth - 4) // 6``
  bottleneck layers (DenseNet-BC-100: 16 each); depth counts the stem, two
  convolutions per layer, one per transition and the classifier, and must equal
  that count when ``stage_sizes`` is given (DenseNet-121:
  ``stage_sizes=(6, 12, 24, 16)``).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> def logits(images):
    ...   return DenseNet(10, num_classes=10, rngs=nnx.Rngs(0))(images)
    >>> nnx.eval_shape(logits, jnp.zeros((2, 32, 32, 3))).shape
    (2, 10)

  References:
    Huang, Liu, van der Maaten and Weinberger, `Densely connected convolutional
    networks <https://arxiv.org/abs/1608.06993>`_, CVPR 2017.
  """

  def __init__(
      self,
      depth: int = 100,
      *,
      num_classes: int = 10,
      growth_rate: int = 12,
      compression: float = 0.5,
      stage_sizes: Sequence[int] | None = None,
      batch_norm: bool = True,
      kernel_init: Callable[..., jax.Array] = KAIMING_NORMAL_FAN_OUT,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      depth: layers with weights; 6n + 4 without ``stage_sizes``.
      num_classes: outputs of the classifier.
      growth_rate: channels each bottleneck layer adds (k).
      compression: fraction of the channels a transition keeps.
      stage_sizes: bottleneck layers per stage, if not three equal stages.
      batch_norm: whether to normalise before every convolution and the
        classifier; without, the model has no BatchNorm variables at all.
      kernel_init: initialiser of every convolution kernel.
      rngs: random streams for the initialisation.
    """
    if stage_sizes is None:
      if depth < 10 or (depth - 4) % 6:
        raise ValueError(f'`depth` must be 6n + 4 with n >= 1, got {depth}.')
      stage_sizes = (depth - 4) // 6, (depth - 4) // 6, (depth - 4) // 6
    elif depth != 2 * sum(stage_sizes) + len(stage_sizes) + 1:
      raise ValueError(
          f'`stage_sizes` {tuple(stage_sizes)} make a depth of '
          f'{2 * sum(stage_sizes) + len(stage_sizes) + 1}, '
          f'not {depth}.'
      )
    features = 2 * growth_rate
    self.conv1 = _conv(3, features, 3, kernel_init=kernel_init, rngs=rngs)
    stages, transitions = [], []
    for index, num_layers in enumerate(stage_sizes):
      if index > 0:
        compressed = math.floor(compression * features)
        transitions.append(
            Transition(
                features,
                compressed,
                batch_norm=batch_norm,
                kernel_init=kernel_init,
                rngs=rngs,
            )
        )
        features = compressed
      layers = []
      for _ in range(num_layers):
        layers.append(
            BottleneckLayer(
                features,
                growth_rate,
                batch_norm=batch_norm,
                kernel_init=kernel_init,
                rngs=rngs,
            )
        )
        features += growth_rate
      stages.append(nnx.List(layers))
    self.stages = nnx.List(stages)
    self.transitions = nnx.List(transitions)
    self.bn = _batch_norm(features, rngs=rngs) if batch_norm else None
    self.linear = torch_linear(features, num_classes, rngs=rngs)

  def __call__(self, x):
    x = self.conv1(x)
    for index, stage in enumerate(self.stages):
      if index > 0:
        x = self.transitions[index - 1](x)
      for layer in stage:
        x = layer(x)
    x = jax.nn.relu(x if self.bn is None else self.bn(x))
    return self.linear(x.mean(axis=(1, 2)))
