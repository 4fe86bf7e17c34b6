"""He et al.'s CIFAR ResNets (ResNet-20 to -218), with or without BatchNorm.

A 3x3 stem of 16 channels, three stages of ``n`` basic blocks with 16, 32 and
64 channels (6n + 2 layers), global average pooling and a linear classifier.

This follows the scale-free AdamW paper's code (itself Idelbayev's CIFAR
ResNet), which the paper runs with ``--no-batch-norm``:

* shortcuts that change shape are "option A": subsample by two, then zero-pad
  the new channels equally on both sides, so a shortcut has no parameters;
* convolutions have no bias, with or without BatchNorm: ``batch_norm=False``
  removes every BatchNorm and puts nothing in its place (that code keeps
  ``bias=False`` and has no option-B shortcut when BatchNorm is off);
* convolution and classifier kernels are ``kaiming_normal_`` (fan-in, gain
  sqrt(2)); the classifier's bias keeps PyTorch's default, uniform in
  +-1/sqrt(64).
"""

from flax import nnx
import jax
import jax.numpy as jnp

from experiments.models.resnet import KAIMING_NORMAL_FAN_IN, torch_linear
from experiments.models.resnet import batch_norm as _batch_norm
from experiments.models.resnet import conv as _conv


def _conv3x3(in_features, out_features, stride, rngs):
  return _conv(
      in_features,
      out_features,
      3,
      stride,
      kernel_init=KAIMING_NORMAL_FAN_IN,
      rngs=rngs,
  )


def _maybe_norm(norm, x):
  return x if norm is None else norm(x)


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions around a parameter-free (option A) shortcut."""

  def __init__(
      self,
      in_features: int,
      out_features: int,
      stride: int,
      *,
      batch_norm: bool,
      rngs: nnx.Rngs,
  ):
    self.conv1 = _conv3x3(in_features, out_features, stride, rngs)
    self.bn1 = _batch_norm(out_features, rngs=rngs) if batch_norm else None
    self.conv2 = _conv3x3(out_features, out_features, 1, rngs)
    self.bn2 = _batch_norm(out_features, rngs=rngs) if batch_norm else None
    self.stride = stride
    self.new_channels = out_features - in_features

  def shortcut(self, x):
    if self.stride == 1 and self.new_channels == 0:
      return x
    x = x[:, :: self.stride, :: self.stride, :]
    before = self.new_channels // 2
    return jnp.pad(
        x, ((0, 0), (0, 0), (0, 0), (before, self.new_channels - before))
    )

  def __call__(self, x):
    y = jax.nn.relu(_maybe_norm(self.bn1, self.conv1(x)))
    y = _maybe_norm(self.bn2, self.conv2(y))
    return jax.nn.relu(y + self.shortcut(x))


class CifarResNet(nnx.Module):
  """ResNet-(6n+2) for 32x32 images; NHWC in, logits out.

  Depth 20, 32, 44, 56, 110 and 218 are the published ones; depth 8 (one block
  per stage) is for tests and quick runs.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> model = nnx.eval_shape(lambda: CifarResNet(20, num_classes=10,
    ...                                            rngs=nnx.Rngs(0)))
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    269722

  References:
    He, Zhang, Ren and Sun, `Deep residual learning for image recognition
    <https://arxiv.org/abs/1512.03385>`_, CVPR 2016, section 4.2.

    Zhuang, Liu, Cutkosky and Orabona, `Understanding AdamW through proximal
    methods and scale-freeness <https://arxiv.org/abs/2202.00089>`_, TMLR 2022.
  """

  def __init__(
      self,
      depth: int = 20,
      *,
      num_classes: int = 10,
      batch_norm: bool = True,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      depth: 6n + 2 for n >= 1 blocks per stage.
      num_classes: outputs of the classifier.
      batch_norm: whether to put a BatchNorm after every convolution; without,
        the model has no BatchNorm variables at all.
      rngs: random streams for the initialisation.
    """
    if depth < 8 or (depth - 2) % 6:
      raise ValueError(f'`depth` must be 6n + 2 with n >= 1, got {depth}.')
    blocks_per_stage = (depth - 2) // 6
    self.conv1 = _conv3x3(3, 16, 1, rngs)
    self.bn1 = _batch_norm(16, rngs=rngs) if batch_norm else None
    stages, in_features = [], 16
    for index, out_features in enumerate((16, 32, 64)):
      blocks = []
      for block in range(blocks_per_stage):
        stride = 2 if index > 0 and block == 0 else 1
        blocks.append(
            BasicBlock(
                in_features,
                out_features,
                stride,
                batch_norm=batch_norm,
                rngs=rngs,
            )
        )
        in_features = out_features
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.linear = torch_linear(
        64, num_classes, rngs=rngs, kernel_init=KAIMING_NORMAL_FAN_IN
    )

  def __call__(self, x):
    x = jax.nn.relu(_maybe_norm(self.bn1, self.conv1(x)))
    for stage in self.stages:
      for block in stage:
        x = block(x)
    return self.linear(x.mean(axis=(1, 2)))
