"""Input pipelines on scikit-learn's digits and on small generated CIFARs."""

import json
import os
import pathlib

import cifar_archives
import grain
import numpy as np
from PIL import Image
import pytest

from experiments import cifar, input_pipeline

ONE_HOST = grain.sharding.NoSharding()
# Normalisations under which served pixels can be traced back to stored ones.
IDENTITY = ((0.0,) * 3, (1.0,) * 3)  # served = stored / 255
SHIFTED = ((-1.0,) * 3, (1.0,) * 3)  # served = stored / 255 + 1; Cutout's 0
CIFAR_TRAIN = 65  # 13 in each of the five batches of CIFAR-10's archive
CIFAR_TEST = 64


@pytest.fixture(scope='module')
def cifar_data_dir(tmp_path_factory) -> str:
  """Small CIFAR-10 and CIFAR-100 of random images, prepared by their
  builders from archives in the official format."""
  root = tmp_path_factory.mktemp('cifar')
  downloads = root / 'downloads'
  downloads.mkdir()
  cifar_archives.write_cifar10(
      downloads / 'cifar-10-python.tar.gz', 13, num_test=CIFAR_TEST
  )
  cifar_archives.write_cifar100(
      downloads / 'cifar-100-python.tar.gz', CIFAR_TRAIN, CIFAR_TEST
  )
  with pytest.MonkeyPatch.context() as monkeypatch:
    for dataset, builder_class in cifar.BUILDERS.items():
      path = downloads / builder_class.ARCHIVE.filename
      monkeypatch.setattr(
          builder_class,
          'url_infos',
          {builder_class.ARCHIVE.url: cifar_archives.url_info(path)},
      )
      cifar.prepare(dataset, root / 'tfds', manual_dir=downloads)
  return str(root / 'tfds')


def _batches(dataset, split, count=None, **kwargs):
  kwargs.setdefault('shard_options', ONE_HOST)
  batches = input_pipeline.create_split(dataset, split, **kwargs)
  return (
      list(batches) if count is None else [next(batches) for _ in range(count)]
  )


def _stored_pixels(served):
  return np.round(served * 255).astype(np.uint8)


class _Crops:
  """Every 32x32 crop of the zero-padded stored images, found by content."""

  def __init__(self, stored_images, padding=4):
    size = stored_images.shape[1]
    self._padded = np.pad(
        stored_images, ((0, 0), (padding, padding), (padding, padding), (0, 0))
    )
    self._size = size
    self._by_hash = {}
    for top in range(2 * padding + 1):
      for left in range(2 * padding + 1):
        crops = np.ascontiguousarray(
            self._padded[:, top : top + size, left : left + size]
        )
        for index, crop in enumerate(crops):
          self._by_hash.setdefault(hash(crop.tobytes()), []).append(
              (index, top, left)
          )

  def find(self, served):
    """Every (stored index, top, left, mirrored) that produces `served`."""
    found = []
    for mirrored in (False, True):
      unflipped = np.ascontiguousarray(served[:, ::-1] if mirrored else served)
      for index, top, left in self._by_hash.get(hash(unflipped.tobytes()), []):
        crop = self._padded[
            index, top : top + self._size, left : left + self._size
        ]
        if np.array_equal(crop, unflipped):
          found.append((index, top, left, mirrored))
    return found


def test_dataset_info_and_names():
  num_classes, num_examples, image_size = input_pipeline.dataset_info('cifar10')
  assert (num_classes, image_size) == (10, 32)
  assert (
      num_examples['train45k'] + num_examples['val5k']
      == num_examples['train']
      == 50_000
  )
  assert input_pipeline.dataset_info('digits').num_examples == {
      'train': 1500,
      'test': 297,
  }
  with pytest.raises(ValueError, match='cifar10, cifar100, digits'):
    input_pipeline.dataset_info('imagenet')
  with pytest.raises(ValueError, match='train, test, train45k, val5k'):
    input_pipeline.create_split(
        'cifar10', 'validation', batch_size=8, train=False
    )


def test_digits_are_upsampled_grey_images():
  images, labels = input_pipeline.read_split('digits', 'train')
  assert images.shape == (1500, 32, 32, 3) and set(labels) == set(range(10))
  # Nearest-neighbour: 4x4 blocks of one grey level, 0 to 16 scaled to 255.
  blocks = images.reshape(1500, 8, 4, 8, 4, 3)
  assert (blocks == blocks[:, :, :1, :, :1, :1]).all()
  assert images.min() == 0 and images.max() == 255


def test_digits_batches_have_the_documented_shapes_types_and_ranges():
  train = input_pipeline.create_split(
      'digits', 'train', batch_size=32, train=True, seed=0, num_epochs=1
  )
  assert (train.steps_per_epoch, train.num_batches) == (1500 // 32, 1500 // 32)
  batch = next(train)
  assert batch['image'].shape == (32, 32, 32, 3)
  assert batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32 and batch['mask'].dtype == bool
  assert np.isfinite(batch['image']).all() and batch['mask'].all()
  assert set(batch['label']) <= set(range(10))
  test_images = np.concatenate([
      b['image']
      for b in _batches('digits', 'test', batch_size=297, train=False)
  ])
  # Normalised with the training images' statistics.
  assert abs(test_images.mean()) < 0.1 and 0.9 < test_images.std() < 1.1


def test_evaluation_serves_every_example_once_in_order_and_masks_padding():
  stored = input_pipeline.read_split('digits', 'test')
  batches = _batches(
      'digits', 'test', batch_size=64, train=False, mean_std=IDENTITY
  )
  assert len(batches) == 5  # ceil(297 / 64), the last one padded
  mask = np.concatenate([b['mask'] for b in batches])
  images = np.concatenate([b['image'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert mask.sum() == 297 and mask[:297].all()
  np.testing.assert_array_equal(_stored_pixels(images[mask]), stored.images)
  np.testing.assert_array_equal(labels[mask], stored.labels)
  assert not images[~mask].any()
  normalised = _batches('digits', 'test', batch_size=64, train=False)[-1]
  assert not normalised['image'][~normalised['mask']].any()


def test_hosts_split_every_global_batch_into_consecutive_blocks():
  for train in (True, False):
    kwargs = dict(batch_size=32, train=train, seed=5)
    whole = _batches('digits', 'test', 3, **kwargs)
    hosts = [
        _batches(
            'digits',
            'test',
            3,
            shard_options=grain.sharding.ShardOptions(
                shard_index=k, shard_count=2
            ),
            **kwargs,
        )
        for k in range(2)
    ]
    for step, batch in enumerate(whole):
      for key in batch:
        np.testing.assert_array_equal(
            batch[key], np.concatenate([host[step][key] for host in hosts])
        )
  with pytest.raises(ValueError, match='divide over 3 hosts'):
    input_pipeline.create_split(
        'digits',
        'train',
        batch_size=32,
        train=True,
        shard_options=grain.sharding.ShardOptions(shard_index=0, shard_count=3),
    )


def test_order_and_augmentation_are_fixed_by_the_seed_alone():
  def first_batches(seed, num_threads):
    return _batches(
        'digits',
        'train',
        2,
        batch_size=16,
        train=True,
        seed=seed,
        num_threads=num_threads,
    )

  reference = first_batches(0, num_threads=4)
  for a, b in zip(reference, first_batches(0, num_threads=0)):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  other = first_batches(1, num_threads=4)
  assert not np.array_equal(reference[0]['label'], other[0]['label'])


def test_every_epoch_is_a_new_permutation():
  epochs = _batches(
      'digits', 'train', batch_size=500, train=True, seed=0, num_epochs=2
  )
  first, second = (
      np.concatenate([b['label'] for b in epochs[k : k + 3]]) for k in (0, 3)
  )
  stored = input_pipeline.read_split('digits', 'train').labels
  # 1500 // 500 batches an epoch: every example once, in another order.
  np.testing.assert_array_equal(np.sort(first), np.sort(stored))
  np.testing.assert_array_equal(np.sort(second), np.sort(stored))
  assert not np.array_equal(first, second)


def test_restoring_the_state_mid_epoch_continues_with_the_same_batches():
  kwargs = dict(batch_size=64, train=True, seed=3, cutout=8)
  everything = _batches('digits', 'test', 7, **kwargs)  # 4 batches an epoch

  def iterator():
    return input_pipeline.create_split(
        'digits', 'test', shard_options=ONE_HOST, **kwargs
    )

  for stop in (2, 3, 4):  # mid-epoch, before and after the epoch's end
    interrupted = iterator()
    for _ in range(stop):
      next(interrupted)
    state = json.loads(json.dumps(interrupted.get_state()))
    resumed = iterator()
    resumed.set_state(state)
    for expected in everything[stop : stop + 3]:
      batch = next(resumed)
      np.testing.assert_array_equal(batch['image'], expected['image'])
      np.testing.assert_array_equal(batch['label'], expected['label'])


def test_training_repeats_indefinitely_unless_told_otherwise():
  batches = input_pipeline.create_split(
      'digits', 'train', batch_size=500, train=True, shard_options=ONE_HOST
  )
  assert batches.num_batches is None
  served = [next(batches)['label'] for _ in range(7)]  # into a third epoch
  assert not np.array_equal(served[0], served[3])


def test_digits_are_cropped_with_zero_padding_but_never_mirrored():
  crops = _Crops(input_pipeline.read_split('digits', 'train').images)
  batch = _batches(
      'digits', 'train', 1, batch_size=32, train=True, seed=0, mean_std=IDENTITY
  )[0]
  for served in _stored_pixels(batch['image']):
    assert any(not mirrored for *_, mirrored in crops.find(served))


def test_cifar_training_crops_flips_and_serves_a_permutation(cifar_data_dir):
  crops = _Crops(
      input_pipeline.read_split('cifar10', 'train', cifar_data_dir).images
  )
  batches = _batches(
      'cifar10',
      'train',
      data_dir=cifar_data_dir,
      batch_size=13,
      train=True,
      seed=0,
      num_epochs=2,
      mean_std=IDENTITY,
  )
  epochs = []
  for epoch in (batches[:5], batches[5:]):
    placements = [
        crops.find(served)
        for b in epoch
        for served in _stored_pixels(b['image'])
    ]
    # Random images: each served image comes from one stored image, one way.
    assert all(len(found) == 1 for found in placements)
    indices, tops, lefts, mirrored = zip(*(found[0] for found in placements))
    assert sorted(indices) == list(range(CIFAR_TRAIN))
    assert len(set(zip(tops, lefts))) > 10
    assert 8 <= sum(mirrored) <= 57  # Binomial(65, 1/2)
    epochs.append({found[0][0]: found[0][1:] for found in placements})
  # An example's crop and flip are drawn anew every epoch.
  assert sum(epochs[0][i] == epochs[1][i] for i in range(CIFAR_TRAIN)) < 8


def test_cutout_zeroes_one_square_after_normalisation(cifar_data_dir):
  length = 8
  batch = _batches(
      'cifar10',
      'train',
      1,
      data_dir=cifar_data_dir,
      batch_size=32,
      train=True,
      seed=0,
      cutout=length,
      mean_std=SHIFTED,
  )[0]
  sides = []
  for image in batch['image']:
    rows, columns = np.nonzero((image == 0).all(axis=-1))
    assert (image == 0).any(axis=-1).sum() == len(rows)  # all channels
    height = rows.max() - rows.min() + 1
    width = columns.max() - columns.min() + 1
    assert len(rows) == height * width  # one filled rectangle
    sides.append((height, width))
  assert max(max(s) for s in sides) == length
  assert (length, length) in sides
  evaluation = _batches(
      'cifar10',
      'test',
      1,
      data_dir=cifar_data_dir,
      batch_size=32,
      train=False,
      cutout=length,
      mean_std=SHIFTED,
  )[0]
  assert (evaluation['image'] > 0).all()


def test_resizing_follows_the_adaloss_code(cifar_data_dir):
  stored = input_pipeline.read_split('cifar100', 'test', cifar_data_dir)
  batch = _batches(
      'cifar100',
      'test',
      1,
      data_dir=cifar_data_dir,
      batch_size=4,
      train=False,
      image_size=224,
      mean_std=IDENTITY,
  )[0]
  # torchvision's Resize(256) on a PIL image, then CenterCrop(224).
  expected = [
      np.asarray(
          Image.fromarray(image).resize((256, 256), Image.Resampling.BILINEAR)
      )[16:240, 16:240]
      for image in stored.images[:4]
  ]
  np.testing.assert_array_equal(_stored_pixels(batch['image']), expected)
  train = _batches(
      'cifar100',
      'train',
      1,
      data_dir=cifar_data_dir,
      batch_size=4,
      train=True,
      image_size=224,
      cutout=16,
  )[0]
  assert train['image'].shape == (4, 224, 224, 3)
  assert np.isfinite(train['image']).all() and train['label'].max() < 100


def test_training_at_another_size_crops_and_flips_the_resized_image(
    cifar_data_dir,
):
  stored = input_pipeline.read_split('cifar10', 'train', cifar_data_dir)
  size, resized = 40, 46  # 46 = round(40 * 256 / 224)
  resized_images = np.stack([
      np.asarray(
          Image.fromarray(image).resize(
              (resized, resized), Image.Resampling.BILINEAR
          )
      )
      for image in stored.images
  ])
  batch = _batches(
      'cifar10',
      'train',
      1,
      data_dir=cifar_data_dir,
      batch_size=16,
      train=True,
      seed=0,
      image_size=size,
      mean_std=IDENTITY,
  )[0]
  mirrored = []
  for served, label in zip(_stored_pixels(batch['image']), batch['label']):
    candidates = resized_images[stored.labels == label]
    found = {
        (top, left, flipped)
        for top in range(resized - size + 1)
        for left in range(resized - size + 1)
        for flipped in (False, True)
        if (
            candidates[:, top : top + size, left : left + size]
            == (served[:, ::-1] if flipped else served)
        )
        .all(axis=(1, 2, 3))
        .any()
    }
    assert len(found) == 1
    mirrored.append(found.pop()[2])
  assert 0 < sum(mirrored) < 16


def test_the_45k_5k_split_is_fixed_stratified_disjoint_and_complete():
  labels = np.random.default_rng(7).permutation(np.arange(50_000) % 100)
  train, validation = input_pipeline.split_45k_5k(labels)
  assert (len(train), len(validation)) == (45_000, 5_000)
  assert np.intersect1d(train, validation).size == 0
  np.testing.assert_array_equal(
      np.union1d(train, validation), np.arange(50_000)
  )
  np.testing.assert_array_equal(np.bincount(labels[validation]), [50] * 100)
  again_train, again_validation = input_pipeline.split_45k_5k(labels)
  np.testing.assert_array_equal(train, again_train)
  np.testing.assert_array_equal(validation, again_validation)


def test_the_45k_5k_splits_of_a_small_cifar(cifar_data_dir):
  whole = input_pipeline.read_split('cifar10', 'train', cifar_data_dir)
  train = input_pipeline.read_split('cifar10', 'train45k', cifar_data_dir)
  validation = input_pipeline.read_split('cifar10', 'val5k', cifar_data_dir)
  counts = np.bincount(whole.labels)
  assert len(validation.labels) == sum(round(c / 10) for c in counts)
  assert len(train.labels) + len(validation.labels) == CIFAR_TRAIN

  def as_bytes(images):
    return {image.tobytes() for image in images}

  assert as_bytes(train.images) | as_bytes(validation.images) == as_bytes(
      whole.images
  )
  assert not as_bytes(train.images) & as_bytes(validation.images)
  batches = input_pipeline.create_split(
      'cifar10',
      'val5k',
      batch_size=4,
      train=False,
      data_dir=cifar_data_dir,
      shard_options=ONE_HOST,
  )
  assert batches.steps_per_epoch == -(-len(validation.labels) // 4)


@pytest.mark.parametrize('folder', ['', 'missing'])
def test_a_missing_dataset_says_how_to_prepare_it(tmp_path, folder):
  data_dir = tmp_path / folder
  with pytest.raises(input_pipeline.DatasetNotFoundError) as error:
    input_pipeline.create_split(
        'cifar10', 'train', batch_size=8, train=True, data_dir=str(data_dir)
    )
  assert isinstance(error.value, FileNotFoundError)
  assert str(error.value) == (
      f'cifar10 is not prepared in {data_dir}. A training command with '
      '--dataset cifar10 prepares it on first use, or prepare it with:\n'
      f'  python -m experiments prepare cifar10 --data-dir {data_dir}'
  )


def test_a_dataset_with_damaged_metadata_says_how_to_prepare_it_again(tmp_path):
  data_dir = pathlib.Path(cifar.builder('cifar10', tmp_path).data_dir)
  os.makedirs(data_dir)
  (data_dir / 'dataset_info.json').write_text('{"name": "cifar')  # cut short
  with pytest.raises(
      input_pipeline.DatasetCorruptError,
      match=f'cifar10 in {tmp_path} cannot be read '
      r'\(ParseError: .*\)\. Prepare it again with:\n'
      f'  python -m experiments prepare cifar10 --data-dir {tmp_path} '
      '--overwrite',
  ):
    input_pipeline.read_split('cifar10', 'test', data_dir=str(tmp_path))


def test_a_training_batch_larger_than_the_split_is_refused():
  with pytest.raises(ValueError, match='exceeds the 297 examples'):
    input_pipeline.create_split('digits', 'test', batch_size=512, train=True)
