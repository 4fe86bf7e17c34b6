"""Input pipelines on scikit-learn's digits and on TFDS's mock CIFAR."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import input_pipeline


@pytest.fixture
def mock_cifar():
  with tfds.testing.mock_data(num_examples=40,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _all(dataset):
  return list(input_pipeline.batches(dataset))


def test_digits_batches_have_the_documented_shapes_types_and_ranges():
  train = input_pipeline.create_split('digits', 'train', batch_size=32,
                                      train=True, seed=0)
  assert len(train) == 1500 // 32
  batch = train[0]
  assert batch['image'].shape == (32, 32, 32, 3)
  assert batch['image'].dtype == np.float32 and batch['label'].dtype == np.int32
  assert np.all(np.isfinite(batch['image']))
  assert -1.01 <= batch['image'].min() and batch['image'].max() <= 1.01
  assert set(np.unique(batch['label'])) <= set(range(10))
  assert batch['mask'].all()


def test_evaluation_covers_every_example_once_and_masks_the_padding():
  test = input_pipeline.create_split('digits', 'test', batch_size=64,
                                     train=False)
  batches = _all(test)
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.sum() == 1797 - 1500 and len(masks) == 64 * 5
  labels = np.concatenate([b['label'][b['mask']] for b in batches])
  source = input_pipeline.data_source('digits', 'test')
  np.testing.assert_array_equal(labels, [source[i]['label']
                                         for i in range(len(source))])


def test_training_order_and_augmentation_are_fixed_by_seed_and_epoch():
  def first_batch(seed, epoch):
    return input_pipeline.create_split('digits', 'train', batch_size=16,
                                       train=True, seed=seed, epoch=epoch)[0]

  np.testing.assert_array_equal(first_batch(0, 0)['image'],
                                first_batch(0, 0)['image'])
  assert not np.array_equal(first_batch(0, 0)['label'], first_batch(1, 0)['label'])
  assert not np.array_equal(first_batch(0, 0)['label'], first_batch(0, 1)['label'])


def test_resuming_mid_epoch_serves_the_same_batches():
  epoch = input_pipeline.create_split('digits', 'train', batch_size=100,
                                      train=True, seed=3, epoch=2)
  everything = _all(epoch)
  resumed = list(input_pipeline.batches(epoch, start=6))
  assert len(resumed) == len(everything) - 6
  for a, b in zip(everything[6:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])


def test_cifar_from_tfds_mock_data(mock_cifar):
  del mock_cifar
  train = input_pipeline.create_split('cifar10', 'train', batch_size=8,
                                      train=True, seed=0, cutout=8)
  batch = train[0]
  assert batch['image'].shape == (8, 32, 32, 3)
  assert np.all(np.isfinite(batch['image']))
  # Cutout zeroes a square of the normalised image.
  assert (batch['image'] == 0).all(axis=-1).any()
  resized = input_pipeline.create_split('cifar100', 'test', batch_size=8,
                                        train=False, image_size=64)[0]
  assert resized['image'].shape == (8, 64, 64, 3)
  assert resized['label'].max() < 100


def test_the_45k_5k_split_is_fixed_disjoint_and_complete():
  train, validation = input_pipeline.split_45k_5k()
  assert len(train) == 45_000 and len(validation) == 5_000
  assert not set(train) & set(validation)
  assert len(set(train) | set(validation)) == 50_000
  again_train, _ = input_pipeline.split_45k_5k()
  np.testing.assert_array_equal(train, again_train)


def test_the_45k_5k_split_of_mock_cifar(mock_cifar):
  del mock_cifar
  train = input_pipeline.data_source('cifar10', 'train45k')
  validation = input_pipeline.data_source('cifar10', 'val5k')
  assert (len(train), len(validation)) == (36, 4)


def test_a_missing_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(input_pipeline.DatasetNotFoundError,
                     match='tfds build cifar10 --file_format=array_record'):
    input_pipeline.create_split('cifar10', 'train', batch_size=8, train=True,
                                data_dir=str(tmp_path))


def test_unknown_names_list_the_choices():
  with pytest.raises(ValueError, match='cifar10'):
    input_pipeline.dataset_info('imagenet')
  with pytest.raises(ValueError, match='train45k'):
    input_pipeline.data_source('cifar10', 'validation')


def test_digits_are_cropped_but_never_mirrored():
  assert not input_pipeline.dataset_info('digits').flip
  assert input_pipeline.dataset_info('cifar10').flip
  image = np.zeros((32, 32, 3), np.uint8)
  image[:, 2] = 255  # a stroke near the left edge

  def stroke_columns(flip):
    columns = set()
    for seed in range(40):
      out = input_pipeline._random_crop_and_flip(  # pylint: disable=protected-access
          image, np.random.default_rng(seed), padding=4, flip=flip)
      columns.add(int(np.argmax(out[:, :, 0].sum(axis=0))))
    return columns

  assert max(stroke_columns(flip=False)) <= 6  # shifted by the crop only
  assert max(stroke_columns(flip=True)) >= 25  # some mirrored
