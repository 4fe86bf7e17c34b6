"""ResNet-18 and -34 for CIFAR, as AdaBelief's and AdaDiff's code builds them.

The ImageNet ResNet with its 7x7 stride-2 stem and max-pool replaced by one 3x3
stride-1 convolution, so that the four stages of 64, 128, 256 and 512 channels
work on 32, 16, 8 and 4 pixels square; shortcuts that change shape are a 1x1
convolution and a BatchNorm ("option B"). That code leaves every layer at
PyTorch's default initialisation, and so does this module: kernels, and the
classifier's bias, are uniform in +-1/sqrt(fan_in) (``kaiming_uniform_`` with
``a=sqrt(5)``).

The layer helpers here (PyTorch's padding, BatchNorm constants and default
initialisation) are shared by the other CIFAR families of this package.
"""

from collections.abc import Callable

from flax import nnx
import jax
import jax.numpy as jnp

# PyTorch's default for convolution and linear kernels: uniform in
# +-1/sqrt(fan_in), i.e. a variance of 1 / (3 fan_in).
TORCH_DEFAULT_KERNEL_INIT = nnx.initializers.variance_scaling(
    1 / 3, 'fan_in', 'uniform'
)
# kaiming_normal_(mode='fan_out'), or normal(0, sqrt(2 / (k * k * out))) as the
# DenseNet, VGG and PyramidNet code writes it.
KAIMING_NORMAL_FAN_OUT = nnx.initializers.variance_scaling(
    2.0, 'fan_out', 'normal'
)
# kaiming_normal_ with its defaults (mode='fan_in').
KAIMING_NORMAL_FAN_IN = nnx.initializers.variance_scaling(
    2.0, 'fan_in', 'normal'
)

_STAGE_SIZES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _uniform(bound: float) -> Callable[..., jax.Array]:
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int,
    stride: int = 1,
    *,
    kernel_init: Callable[..., jax.Array],
    use_bias: bool = False,
    rngs: nnx.Rngs,
) -> nnx.Conv:
  """A square convolution padded by ``kernel_size // 2`` on every side.

  Explicit padding, as in PyTorch: XLA's 'SAME' pads stride-2 convolutions
  asymmetrically and would shift the feature maps by one pixel. A bias, where
  asked for, starts at zero, as every one of these papers' codes sets it.

  Args:
    in_features: input channels.
    out_features: output channels.
    kernel_size: height and width of the kernel.
    stride: stride in both spatial dimensions.
    kernel_init: initialiser of the kernel, laid out (kh, kw, in, out).
    use_bias: whether to add a bias.
    rngs: random streams for the initialisation.

  Returns:
    The convolution.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> def outputs(images):
    ...   layer = conv(3, 16, 3, 2, kernel_init=KAIMING_NORMAL_FAN_OUT,
    ...                rngs=nnx.Rngs(0))
    ...   return layer(images)
    >>> nnx.eval_shape(outputs, jnp.zeros((1, 32, 32, 3))).shape
    (1, 16, 16, 16)
  """
  pad = kernel_size // 2
  return nnx.Conv(
      in_features,
      out_features,
      (kernel_size, kernel_size),
      strides=(stride, stride),
      padding=((pad, pad), (pad, pad)),
      use_bias=use_bias,
      kernel_init=kernel_init,
      rngs=rngs,
  )


def batch_norm(features: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """``nnx.BatchNorm`` with PyTorch's defaults (its momentum 0.1 is Flax's 0.9).

  Args:
    features: channels to normalise, the last axis.
    rngs: random streams, which ``nnx.BatchNorm`` asks for.

  Returns:
    The BatchNorm; ``model.eval()`` switches it to its running statistics.

  Example:
    >>> from flax import nnx
    >>> norm = batch_norm(16, rngs=nnx.Rngs(0))
    >>> norm.momentum, norm.epsilon
    (0.9, 1e-05)
  """
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


def torch_linear(
    in_features: int,
    out_features: int,
    *,
    rngs: nnx.Rngs,
    kernel_init: Callable[..., jax.Array] = (TORCH_DEFAULT_KERNEL_INIT),
) -> nnx.Linear:
  """A linear layer whose bias starts as PyTorch's: uniform in +-1/sqrt(fan_in).

  Args:
    in_features: input features.
    out_features: output features.
    rngs: random streams for the initialisation.
    kernel_init: initialiser of the kernel; PyTorch's default unless the model's
      code overrides it.

  Returns:
    The linear layer.

  Example:
    >>> from flax import nnx
    >>> layer = torch_linear(64, 10, rngs=nnx.Rngs(0))
    >>> bool(abs(layer.bias[...]).max() <= 1 / 8)
    True
  """
  return nnx.Linear(
      in_features,
      out_features,
      kernel_init=kernel_init,
      bias_init=_uniform(in_features**-0.5),
      rngs=rngs,
  )


class Projection(nnx.Module):
  """The option-B shortcut: a strided 1x1 convolution and a BatchNorm."""

  def __init__(
      self, in_features: int, out_features: int, stride: int, *, rngs: nnx.Rngs
  ):
    self.conv = conv(
        in_features,
        out_features,
        1,
        stride,
        kernel_init=TORCH_DEFAULT_KERNEL_INIT,
        rngs=rngs,
    )
    self.bn = batch_norm(out_features, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions, each followed by BatchNorm, around a shortcut."""

  def __init__(
      self, in_features: int, out_features: int, stride: int, *, rngs: nnx.Rngs
  ):
    self.conv1 = conv(
        in_features,
        out_features,
        3,
        stride,
        kernel_init=TORCH_DEFAULT_KERNEL_INIT,
        rngs=rngs,
    )
    self.bn1 = batch_norm(out_features, rngs=rngs)
    self.conv2 = conv(
        out_features,
        out_features,
        3,
        kernel_init=TORCH_DEFAULT_KERNEL_INIT,
        rngs=rngs,
    )
    self.bn2 = batch_norm(out_features, rngs=rngs)
    self.shortcut = (
        Projection(in_features, out_features, stride, rngs=rngs)
        if stride != 1 or in_features != out_features
        else None
    )

  def __call__(self, x):
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return jax.nn.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nnx.Module):
  """ResNet-18/34 for 32x32 images (3x3 stem, no max-pool); NHWC in, logits out.

  Depth 34 stacks 3, 4, 6 and 3 basic blocks, depth 18 two of each and depth 10
  (for tests) one of each. Global average pooling replaces the original's 4x4
  average pool, which is the same on 32x32 inputs and also serves smaller ones.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> model = nnx.eval_shape(lambda: ResNet(34, num_classes=10,
    ...                                       rngs=nnx.Rngs(0)))
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    21282122

  References:
    He, Zhang, Ren and Sun, `Deep residual learning for image recognition
    <https://arxiv.org/abs/1512.03385>`_, CVPR 2016.

    Zhuang et al., `AdaBelief optimizer: adapting stepsizes by the belief in
    observed gradients <https://arxiv.org/abs/2010.07468>`_, NeurIPS 2020 (its
    CIFAR code, which AdaDiff's follows).
  """

  def __init__(
      self,
      depth: int = 34,
      *,
      num_classes: int = 10,
      width: int = 64,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      depth: 10, 18 or 34.
      num_classes: outputs of the classifier.
      width: channels of the stem and the first stage; each later stage doubles
        them (64 in the papers).
      rngs: random streams for the initialisation.
    """
    if depth not in _STAGE_SIZES:
      raise ValueError(
          f'`depth` must be one of {sorted(_STAGE_SIZES)}, got {depth}.'
      )
    self.conv1 = conv(
        3, width, 3, kernel_init=TORCH_DEFAULT_KERNEL_INIT, rngs=rngs
    )
    self.bn1 = batch_norm(width, rngs=rngs)
    stages, in_features = [], width
    for index, num_blocks in enumerate(_STAGE_SIZES[depth]):
      out_features = width * 2**index
      blocks = []
      for block in range(num_blocks):
        stride = 2 if index > 0 and block == 0 else 1
        blocks.append(BasicBlock(in_features, out_features, stride, rngs=rngs))
        in_features = out_features
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.linear = torch_linear(in_features, num_classes, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    for stage in self.stages:
      for block in stage:
        x = block(x)
    return self.linear(x.mean(axis=(1, 2)))
