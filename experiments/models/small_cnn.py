"""A small convolutional network, cheap enough to train many copies at once.

``robustness`` trains one copy per initial learning rate and seed in a single
jitted program (``jax.vmap`` over the copies' parameters). Under ``vmap``, a
``lax.conv`` whose kernel differs from copy to copy becomes a grouped
convolution, which XLA's CPU backend runs slower than a matrix product; so
each 3x3 convolution here is written as one: the input's 3x3 patches
(``lax.conv_general_dilated_patches``, whose kernel is fixed) times the
kernel, a batched ``dot_general`` under ``vmap``. Measured side by side on the
project's shared 2-core CPU machine (JAX 0.10.2, under load), Adam steps of
33 copies on batches of 64 8x8 images took 119 ms with this layer against
271 ms with ``nnx.Conv`` (medians of 5 epochs of 23 steps, alternated).
Layers keep PyTorch's default initialisation, as the experiments' other
models do.
"""

from collections.abc import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from experiments.models.resnet import TORCH_DEFAULT_KERNEL_INIT, torch_linear

_KERNEL_SIZE = 3
_POOL = 2


class PatchConv(nnx.Module):
  """A 3x3 convolution with 'SAME' padding and a bias, as patches @ kernel.

  The kernel is ``(9 * in_features, out_features)``, the patches' features
  ordered as ``lax.conv_general_dilated_patches`` gives them (input channel
  first, then the 3x3 positions); it is uniform in +-1/sqrt(fan_in), PyTorch's
  default, and the bias starts at zero.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = PatchConv(1, 4, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((2, 8, 8, 1))).shape
    (2, 8, 8, 4)
  """

  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
    fan_in = _KERNEL_SIZE * _KERNEL_SIZE * in_features
    self.kernel = nnx.Param(
        TORCH_DEFAULT_KERNEL_INIT(rngs.params(), (fan_in, out_features))
    )
    self.bias = nnx.Param(jnp.zeros((out_features,)))

  def __call__(self, x: jax.Array) -> jax.Array:
    patches = jax.lax.conv_general_dilated_patches(
        x,
        (_KERNEL_SIZE, _KERNEL_SIZE),
        (1, 1),
        'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    return patches @ self.kernel[...] + self.bias[...]


def _max_pool(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 (the sides must be even)."""
  n, height, width, channels = x.shape
  blocks = x.reshape(n, height // _POOL, _POOL, width // _POOL, _POOL, channels)
  return blocks.max(axis=(2, 4))


class SmallCNN(nnx.Module):
  """Convolution, ReLU and 2x2 max pooling per stage, then a linear head.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = SmallCNN((8, 16), num_classes=10, image_size=8, channels=1,
    ...                  rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 8, 8, 1))).shape
    (2, 10)
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    1898
  """

  def __init__(
      self,
      widths: Sequence[int] = (8, 16),
      *,
      num_classes: int = 10,
      image_size: int = 32,
      channels: int = 3,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      widths: output channels of each stage's convolution, input side first.
      num_classes: outputs of the head.
      image_size: side of the square input images, divisible by
        ``2 ** len(widths)``.
      channels: channels of the input images.
      rngs: random streams for the initialisation.

    Raises:
      ValueError: if the stages' pooling cannot halve ``image_size`` that
        many times.
    """
    if image_size % _POOL ** len(widths):
      raise ValueError(
          f'image_size {image_size} cannot be halved {len(widths)} times.'
      )
    sizes = (channels, *widths)
    self.stages = nnx.List([
        PatchConv(inputs, outputs, rngs=rngs)
        for inputs, outputs in zip(sizes, sizes[1:])
    ])
    side = image_size // _POOL ** len(widths)
    self.head = torch_linear(side * side * widths[-1], num_classes, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = images
    for stage in self.stages:
      x = _max_pool(jax.nn.relu(stage(x)))
    return self.head(x.reshape(x.shape[0], -1))
