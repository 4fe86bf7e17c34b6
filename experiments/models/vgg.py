"""VGG-11/13/16/19 for CIFAR, as AdaBelief's and AdaDiff's code builds them.

Torchvision's VGG convolutions (3x3, with bias, each followed by an optional
BatchNorm and a ReLU; 2x2 max-pools between the stages), five pools that bring
32x32 images to 1x1x512, then a classifier of dropout-linear-ReLU layers of 512
units and a final linear layer. Convolution kernels are normal with variance
2 / (9 * out_channels) (Kaiming, fan-out) and their biases zero, as that code
sets them; the classifier keeps PyTorch's default initialisation.

That code's ``vgg16`` (AdaDiff's VGG-16) and ``vgg11`` (AdaBelief's) have no
BatchNorm, hence ``batch_norm=False`` by default. ``classifier_widths=()``
gives the single-linear-layer head of other CIFAR VGGs (e.g. bearpaw's or
kuangliu's, about 14.7 M parameters for VGG-16 with BatchNorm).
"""

from collections.abc import Sequence

from flax import nnx
import jax

from experiments.models.resnet import KAIMING_NORMAL_FAN_OUT, torch_linear
from experiments.models.resnet import batch_norm as _batch_norm
from experiments.models.resnet import conv as _conv

# Output channels of each convolution, stage by stage (Simonyan and Zisserman's
# configurations A, B, D and E); a max-pool ends every stage.
_STAGES = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: (
        (64, 64),
        (128, 128),
        (256, 256, 256),
        (512, 512, 512),
        (512, 512, 512),
    ),
    19: (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


class ConvLayer(nnx.Module):
  """A 3x3 convolution with bias, an optional BatchNorm, and a ReLU."""

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      batch_norm: bool,
      rngs: nnx.Rngs,
  ):
    self.conv = _conv(
        in_features,
        out_features,
        3,
        kernel_init=KAIMING_NORMAL_FAN_OUT,
        use_bias=True,
        rngs=rngs,
    )
    self.bn = _batch_norm(out_features, rngs=rngs) if batch_norm else None

  def __call__(self, x):
    x = self.conv(x)
    return jax.nn.relu(x if self.bn is None else self.bn(x))


class VGG(nnx.Module):
  """VGG for 32x32 images; NHWC in, logits out.

  The features are averaged over the remaining pixels before the classifier,
  which for 32x32 inputs (1x1 after five pools) is the original's flattening.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> model = nnx.eval_shape(lambda: VGG(16, num_classes=10,
    ...                                    rngs=nnx.Rngs(0)))
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    15245130

  References:
    Simonyan and Zisserman, `Very deep convolutional networks for large-scale
    image recognition <https://arxiv.org/abs/1409.1556>`_, ICLR 2015.
  """

  def __init__(
      self,
      depth: int = 16,
      *,
      num_classes: int = 10,
      batch_norm: bool = False,
      classifier_widths: Sequence[int] = (512, 512),
      dropout_rate: float = 0.5,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      depth: 11, 13, 16 or 19.
      num_classes: outputs of the classifier.
      batch_norm: whether to put a BatchNorm after every convolution.
      classifier_widths: units of each hidden classifier layer, each preceded
        by dropout; empty for a single linear layer on the features.
      dropout_rate: rate of those dropouts.
      rngs: random streams for the initialisation and the dropout.
    """
    if depth not in _STAGES:
      raise ValueError(
          f'`depth` must be one of {sorted(_STAGES)}, got {depth}.'
      )
    stages, in_features = [], 3
    for widths in _STAGES[depth]:
      layers = []
      for out_features in widths:
        layers.append(
            ConvLayer(
                in_features, out_features, batch_norm=batch_norm, rngs=rngs
            )
        )
        in_features = out_features
      stages.append(nnx.List(layers))
    self.stages = nnx.List(stages)
    hidden = []
    for width in classifier_widths:
      hidden.append(torch_linear(in_features, width, rngs=rngs))
      in_features = width
    self.hidden = nnx.List(hidden)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.linear = torch_linear(in_features, num_classes, rngs=rngs)

  def __call__(self, x):
    for stage in self.stages:
      for layer in stage:
        x = layer(x)
      x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    x = x.mean(axis=(1, 2))
    for linear in self.hidden:
      x = jax.nn.relu(linear(self.dropout(x)))
    return self.linear(x)
