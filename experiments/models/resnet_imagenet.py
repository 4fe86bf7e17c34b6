"""ImageNet ResNet (bottleneck) in Flax NNX, laid out like timm's ``resnet50``.

Module names follow timm (``conv1``, ``bn1``, ``layer1..4[i].{conv1..3,
bn1..3, downsample}``, ``fc``) so that :mod:`experiments.pretrained` maps a timm
or torchvision checkpoint onto it name by name, ``swsl_resnet50`` included.
Padding is explicit, as in PyTorch: XLA's 'SAME' pads stride-2 convolutions
asymmetrically and would shift every feature map by one pixel.
"""

import functools

from flax import nnx
import jax


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # PyTorch's momentum 0.1 is Flax's 0.9; the same eps.
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


def _conv(in_features, out_features, kernel, stride, rngs):
  pad = kernel // 2
  return nnx.Conv(
      in_features,
      out_features,
      (kernel, kernel),
      strides=(stride, stride),
      padding=((pad, pad), (pad, pad)),
      use_bias=False,
      kernel_init=nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
      rngs=rngs,
  )


class Downsample(nnx.Module):
  """The projection shortcut: timm's ``downsample.0`` (conv), ``.1`` (norm)."""

  def __init__(self, in_features, out_features, stride, *, rngs):
    self.conv = _conv(in_features, out_features, 1, stride, rngs)
    self.norm = _batch_norm(out_features, rngs)

  def __call__(self, x):
    return self.norm(self.conv(x))


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (with the stride, as torchvision's v1.5), 1x1 expand."""

  expansion = 4

  def __init__(
      self, in_features: int, width: int, stride: int, *, rngs: nnx.Rngs
  ):
    out_features = width * self.expansion
    self.conv1 = _conv(in_features, width, 1, 1, rngs)
    self.bn1 = _batch_norm(width, rngs)
    self.conv2 = _conv(width, width, 3, stride, rngs)
    self.bn2 = _batch_norm(width, rngs)
    self.conv3 = _conv(width, out_features, 1, 1, rngs)
    self.bn3 = _batch_norm(out_features, rngs)
    self.downsample = (
        Downsample(in_features, out_features, stride, rngs=rngs)
        if stride != 1 or in_features != out_features
        else None
    )

  def __call__(self, x):
    shortcut = x if self.downsample is None else self.downsample(x)
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    return jax.nn.relu(self.bn3(self.conv3(y)) + shortcut)


class ResNet(nnx.Module):
  """Bottleneck ResNet for 224-pixel images (NHWC in, logits out).

  References:
    He, Zhang, Ren and Sun, `Deep residual learning for image recognition
    <https://arxiv.org/abs/1512.03385>`_, CVPR 2016; Yalniz et al.,
    `Billion-scale semi-supervised learning for image classification
    <https://arxiv.org/abs/1905.00546>`_, 2019 (the ``swsl`` weights).
  """

  def __init__(
      self, stage_sizes=(3, 4, 6, 3), *, num_classes: int = 1000, rngs: nnx.Rngs
  ):
    self.conv1 = _conv(3, 64, 7, 2, rngs)
    self.bn1 = _batch_norm(64, rngs)
    in_features = 64
    stages = []
    for index, blocks in enumerate(stage_sizes):
      width = 64 * 2**index
      stage = []
      for block in range(blocks):
        stride = 2 if index > 0 and block == 0 else 1
        stage.append(Bottleneck(in_features, width, stride, rngs=rngs))
        in_features = width * Bottleneck.expansion
      stages.append(nnx.List(stage))
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.fc = nnx.Linear(in_features, num_classes, rngs=rngs)

  def __call__(self, images):
    x = jax.nn.relu(self.bn1(self.conv1(images)))
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in stage:
        x = block(x)
    return self.fc(x.mean(axis=(1, 2)))


resnet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))
