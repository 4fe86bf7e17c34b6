"""Loads timm / PyTorch checkpoints into the Flax NNX models of this package.

A checkpoint is a flat mapping from PyTorch names to arrays: a ``.safetensors``
file (read with NumPy, no torch needed) or a ``.pth``/``.pt``/``.bin`` file
(needs torch). ``timm:NAME`` names a timm model on the Hugging Face Hub: its
``model.safetensors`` is downloaded from the repository ``timm/NAME`` (for
example ``timm:vit_small_patch16_224.augreg_in21k_ft_in1k`` or
``timm:resnet50.fb_swsl_ig1b_ft_in1k``, the AdaLoss paper's ``swsl_resnet50``)
into the Hub cache; that needs the ``huggingface_hub`` package and internet.

The models keep timm's module names, so the mapping is mechanical: NNX's
``kernel`` is PyTorch's ``weight`` (transposed to HWIO for convolutions, to
(in, out) for dense layers), ``scale`` is a norm's ``weight``, a BatchNorm's
``mean``/``var`` are ``running_mean``/``running_var``, and a ResNet shortcut's
``conv``/``norm`` are ``downsample.0``/``downsample.1``.
"""

from collections.abc import Callable, Mapping
import functools
import pathlib

from flax import nnx
import numpy as np

from experiments.models import resnet_imagenet, vit

# name: (constructor, the attribute of its classification head).
ARCHITECTURES: dict[str, tuple[Callable[..., nnx.Module], str]] = {
    'vit_s16': (vit.vit_s16, 'head'),
    'resnet50': (resnet_imagenet.resnet50, 'fc'),
}
_VARIABLE_NAMES = {
    'kernel': 'weight',
    'scale': 'weight',
    'bias': 'bias',
    'mean': 'running_mean',
    'var': 'running_var',
}
_MODULE_NAMES = {'conv': '0', 'norm': '1'}  # inside a ResNet `downsample`
_IGNORED_SUFFIXES = ('num_batches_tracked',)


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the model it is loaded into."""


def resolve(source: str) -> pathlib.Path:
  """The local file for a path or a ``timm:NAME`` (downloaded if needed)."""
  if source.startswith('timm:'):
    try:
      import huggingface_hub  # pylint: disable=g-import-not-at-top
    except ImportError as error:
      raise ImportError(
          f'Downloading {source} needs `pip install huggingface_hub`; or pass '
          'the path of a local .safetensors/.pth file instead.'
      ) from error
    return pathlib.Path(
        huggingface_hub.hf_hub_download(
            repo_id=f'timm/{source[len("timm:"):]}',
            filename='model.safetensors',
        )
    )
  path = pathlib.Path(source).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f'No checkpoint file at {path}.')
  return path


def read_checkpoint(source: str) -> dict[str, np.ndarray]:
  """Reads a checkpoint into NumPy arrays keyed by PyTorch parameter names."""
  path = resolve(source)
  if path.suffix == '.safetensors':
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

    return dict(load_file(str(path)))
  if path.suffix in ('.pth', '.pt', '.bin'):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as error:
      raise ImportError(
          f'Reading {path.name} needs torch; a .safetensors file does not.'
      ) from error
    state = torch.load(path, map_location='cpu', weights_only=True)
    for wrapper in ('state_dict', 'model'):
      if isinstance(state.get(wrapper), Mapping):
        state = state[wrapper]
    return {k: v.float().numpy() for k, v in state.items()}
  raise ValueError(
      f'Unknown checkpoint format {path.suffix!r}: expected '
      '.safetensors, .pth, .pt or .bin.'
  )


def torch_name(path: tuple) -> str:
  """The PyTorch parameter name of an NNX variable path."""
  *modules, variable = path
  parts = []
  for i, part in enumerate(modules):
    inside_downsample = i > 0 and modules[i - 1] == 'downsample'
    parts.append(_MODULE_NAMES[part] if inside_downsample else str(part))
  return '.'.join(parts + [_VARIABLE_NAMES.get(variable, variable)])


def _to_flax_layout(array: np.ndarray, variable: str) -> np.ndarray:
  if variable == 'kernel' and array.ndim == 4:
    return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if variable == 'kernel' and array.ndim == 2:
    return array.T  # (out, in) -> (in, out)
  return array


def load_into(
    model: nnx.Module,
    checkpoint: Mapping[str, np.ndarray],
    *,
    skip_prefixes: tuple[str, ...] = (),
) -> None:
  """Copies every parameter and batch statistic of `model` from `checkpoint`.

  Args:
    model: an NNX model with timm's module names.
    checkpoint: PyTorch names to arrays, as :func:`read_checkpoint` returns.
    skip_prefixes: PyTorch name prefixes to leave at their initial values (a
      classification head being replaced).

  Raises:
    CheckpointMismatchError: naming the first variable of the model missing
      from the checkpoint or of another shape, or the first checkpoint entry
      the model has no place for.
  """
  state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
  flat = nnx.to_flat_state(state)
  used = set()
  for path, variable in flat:
    name = torch_name(path)
    if name.startswith(skip_prefixes):
      continue
    if name not in checkpoint:
      raise CheckpointMismatchError(
          f"The checkpoint has no {name!r} (for the model's {path})."
      )
    value = _to_flax_layout(np.asarray(checkpoint[name]), path[-1])
    if value.shape != variable.shape:
      raise CheckpointMismatchError(
          f'{name!r} has shape {value.shape} in Flax layout; the model '
          f'expects {variable.shape}.'
      )
    variable.set_value(value.astype(variable.dtype))
    used.add(name)
  unused = sorted(
      k
      for k in checkpoint
      if k not in used
      and not k.endswith(_IGNORED_SUFFIXES)
      and not k.startswith(skip_prefixes)
  )
  if unused:
    raise CheckpointMismatchError(
        f'The model has no place for {unused[0]!r} '
        f'({len(unused)} checkpoint entries unused).'
    )
  nnx.update(model, nnx.from_flat_state(flat))


def create_pretrained(
    architecture: str,
    source: str,
    *,
    num_classes: int,
    rngs: nnx.Rngs,
    **model_kwargs,
) -> nnx.Module:
  """Builds `architecture` and loads `source` into it.

  When `num_classes` differs from the checkpoint's head, the head keeps its
  fresh initialisation: replacing the head is this one argument.

  Example (with internet)::

    model = create_pretrained('vit_s16', 'timm:vit_small_patch16_224',
                              num_classes=100, rngs=nnx.Rngs(0))
  """
  if architecture not in ARCHITECTURES:
    raise ValueError(
        f'Unknown architecture {architecture!r}; choose one of '
        f'{", ".join(ARCHITECTURES)}.'
    )
  constructor, head = ARCHITECTURES[architecture]
  checkpoint = read_checkpoint(source)
  model = constructor(num_classes=num_classes, rngs=rngs, **model_kwargs)
  head_rows = checkpoint.get(f'{head}.weight', np.empty((0,))).shape[0]
  skip = (f'{head}.',) if head_rows != num_classes else ()
  load_into(model, checkpoint, skip_prefixes=skip)
  return model


pretrained_vit_s16 = functools.partial(create_pretrained, 'vit_s16')
pretrained_resnet50 = functools.partial(create_pretrained, 'resnet50')
