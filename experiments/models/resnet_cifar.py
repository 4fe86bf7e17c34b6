"""CIFAR ResNets (ResNet-20 to ResNet-218) in Flax NNX, with or without BatchNorm.

He et al.'s CIFAR networks: a 3x3 stem of 16 channels, three stages of ``n``
basic blocks with 16, 32 and 64 channels (6n + 2 layers), global average pooling
and a linear head. As in the scale-free AdamW paper's code, the shortcuts that
change shape are "option A" (subsample, then zero-pad the new channels: no
parameters), convolutions have no bias, weights are Kaiming-normal (fan-in), and
``batch_norm=False`` removes every BatchNorm, leaving nothing in its place.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

_kaiming_normal = nnx.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def _conv(in_features, out_features, stride, rngs):
  return nnx.Conv(in_features, out_features, (3, 3), strides=(stride, stride),
                  padding=((1, 1), (1, 1)), use_bias=False,
                  kernel_init=_kaiming_normal, rngs=rngs)


def _norm(features, batch_norm, rngs):
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs) if (
      batch_norm) else None


def _apply(norm, x):
  return x if norm is None else norm(x)


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions and an option-A shortcut."""

  def __init__(self, in_features: int, out_features: int, stride: int, *,
               batch_norm: bool, rngs: nnx.Rngs):
    self.conv1 = _conv(in_features, out_features, stride, rngs)
    self.bn1 = _norm(out_features, batch_norm, rngs)
    self.conv2 = _conv(out_features, out_features, 1, rngs)
    self.bn2 = _norm(out_features, batch_norm, rngs)
    self.stride = stride
    self.pad_channels = out_features - in_features

  def shortcut(self, x):
    if self.stride == 1 and self.pad_channels == 0:
      return x
    x = x[:, ::self.stride, ::self.stride, :]
    half = self.pad_channels // 2
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (half, self.pad_channels - half)))

  def __call__(self, x):
    y = jax.nn.relu(_apply(self.bn1, self.conv1(x)))
    y = _apply(self.bn2, self.conv2(y))
    return jax.nn.relu(y + self.shortcut(x))


class CifarResNet(nnx.Module):
  """ResNet-(6n+2) for 32x32 images; NHWC in, logits out.

  References:
    He, Zhang, Ren and Sun, `Deep residual learning for image recognition
    <https://arxiv.org/abs/1512.03385>`_, CVPR 2016, section 4.2.
  """

  def __init__(self, depth: int = 20, *, num_classes: int = 10,
               batch_norm: bool = True, rngs: nnx.Rngs):
    if depth < 8 or (depth - 2) % 6:
      raise ValueError(f'`depth` must be 6n + 2 with n >= 1, got {depth}.')
    blocks_per_stage = (depth - 2) // 6
    self.conv1 = _conv(3, 16, 1, rngs)
    self.bn1 = _norm(16, batch_norm, rngs)
    stages, in_features = [], 16
    for index, width in enumerate((16, 32, 64)):
      stage = []
      for block in range(blocks_per_stage):
        stride = 2 if index > 0 and block == 0 else 1
        stage.append(BasicBlock(in_features, width, stride,
                                batch_norm=batch_norm, rngs=rngs))
        in_features = width
      stages.append(nnx.List(stage))
    self.layer1, self.layer2, self.layer3 = stages
    self.linear = nnx.Linear(64, num_classes, kernel_init=_kaiming_normal,
                             rngs=rngs)

  def __call__(self, images):
    x = jax.nn.relu(_apply(self.bn1, self.conv1(images)))
    for stage in (self.layer1, self.layer2, self.layer3):
      for block in stage:
        x = block(x)
    return self.linear(x.mean(axis=(1, 2)))


resnet8 = functools.partial(CifarResNet, depth=8)  # for tests and quick runs
resnet20 = functools.partial(CifarResNet, depth=20)
resnet32 = functools.partial(CifarResNet, depth=32)
resnet44 = functools.partial(CifarResNet, depth=44)
resnet56 = functools.partial(CifarResNet, depth=56)
resnet110 = functools.partial(CifarResNet, depth=110)
resnet218 = functools.partial(CifarResNet, depth=218)
