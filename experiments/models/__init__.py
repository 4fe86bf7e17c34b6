"""Flax NNX models used by the experiments, by name.

Every model takes NHWC images and returns logits; BatchNorm and Dropout follow
``model.train()`` / ``model.eval()``.
"""

from collections.abc import Callable

from flax import nnx

from experiments.models import resnet_cifar
from experiments.models import resnet_imagenet
from experiments.models import vit

MODELS: dict[str, Callable[..., nnx.Module]] = {
    'resnet8': resnet_cifar.resnet8,
    'resnet20': resnet_cifar.resnet20,
    'resnet32': resnet_cifar.resnet32,
    'resnet44': resnet_cifar.resnet44,
    'resnet56': resnet_cifar.resnet56,
    'resnet110': resnet_cifar.resnet110,
    'resnet218': resnet_cifar.resnet218,
    'resnet50': resnet_imagenet.resnet50,
    'vit_s16': vit.vit_s16,
    'vit_tiny': vit.vit_tiny_test,
}


def create_model(name: str, *, num_classes: int, rngs: nnx.Rngs,
                 **overrides) -> nnx.Module:
  """Builds the model `name` (a key of `MODELS`) for `num_classes` classes."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; choose one of '
                     f'{", ".join(sorted(MODELS))}.')
  return MODELS[name](num_classes=num_classes, rngs=rngs, **overrides)
