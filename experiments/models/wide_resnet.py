"""Wide ResNets (WRN-depth-width) for CIFAR, with dropout between convolutions.

A 3x3 stem of 16 channels, three stages of ``(depth - 4) / 6`` pre-activation
units with ``16 * width``, ``32 * width`` and ``64 * width`` channels (BN-ReLU-
3x3 conv-BN-ReLU-dropout-3x3 conv, added to the input), then BN-ReLU, global
average pooling (the original's 8x8 pool, on 32x32 images) and a linear
classifier. A stage's first unit has the stride;
where it changes the channels its shortcut is a 1x1 convolution of the
normalised and activated input, as in Zagoruyko and Komodakis' code.

Initialisation follows the ACME code's WRN: convolution kernels
``kaiming_normal_`` (fan-in), the classifier's kernel and bias zero.

That code (after davda54's SAM example) builds one more unit per stage than
``(depth - 4) / 6``, with a 1x1 shortcut even where the channels do not change:
its ``--depth 16 --width-alpha 8`` is this module's ``WideResNet(22, width=8)``,
the same network for every width of 2 or more (17.2 M parameters, not
WRN-16-8's published 11.0 M).
"""

from flax import nnx
import jax

from experiments.models.resnet import KAIMING_NORMAL_FAN_IN
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


class WideBlock(nnx.Module):
  """A pre-activation unit with dropout between its two 3x3 convolutions."""

  def __init__(
      self,
      in_features: int,
      out_features: int,
      stride: int,
      *,
      dropout_rate: float,
      rngs: nnx.Rngs,
  ):
    self.bn1 = _batch_norm(in_features, rngs=rngs)
    self.conv1 = _conv3x3(in_features, out_features, stride, rngs)
    self.bn2 = _batch_norm(out_features, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.conv2 = _conv3x3(out_features, out_features, 1, rngs)
    self.shortcut = (
        _conv(
            in_features,
            out_features,
            1,
            stride,
            kernel_init=KAIMING_NORMAL_FAN_IN,
            rngs=rngs,
        )
        if stride != 1 or in_features != out_features
        else None
    )

  def __call__(self, x):
    activated = jax.nn.relu(self.bn1(x))
    y = self.conv1(activated)
    y = self.conv2(self.dropout(jax.nn.relu(self.bn2(y))))
    return y + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nnx.Module):
  """WRN-depth-width for 32x32 images; NHWC in, logits out.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> model = nnx.eval_shape(lambda: WideResNet(16, 8, num_classes=10,
    ...                                           rngs=nnx.Rngs(0)))
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    10961370

  References:
    Zagoruyko and Komodakis, `Wide residual networks
    <https://arxiv.org/abs/1605.07146>`_, BMVC 2016.
  """

  def __init__(
      self,
      depth: int = 16,
      width: int = 8,
      *,
      num_classes: int = 10,
      dropout_rate: float = 0.0,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      depth: 6n + 4 for n >= 1 units per stage.
      width: the widening factor k.
      num_classes: outputs of the classifier.
      dropout_rate: dropout between the two convolutions of every unit.
      rngs: random streams for the initialisation and the dropout.
    """
    if depth < 10 or (depth - 4) % 6:
      raise ValueError(f'`depth` must be 6n + 4 with n >= 1, got {depth}.')
    units_per_stage = (depth - 4) // 6
    self.conv1 = _conv3x3(3, 16, 1, rngs)
    stages, in_features = [], 16
    for index in range(3):
      out_features = 16 * width * 2**index
      units = []
      for unit in range(units_per_stage):
        stride = 2 if index > 0 and unit == 0 else 1
        units.append(
            WideBlock(
                in_features,
                out_features,
                stride,
                dropout_rate=dropout_rate,
                rngs=rngs,
            )
        )
        in_features = out_features
      stages.append(nnx.List(units))
    self.stages = nnx.List(stages)
    self.bn = _batch_norm(in_features, rngs=rngs)
    self.linear = nnx.Linear(
        in_features,
        num_classes,
        kernel_init=nnx.initializers.zeros,
        bias_init=nnx.initializers.zeros,
        rngs=rngs,
    )

  def __call__(self, x):
    x = self.conv1(x)
    for stage in self.stages:
      for unit in stage:
        x = unit(x)
    x = jax.nn.relu(self.bn(x))
    return self.linear(x.mean(axis=(1, 2)))
