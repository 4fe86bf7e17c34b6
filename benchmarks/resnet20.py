"""The CIFAR ResNet-20 training step that the benchmarks time, in JAX.

One jitted program per optimizer: the loss and gradient of
``experiments.models``' ResNet-20 on a batch of 32x32x3 images, the optimizer's
``update`` (with the loss as ``value``) and ``apply_updates``, parameters and
optimizer state donated. ACME's step is :func:`optax_adaptive.acme_step`, which
evaluates the loss and gradient again at its look-ahead point (and at the ASAM
point). BatchNorm statistics go in and come out of every step.
"""

import argparse
from collections.abc import Callable
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from experiments import models
import optax_adaptive

NUM_CLASSES = 10


def add_model_arguments(
    parser: argparse.ArgumentParser, *, batch_help: str | None = None
) -> None:
  """The command-line flags ``--batch-size`` and ``--depth`` of the scripts."""
  parser.add_argument('--batch-size', type=int, default=128, help=batch_help)
  parser.add_argument(
      '--depth',
      type=int,
      default=20,
      help='6n + 2; 20 is ResNet-20 (8 for a quick check)',
  )


def methods() -> dict[str, optax.GradientTransformationExtraArgs]:
  """The library's optimizers and optax's Adam, at the papers' usual settings.

  The settings do not change what a step costs; they are there so that the
  steps are the ones a user would run.
  """
  oa = optax_adaptive
  return {
      'optax.adam': optax.adam(1e-3),
      'adaloss': oa.adaloss(0.1, weight_decay=5e-4),
      'adagrad_norm': oa.adagrad_norm(0.1, granularity='rows'),
      'sgd_constant': oa.sgd_constant(0.1, b0=1.0, weight_decay=5e-4),
      'sgd_decay_sqrt': oa.sgd_decay_sqrt(0.1, b0=1.0, weight_decay=5e-4),
      'adam_l2': oa.adam_l2(1e-3, weight_decay=5e-4),
      'adamw': oa.adamw(1e-3, weight_decay=5e-4),
      'adam_prox': oa.adam_prox(1e-3, weight_decay=5e-4),
      'adadiff': oa.adadiff(1e-3, weight_decay=5e-4),
      'acme': oa.acme(1e-3),
      'acme + ASAM': oa.acme(1e-3, asam=True),
  }


def split_model(
    *, batch_norm: bool, depth: int = 20, seed: int = 0
) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """The model as ``(graphdef, params, batch_stats)``.

  Args:
    batch_norm: whether the network has BatchNorm (without it, ``batch_stats``
      is empty).
    depth: 6n + 2; 20 is ResNet-20, 8 is the tests' size.
    seed: the initialisation's seed.

  Returns:
    What :func:`flax.nnx.split` gives for ``nnx.Param`` and ``nnx.BatchStat``.
  """
  model = models.create_model(
      'resnet20',
      num_classes=NUM_CLASSES,
      depth=depth,
      batch_norm=batch_norm,
      rngs=nnx.Rngs(seed),
  )
  return nnx.split(model, nnx.Param, nnx.BatchStat)


def loss_function(graphdef: nnx.GraphDef) -> Callable[..., Any]:
  """``loss(params, batch_stats, images, labels) -> (loss, batch_stats)``."""

  def loss(params, batch_stats, images, labels):
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    logits = model(images)
    value = optax.softmax_cross_entropy_with_integer_labels(
        logits, labels
    ).mean()
    return value, nnx.state(model, nnx.BatchStat)

  return loss


def train_step(
    loss: Callable[..., Any],
    name: str,
    tx: optax.GradientTransformationExtraArgs,
    **jit_kwargs,
) -> Callable[..., Any]:
  """The jitted step of optimizer `name`.

  Args:
    loss: from :func:`loss_function`.
    name: a key of :func:`methods`; ACME's names get ``acme_step``.
    tx: the optimizer.
    **jit_kwargs: for :func:`jax.jit` (shardings); parameters and state are
      always donated.

  Returns:
    ``step(params, opt_state, batch_stats, images, labels) -> (params,
    opt_state, loss, batch_stats)``.
  """
  if name.startswith('acme'):
    # Already jitted; the outer jit (inlining it) takes the caller's shardings.
    step = optax_adaptive.acme_step(loss, tx, has_aux=True)
  else:

    def step(params, opt_state, batch_stats, images, labels):
      (value, batch_stats), grads = jax.value_and_grad(loss, has_aux=True)(
          params, batch_stats, images, labels
      )
      updates, opt_state = tx.update(grads, opt_state, params, value=value)
      return optax.apply_updates(params, updates), opt_state, value, batch_stats

  return jax.jit(step, donate_argnums=(0, 1), **jit_kwargs)


def gradient_program(loss: Callable[..., Any], *arguments):
  """The gradient of `loss` as a program of its own, compiled and run once.

  Args:
    loss: from :func:`loss_function`.
    *arguments: its arguments: ``params, batch_stats, images, labels``.

  Returns:
    ``(compiled, run)``: the compiled ``jax.grad`` of the loss, and a function
    that calls it on `arguments` and returns once its work is done.
  """
  compiled = jax.jit(jax.grad(loss, has_aux=True)).lower(*arguments).compile()

  def run():
    jax.block_until_ready(compiled(*arguments))

  run()
  return compiled, run


def random_batch(batch_size: int, seed: int = 1) -> tuple[jax.Array, jax.Array]:
  """Standard-normal NHWC images and uniform labels."""
  image_key, label_key = jax.random.split(jax.random.key(seed))
  images = jax.random.normal(image_key, (batch_size, 32, 32, 3))
  labels = jax.random.randint(label_key, (batch_size,), 0, NUM_CLASSES)
  return images, labels


def num_params(params: nnx.State) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def copy_tree(tree):
  """A copy with its own buffers, for a step that donates its arguments."""
  return jax.tree.map(jnp.copy, tree)


def step_program(
    step: Callable[..., Any], params, opt_state, *inputs
) -> Callable[[], None]:
  """One blocking call of a step of :func:`train_step`, after a first one.

  Args:
    step: from :func:`train_step`, or its compiled form; it donates the
      parameters and the state.
    params: the parameters to start from (donated: pass a copy).
    opt_state: the optimizer state to start from.
    *inputs: the rest of the step's arguments: ``batch_stats, images,
      labels``.

  Returns:
    A function that runs one step from where the last one left off and
    returns once its work is done. The first step (the compilation) has run.
  """
  carry = [params, opt_state]

  def run():
    carry[0], carry[1], value, _ = step(carry[0], carry[1], *inputs)
    jax.block_until_ready((carry, value))

  run()
  return run
