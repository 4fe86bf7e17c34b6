"""timm checkpoints load into the Flax models and give timm's logits.

Nothing can be downloaded here, so each test creates the timm model with
random weights (biases and normalisation statistics perturbed too, so a
mis-mapped one cannot hide behind an initial zero or one), saves it, imports
it and compares logits on the same random images.
"""

from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import pretrained

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')
safetensors_torch = pytest.importorskip('safetensors.torch')

TIMM_NAMES = {'vit_s16': 'vit_small_patch16_224', 'resnet50': 'resnet50'}


def _random_timm_model(architecture, num_classes):
  torch.manual_seed(0)
  model = timm.create_model(
      TIMM_NAMES[architecture], pretrained=False, num_classes=num_classes
  )
  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      if name.endswith('num_batches_tracked'):
        continue
      if name.endswith(('.bias', 'running_mean')) or (
          tensor.ndim == 1 and name.endswith('.weight')
      ):
        tensor.add_(0.1 * torch.randn_like(tensor))
      if name.endswith('running_var'):
        tensor.uniform_(0.5, 1.5)
  return model.eval()


def _save(model, path):
  if path.suffix == '.safetensors':
    safetensors_torch.save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(path)
    )
  else:
    torch.save(model.state_dict(), path)
  return str(path)


@pytest.mark.parametrize(
    'architecture, suffix',
    [
        ('vit_s16', '.safetensors'),
        ('resnet50', '.safetensors'),
        ('resnet50', '.pth'),
    ],
)
def test_imported_model_gives_timm_logits(architecture, suffix, tmp_path):
  reference = _random_timm_model(architecture, num_classes=100)
  source = _save(reference, tmp_path / f'model{suffix}')
  model = pretrained.create_pretrained(
      architecture, source, num_classes=100, rngs=nnx.Rngs(0)
  )
  model.eval()
  images = np.random.default_rng(0).normal(size=(2, 224, 224, 3))
  images = images.astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(images)))
  assert logits.shape == (2, 100)
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


def test_a_new_head_is_one_argument(tmp_path):
  reference = _random_timm_model('resnet50', num_classes=1000)
  source = _save(reference, tmp_path / 'model.safetensors')
  model = pretrained.create_pretrained(
      'resnet50', source, num_classes=10, rngs=nnx.Rngs(0)
  )
  assert model.fc.kernel.shape == (2048, 10)
  np.testing.assert_array_equal(
      model.conv1.kernel[...],
      reference.conv1.weight.detach().numpy().transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(
      model.layer4[2].bn3.var[...], reference.layer4[2].bn3.running_var.numpy()
  )


def test_a_missing_key_is_named(tmp_path):
  state = _random_timm_model('resnet50', 10).state_dict()
  del state['layer2.1.bn2.running_var']
  path = tmp_path / 'model.safetensors'
  safetensors_torch.save_file(
      {k: v.contiguous() for k, v in state.items()}, str(path)
  )
  with pytest.raises(
      pretrained.CheckpointMismatchError, match=r"'layer2\.1\.bn2\.running_var'"
  ):
    pretrained.create_pretrained(
        'resnet50', str(path), num_classes=10, rngs=nnx.Rngs(0)
    )


def _checkpoint_of(model):
  """The model's own parameters as a checkpoint in PyTorch names and layouts."""

  def torch_layout(path, value):
    value = np.asarray(value)
    if path[-1] == 'kernel' and value.ndim == 4:
      return value.transpose(3, 2, 0, 1)
    return value.T if path[-1] == 'kernel' else value

  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  return {
      pretrained.torch_name(path): torch_layout(path, v[...])
      for path, v in flat
  }


def test_a_mis_shaped_key_is_named():
  model = pretrained.ARCHITECTURES['vit_s16'][0](
      num_classes=10, depth=4, rngs=nnx.Rngs(0)
  )
  checkpoint = _checkpoint_of(model)
  pretrained.load_into(model, checkpoint)
  checkpoint['blocks.3.attn.qkv.weight'] = np.zeros((1152, 385))
  with pytest.raises(
      pretrained.CheckpointMismatchError,
      match=r"'blocks\.3\.attn\.qkv\.weight' has shape",
  ):
    pretrained.load_into(model, checkpoint)


def test_an_unused_checkpoint_entry_is_named():
  model = pretrained.ARCHITECTURES['vit_s16'][0](
      num_classes=10, depth=1, rngs=nnx.Rngs(0)
  )
  checkpoint = _checkpoint_of(model)
  pretrained.load_into(model, checkpoint)
  checkpoint['blocks.1.norm1.weight'] = np.ones(384)
  with pytest.raises(
      pretrained.CheckpointMismatchError,
      match=r"no place for 'blocks\.1\.norm1\.weight'",
  ):
    pretrained.load_into(model, checkpoint)


def test_an_unknown_source_or_format_says_what_is_expected(tmp_path):
  with pytest.raises(FileNotFoundError, match='No checkpoint file'):
    pretrained.read_checkpoint(str(tmp_path / 'absent.safetensors'))
  odd = tmp_path / 'weights.npz'
  odd.write_bytes(b'')
  with pytest.raises(ValueError, match='.safetensors, .pth'):
    pretrained.read_checkpoint(str(odd))


@pytest.mark.parametrize(
    'architecture, expected',
    [('vit_s16', 22_050_664), ('resnet50', 25_557_032)],
)
def test_parameter_count_is_timms(architecture, expected):
  constructor = pretrained.ARCHITECTURES[architecture][0]
  model = nnx.eval_shape(
      lambda: constructor(num_classes=1000, rngs=nnx.Rngs(0))
  )
  count = sum(v.size for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
  reference = timm.create_model(TIMM_NAMES[architecture], pretrained=False)
  assert count == expected == sum(p.numel() for p in reference.parameters())
