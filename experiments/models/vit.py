"""Vision Transformer in Flax NNX, laid out like timm's so its weights load.

The module tree mirrors timm's ``VisionTransformer`` (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks[i].{norm1, attn.qkv, attn.proj, norm2,
mlp.fc1, mlp.fc2}``, ``norm``, ``head``) so that
:mod:`experiments.pretrained` maps a timm checkpoint onto it name by name.
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp


class Attention(nnx.Module):
  """Multi-head self-attention with a fused query/key/value projection."""

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
    self.proj = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x):
    batch, tokens, dim = x.shape
    head_dim = dim // self.num_heads
    qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, head_dim)
    q, k, v = jnp.moveaxis(qkv, 2, 0)  # each (batch, tokens, heads, head_dim)
    out = jax.nn.dot_product_attention(q, k, v)
    return self.proj(out.reshape(batch, tokens, dim))


class Mlp(nnx.Module):

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(dim, hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, dim, rngs=rngs)

  def __call__(self, x):
    # timm uses the exact (erf) GELU.
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
  """A pre-norm transformer block."""

  def __init__(
      self,
      dim: int,
      num_heads: int,
      mlp_ratio: float,
      dropout_rate: float,
      *,
      rngs: nnx.Rngs,
  ):
    layer_norm = functools.partial(nnx.LayerNorm, epsilon=1e-6, rngs=rngs)
    self.norm1 = layer_norm(dim)
    self.attn = Attention(dim, num_heads, rngs=rngs)
    self.norm2 = layer_norm(dim)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x):
    x = x + self.dropout(self.attn(self.norm1(x)))
    return x + self.dropout(self.mlp(self.norm2(x)))


class VisionTransformer(nnx.Module):
  """ViT with a class token, learned position embeddings and a linear head.

  Takes NHWC images of ``image_size`` pixels; returns logits.

  References:
    Dosovitskiy et al., `An image is worth 16x16 words
    <https://arxiv.org/abs/2010.11929>`_, ICLR 2021; the layout of timm's
    ``vit_small_patch16_224`` (Wightman, pytorch-image-models).
  """

  def __init__(
      self,
      *,
      num_classes: int = 1000,
      image_size: int = 224,
      patch_size: int = 16,
      dim: int = 384,
      depth: int = 12,
      num_heads: int = 6,
      mlp_ratio: float = 4.0,
      dropout_rate: float = 0.0,
      rngs: nnx.Rngs,
  ):
    self.patch_size = patch_size
    self.patch_embed = PatchEmbed(patch_size, dim, rngs=rngs)
    num_patches = (image_size // patch_size) ** 2
    init = nnx.initializers.truncated_normal(stddev=0.02)
    self.cls_token = nnx.Param(init(rngs.params(), (1, 1, dim)))
    self.pos_embed = nnx.Param(init(rngs.params(), (1, num_patches + 1, dim)))
    self.blocks = nnx.List([
        Block(dim, num_heads, mlp_ratio, dropout_rate, rngs=rngs)
        for _ in range(depth)
    ])
    self.norm = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
    self.head = nnx.Linear(dim, num_classes, rngs=rngs)

  def __call__(self, images):
    x = self.patch_embed(images)
    cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls.astype(x.dtype), x], axis=1) + self.pos_embed[...]
    for block in self.blocks:
      x = block(x)
    return self.head(self.norm(x)[:, 0])


class PatchEmbed(nnx.Module):
  """Non-overlapping patches projected to tokens, in row-major patch order."""

  def __init__(self, patch_size: int, dim: int, *, rngs: nnx.Rngs):
    self.proj = nnx.Conv(
        3,
        dim,
        (patch_size, patch_size),
        strides=(patch_size, patch_size),
        padding='VALID',
        rngs=rngs,
    )

  def __call__(self, images):
    x = self.proj(images)
    return x.reshape(x.shape[0], -1, x.shape[-1])


vit_s16 = functools.partial(
    VisionTransformer, patch_size=16, dim=384, depth=12, num_heads=6
)
vit_tiny_test = functools.partial(
    VisionTransformer, image_size=32, patch_size=8, dim=32, depth=2, num_heads=2
)
