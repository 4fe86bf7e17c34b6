"""The CIFAR ResNet-20 and its training steps in plain PyTorch, for comparison.

The model is the one of ``experiments.models.resnet_cifar`` (He et al.'s
ResNet-20 as Idelbayev's PyTorch code builds it: bias-free 3x3 convolutions,
"option A" zero-padding shortcuts, optional BatchNorm), in PyTorch's NCHW
layout, with the same parameter count (269,722 with BatchNorm, 268,346
without). The steps are what an author's training loop runs in eager mode:
``zero_grad``, forward, ``backward``, ``optimizer.step()``.

Only the benchmarks import this module; PyTorch is not a dependency of the
library.
"""

from collections.abc import Callable
import math

import torch
from torch import nn
from torch.nn import functional as F


def default_device() -> str:
  """A GPU where PyTorch sees one, else the CPU."""
  return 'cuda' if torch.cuda.is_available() else 'cpu'


def device_description(device: str) -> str:
  return (
      torch.cuda.get_device_name()
      if device == 'cuda'
      else f'CPU ({torch.get_num_threads()} threads)'
  )


def blocking(function: Callable[[], object], device: str) -> Callable[[], None]:
  """`function`, returning once the device has done its work (for timing)."""

  def run():
    function()
    if device == 'cuda':
      torch.cuda.synchronize()

  return run


class BasicBlock(nn.Module):
  """Two 3x3 convolutions around a parameter-free (option A) shortcut."""

  def __init__(
      self, in_channels: int, out_channels: int, stride: int, batch_norm: bool
  ):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
    self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
    self.stride = stride
    self.new_channels = out_channels - in_channels

  def shortcut(self, x: torch.Tensor) -> torch.Tensor:
    if self.stride == 1 and self.new_channels == 0:
      return x
    before = self.new_channels // 2
    return F.pad(
        x[:, :, :: self.stride, :: self.stride],
        (0, 0, 0, 0, before, self.new_channels - before),
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32x32 NCHW images; logits out.

  Example:
    >>> model = CifarResNet(20)
    >>> sum(p.numel() for p in model.parameters())
    269722
  """

  def __init__(
      self, depth: int = 20, num_classes: int = 10, batch_norm: bool = True
  ):
    super().__init__()
    blocks_per_stage = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(16) if batch_norm else nn.Identity()
    blocks, in_channels = [], 16
    for index, out_channels in enumerate((16, 32, 64)):
      for block in range(blocks_per_stage):
        stride = 2 if index > 0 and block == 0 else 1
        blocks.append(BasicBlock(in_channels, out_channels, stride, batch_norm))
        in_channels = out_channels
    self.blocks = nn.Sequential(*blocks)
    self.linear = nn.Linear(64, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.blocks(F.relu(self.bn1(self.conv1(x))))
    return self.linear(x.mean(dim=(2, 3)))


class AdaDiff(torch.optim.Optimizer):
  """AdaDiff as its authors' PyTorch optimizer computes it, tensor by tensor.

  The L2 term joins the gradient, the second moment also averages the squared
  change of the gradient, ``eps`` is added to the stored second moment every
  step, and the gradient is kept for the next step.
  """

  def __init__(
      self,
      params,
      lr: float = 1e-3,
      betas=(0.9, 0.999),
      eps: float = 1e-8,
      weight_decay: float = 0.0,
  ):
    super().__init__(
        params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    )

  @torch.no_grad()
  def step(self, closure=None):
    del closure
    for group in self.param_groups:
      beta1, beta2 = group['betas']
      for param in group['params']:
        if param.grad is None:
          continue
        state = self.state[param]
        if not state:
          state['step'] = 0
          for key in ('mu', 'nu', 'previous_grad'):
            state[key] = torch.zeros_like(param)
        state['step'] += 1
        grad = param.grad.add(param, alpha=group['weight_decay'])
        change = grad - state['previous_grad']
        state['mu'].mul_(beta1).add_(grad, alpha=1 - beta1)
        state['nu'].mul_(beta2).addcmul_(grad, grad, value=1 - beta2).addcmul_(
            change, change, value=1 - beta2
        ).add_(group['eps'])
        state['previous_grad'] = grad
        step_size = (
            group['lr']
            * math.sqrt(1 - beta2 ** state['step'])
            / (1 - beta1 ** state['step'])
        )
        param.addcdiv_(state['mu'], state['nu'].sqrt(), value=-step_size)


# The update rules, as the papers' code builds them: name -> optimizer factory,
# ``factory(params, **options)``; the options (``fused=True``) go to the
# ``torch.optim`` constructor of the rules in ``FUSED_RULES``.
# AdaLoss is SGD on the loss divided by b_t (see `train_step`).
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    'sgd': lambda p, **options: torch.optim.SGD(
        p, lr=0.1, weight_decay=5e-4, **options
    ),
    'adaloss': lambda p, **options: torch.optim.SGD(
        p, lr=0.1, weight_decay=5e-4, **options
    ),
    'adam': lambda p, **options: torch.optim.Adam(p, lr=1e-3, **options),
    'adam_l2': lambda p, **options: torch.optim.Adam(
        p, lr=1e-3, weight_decay=5e-4, **options
    ),
    'adamw': lambda p, **options: torch.optim.AdamW(
        p, lr=1e-3, weight_decay=5e-4, **options
    ),
    'adadiff': lambda p: AdaDiff(p, lr=1e-3, weight_decay=5e-4),
}
# The rules whose optimizer has PyTorch's fused kernel, one pass per tensor
# for all its outputs (``fused=True``); without it, ``torch.optim`` runs a
# loop over the tensors on a CPU and its multi-tensor (foreach) form on a GPU.
FUSED_RULES = frozenset({'sgd', 'adaloss', 'adam', 'adam_l2', 'adamw'})


def train_step(
    model: nn.Module, rule: str, *, evaluations: int = 1
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
  """One eager training step of `model` with the update rule `rule`.

  Args:
    model: the network; the step updates it in place.
    rule: a key of ``OPTIMIZERS``.
    evaluations: forward and backward passes per step. More than one times a
      method that evaluates the loss and gradient again on the same batch (ACME)
      without its rule: the extra passes are the ones it pays for.

  Returns:
    ``step(images, labels) -> loss``, the loss of the first evaluation.
  """
  optimizer = OPTIMIZERS[rule](model.parameters())
  # AdaLoss's b_t^2 = b_0^2 + sum of losses, b_0 = 1.
  accumulator = [1.0]

  def step(images, labels):
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    if rule == 'adaloss':
      accumulator[0] += abs(loss.item())
      (loss / math.sqrt(accumulator[0])).backward()
    else:
      loss.backward()
    for _ in range(evaluations - 1):
      F.cross_entropy(model(images), labels).backward()
    optimizer.step()
    return loss

  return step
