"""PyramidNets for CIFAR: residual units widening by alpha / N each.

A 3x3 stem of 16 channels and a BatchNorm, three stages of ``n`` units (basic:
``n = (depth - 2) / 6``; bottleneck: ``n = (depth - 2) / 9``), then BN-ReLU,
global average pooling (the original's 8x8 pool, on 32x32 images) and a linear
classifier. Unit ``i`` of the ``N = 3n`` has ``round(16 + i * alpha / N)``
channels (four times that at a bottleneck's output). Units have no ReLU on
their input or output:

* basic: BN-3x3 conv-BN-ReLU-3x3 conv-BN;
* bottleneck: BN-1x1 conv-BN-ReLU-3x3 conv-BN-ReLU-1x1 conv (x4)-BN;

and their shortcut is the identity, after a 2x2 average pool (rounding the size
up) where the unit has stride 2, with zeros appended for the new channels.

This follows the ACME code's PyramidNet (Han et al.'s own): the widths are
accumulated in floating point and rounded half to even, as Python's ``round``
does there; convolution kernels are normal with variance 2 / (kernel height *
width * out_channels) (Kaiming, fan-out); the classifier keeps PyTorch's
default initialisation.
"""

from flax import nnx
import jax
import jax.numpy as jnp

from experiments.models.resnet import KAIMING_NORMAL_FAN_OUT, conv, torch_linear
from experiments.models.resnet import batch_norm as _batch_norm


def _conv(in_features, out_features, kernel_size, stride, rngs):
  return conv(
      in_features,
      out_features,
      kernel_size,
      stride,
      kernel_init=KAIMING_NORMAL_FAN_OUT,
      rngs=rngs,
  )


def average_pool_2x2(x: jax.Array) -> jax.Array:
  """The shortcut's 2x2 average pool of NHWC `x`, stride 2, size rounded up.

  As PyTorch's ``AvgPool2d(2, ceil_mode=True)`` of the reference code: a
  window that overhangs an odd edge averages only the pixels it covers.
  """
  padding = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))
  return nnx.avg_pool(
      x, (2, 2), strides=(2, 2), padding=padding, count_include_pad=False
  )


def _add_shortcut(residual, x, stride):
  if stride != 1:
    x = average_pool_2x2(x)
  new_channels = residual.shape[-1] - x.shape[-1]
  return residual + jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, new_channels)))


class BasicUnit(nnx.Module):
  """BN-3x3 conv-BN-ReLU-3x3 conv-BN on a zero-padded identity shortcut."""

  expansion = 1

  def __init__(
      self, in_features: int, features: int, stride: int, *, rngs: nnx.Rngs
  ):
    self.bn1 = _batch_norm(in_features, rngs=rngs)
    self.conv1 = _conv(in_features, features, 3, stride, rngs)
    self.bn2 = _batch_norm(features, rngs=rngs)
    self.conv2 = _conv(features, features, 3, 1, rngs)
    self.bn3 = _batch_norm(features, rngs=rngs)
    self.stride = stride

  def __call__(self, x):
    y = self.conv1(self.bn1(x))
    y = self.bn3(self.conv2(jax.nn.relu(self.bn2(y))))
    return _add_shortcut(y, x, self.stride)


class BottleneckUnit(nnx.Module):
  """BN-1x1-BN-ReLU-3x3-BN-ReLU-1x1 (x4)-BN on a zero-padded identity."""

  expansion = 4

  def __init__(
      self, in_features: int, features: int, stride: int, *, rngs: nnx.Rngs
  ):
    self.bn1 = _batch_norm(in_features, rngs=rngs)
    self.conv1 = _conv(in_features, features, 1, 1, rngs)
    self.bn2 = _batch_norm(features, rngs=rngs)
    self.conv2 = _conv(features, features, 3, stride, rngs)
    self.bn3 = _batch_norm(features, rngs=rngs)
    self.conv3 = _conv(features, features * self.expansion, 1, 1, rngs)
    self.bn4 = _batch_norm(features * self.expansion, rngs=rngs)
    self.stride = stride

  def __call__(self, x):
    y = self.conv1(self.bn1(x))
    y = self.conv2(jax.nn.relu(self.bn2(y)))
    y = self.bn4(self.conv3(jax.nn.relu(self.bn3(y))))
    return _add_shortcut(y, x, self.stride)


class PyramidNet(nnx.Module):
  """PyramidNet-depth with widening factor alpha for 32x32 images.

  NHWC in, logits out. Depth counts the stem, the convolutions of the units and
  the classifier: 6n + 2 with basic units, 9n + 2 with bottleneck units.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> def logits(images):
    ...   model = PyramidNet(11, 6, bottleneck=True, num_classes=10,
    ...                      rngs=nnx.Rngs(0))
    ...   return model(images)
    >>> nnx.eval_shape(logits, jnp.zeros((2, 15, 15, 3))).shape
    (2, 10)

  References:
    Han, Kim and Kim, `Deep pyramidal residual networks
    <https://arxiv.org/abs/1610.02915>`_, CVPR 2017.
  """

  def __init__(
      self,
      depth: int = 110,
      alpha: float = 48,
      *,
      bottleneck: bool = False,
      num_classes: int = 10,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      depth: 6n + 2 (basic) or 9n + 2 (bottleneck) for n >= 1 units per stage.
      alpha: how many channels the units add to the stem's 16, in all.
      bottleneck: whether the units are bottlenecks rather than basic.
      num_classes: outputs of the classifier.
      rngs: random streams for the initialisation.
    """
    unit = BottleneckUnit if bottleneck else BasicUnit
    # One more unit in each of the three stages adds this many layers.
    depth_step = 9 if bottleneck else 6
    if depth < 2 + depth_step or (depth - 2) % depth_step:
      raise ValueError(
          f'`depth` must be {depth_step}n + 2 with '
          f'n >= 1 for {unit.__name__}s, got {depth}.'
      )
    units_per_stage = (depth - 2) // depth_step
    growth = alpha / (3 * units_per_stage)
    self.conv1 = _conv(3, 16, 3, 1, rngs)
    self.bn1 = _batch_norm(16, rngs=rngs)
    stages, in_features, width = [], 16, 16.0
    for index in range(3):
      units = []
      for position in range(units_per_stage):
        # Summed unit by unit, as the reference does, so that the rounding of
        # every width matches it.
        width += growth
        stride = 2 if index > 0 and position == 0 else 1
        units.append(unit(in_features, round(width), stride, rngs=rngs))
        in_features = round(width) * unit.expansion
      stages.append(nnx.List(units))
    self.stages = nnx.List(stages)
    self.bn = _batch_norm(in_features, rngs=rngs)
    self.linear = torch_linear(in_features, num_classes, rngs=rngs)

  def __call__(self, x):
    x = self.bn1(self.conv1(x))
    for stage in self.stages:
      for unit in stage:
        x = unit(x)
    x = jax.nn.relu(self.bn(x))
    return self.linear(x.mean(axis=(1, 2)))
