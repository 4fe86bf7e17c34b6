"""A multilayer perceptron on flattened images, the experiments' small model.

The AdaLoss paper's analysis is of two-layer over-parameterised networks; its
b0 table is for fine-tuned ViT-S/16 and ResNet-50. ``mlp`` (one hidden layer of
256 ReLU units) is the small model that the table's digits stand-in trains on a
CPU: it compiles in about a second and learns digits in a few epochs. Layers
keep PyTorch's default initialisation, as the papers' code does.
"""

from collections.abc import Sequence

from flax import nnx
import jax

from experiments.models.resnet import torch_linear


class MLP(nnx.Module):
  """Fully connected ReLU layers on the flattened image, then a linear head.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = MLP((256,), num_classes=10, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 32, 32, 3))).shape
    (2, 10)
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    789258
  """

  def __init__(
      self,
      hidden_sizes: Sequence[int] = (256,),
      *,
      num_classes: int = 10,
      image_size: int = 32,
      channels: int = 3,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      hidden_sizes: units of each hidden layer, input side first.
      num_classes: outputs of the head.
      image_size: side of the square input images.
      channels: channels of the input images.
      rngs: random streams for the initialisation.
    """
    sizes = (image_size * image_size * channels, *hidden_sizes)
    self.hidden = nnx.List([
        torch_linear(inputs, outputs, rngs=rngs)
        for inputs, outputs in zip(sizes, sizes[1:])
    ])
    self.head = torch_linear(sizes[-1], num_classes, rngs=rngs)

  def __call__(self, images):
    x = images.reshape(images.shape[0], -1)
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
    return self.head(x)
