"""Image input pipelines: CIFAR from TFDS, scikit-learn's digits, Grain batching.

Records are read with ``tfds.data_source`` (ArrayRecord, random access, no
TensorFlow at training time) and batched and augmented with Grain. Every epoch
is a deterministic dataset of batches: example order and augmentation depend
only on ``(seed, epoch, index)``, so a run resumes at batch ``k`` of epoch ``e``
by asking for exactly that batch, and each host reads its own slice of every
global batch.

Preparing CIFAR once needs TensorFlow (TFDS encodes the images with it); see
:data:`PREPARE_COMMAND`. ``digits`` needs nothing: it is scikit-learn's bundled
8x8 digits, upsampled to 32x32x3, the dataset of a first run.
"""

import dataclasses
import functools
from collections.abc import Sequence

import grain
import jax
import numpy as np

PREPARE_COMMAND = (
    'pip install tensorflow && '
    'tfds build {name} --file_format=array_record --data_dir={data_dir}')

# Per-channel statistics of the training images, as the papers' code uses them.
_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
_CIFAR100_STD = (0.2673, 0.2564, 0.2762)
_SPLIT_SEED = 0  # the 45k/5k split is fixed, whatever the training seed
_DIGITS_TRAIN = 1500


class DatasetNotFoundError(FileNotFoundError):
  """A dataset that has not been prepared; the message says how to prepare it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  splits: tuple[str, ...]
  flip: bool = True  # a mirrored digit is another glyph: no flips for digits


DATASETS = {
    'cifar10': DatasetInfo(10, _CIFAR10_MEAN, _CIFAR10_STD,
                           ('train', 'test', 'train45k', 'val5k')),
    'cifar100': DatasetInfo(100, _CIFAR100_MEAN, _CIFAR100_STD,
                            ('train', 'test', 'train45k', 'val5k')),
    'digits': DatasetInfo(10, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                          ('train', 'test'), flip=False),
}


def dataset_info(name: str) -> DatasetInfo:
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset {name!r}; choose one of '
                     f'{", ".join(DATASETS)}.')
  return DATASETS[name]


def split_45k_5k(num_examples: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
  """Fixed, disjoint train/validation indices of the CIFAR training set."""
  order = np.random.default_rng(_SPLIT_SEED).permutation(num_examples)
  validation = num_examples // 10
  return np.sort(order[validation:]), np.sort(order[:validation])


class _Subset(Sequence):
  """Random access to chosen rows of a data source."""

  def __init__(self, source, indices):
    self._source, self._indices = source, indices

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, i):
    return self._source[int(self._indices[i])]


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
  """Digits as uint8 32x32x3 images (nearest-neighbour upsampling) and labels."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)
  images = images.repeat(4, axis=1).repeat(4, axis=2)
  images = np.repeat(images[..., None], 3, axis=-1)
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
  return images[order], digits.target[order].astype(np.int64)


class _ArraySource(Sequence):

  def __init__(self, images, labels):
    self._images, self._labels = images, labels

  def __len__(self):
    return len(self._labels)

  def __getitem__(self, i):
    return {'image': self._images[i], 'label': self._labels[i]}


def data_source(dataset: str, split: str, data_dir: str | None = None):
  """Random access to the records `{'image': uint8 HWC, 'label'}` of a split."""
  info = dataset_info(dataset)
  if split not in info.splits:
    raise ValueError(f'Unknown split {split!r} of {dataset}; choose one of '
                     f'{", ".join(info.splits)}.')
  if dataset == 'digits':
    images, labels = _digits()
    rows = slice(None, _DIGITS_TRAIN) if split == 'train' else slice(
        _DIGITS_TRAIN, None)
    return _ArraySource(images[rows], labels[rows])

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds_split = 'test' if split == 'test' else 'train'
  where = data_dir or '~/tensorflow_datasets'
  prepare = PREPARE_COMMAND.format(name=dataset, data_dir=where)
  try:
    source = tfds.data_source(dataset, split=tfds_split, data_dir=data_dir,
                              download=False)
  except (NotImplementedError, AssertionError, FileNotFoundError,
          tfds.core.registered.DatasetNotFoundError) as error:
    # TFDS says "TFRecord is not supported" for a folder with nothing in it.
    if tfds.builder(dataset, data_dir=data_dir).is_prepared():
      raise DatasetNotFoundError(
          f'{dataset} in {where} is not in ArrayRecord format, which reading '
          f'without TensorFlow needs. Prepare it again with:\n  {prepare}'
      ) from error
    raise DatasetNotFoundError(
        f'{dataset} is not prepared in {where}. Prepare it once with:\n  '
        f'{prepare}') from error
  if split in ('train45k', 'val5k'):
    train, validation = split_45k_5k(len(source))
    return _Subset(source, train if split == 'train45k' else validation)
  return source


def _random_crop_and_flip(image, rng, padding, flip):
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = rng.integers(0, 2 * padding + 1, size=2)
  height, width = image.shape[:2]
  image = padded[top:top + height, left:left + width]
  return image[:, ::-1] if flip and rng.random() < 0.5 else image


def _cutout(image, rng, length):
  """DeVries and Taylor's Cutout: one square of zeros, clipped at the border."""
  height, width = image.shape[:2]
  y, x = rng.integers(0, height), rng.integers(0, width)
  image = image.copy()
  image[max(0, y - length // 2):y + length // 2,
        max(0, x - length // 2):x + length // 2] = 0.0
  return image


def _resize(image, size):
  return np.asarray(jax.image.resize(image, (size, size, image.shape[-1]),
                                     'bilinear'))


@dataclasses.dataclass(frozen=True)
class _Preprocess:
  """Record -> normalised float32 example; augmented when `train`."""
  mean: np.ndarray
  std: np.ndarray
  train: bool
  flip: bool
  cutout: int
  image_size: int

  def __call__(self, record, rng):
    image = np.asarray(record['image'])
    if self.train:
      image = _random_crop_and_flip(image, rng, padding=4, flip=self.flip)
    image = (image.astype(np.float32) / 255.0 - self.mean) / self.std
    if self.train and self.cutout:
      image = _cutout(image, rng, self.cutout)
    if image.shape[0] != self.image_size:
      image = _resize(image, self.image_size)
    return {'image': image.astype(np.float32),
            'label': np.int32(record['label']),
            'mask': np.bool_(True)}


def _derived_seed(*entropy: int) -> int:
  return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def _padding_example(image_size):
  return {'image': np.zeros((image_size, image_size, 3), np.float32),
          'label': np.int32(0), 'mask': np.bool_(False)}


def create_split(dataset: str, split: str, *, batch_size: int, train: bool,
                 seed: int = 0, epoch: int = 0, data_dir: str | None = None,
                 image_size: int = 32, cutout: int = 0) -> grain.MapDataset:
  """One epoch of batches of this host's share, as a random-access dataset.

  Training epochs are shuffled and augmented (4-pixel zero padding and a
  random 32x32 crop, a horizontal flip with probability 1/2 except for digits,
  optional Cutout)
  under ``(seed, epoch)`` and drop the last incomplete batch. Evaluation keeps
  every example: the last batch is padded, and ``mask`` is False on padding.
  Each host of a multi-host run reads rows ``process_index::process_count`` of
  every global batch, so ``batch_size`` is the global batch.

  Args:
    dataset: ``'cifar10'``, ``'cifar100'`` or ``'digits'``.
    split: ``'train'``, ``'test'``, and for CIFAR ``'train45k'``/``'val5k'``.
    batch_size: the global batch size.
    train: shuffle, augment and drop the remainder.
    seed: the data seed; with ``epoch``, fixes order and augmentation.
    epoch: which epoch's order to serve.
    data_dir: where TFDS keeps prepared datasets.
    image_size: the side the images are resized to (224 for ViT, ResNet-50).
    cutout: side of the Cutout square (0: none).

  Returns:
    A ``grain.MapDataset`` whose item ``k`` is batch ``k`` of the epoch: a dict
    of NumPy arrays ``image`` (B, S, S, 3) float32, ``label`` (B,) int32 and
    ``mask`` (B,) bool.
  """
  info = dataset_info(dataset)
  processes, index = jax.process_count(), jax.process_index()
  if batch_size % processes:
    raise ValueError(f'`batch_size` {batch_size} must divide over '
                     f'{processes} processes.')
  records = grain.MapDataset.source(data_source(dataset, split, data_dir))
  num_examples = len(records)
  if train:
    records = records.shuffle(seed=_derived_seed(seed, epoch, 0))
    num_batches = num_examples // batch_size
  else:
    num_batches = -(-num_examples // batch_size)
  preprocess = _Preprocess(np.asarray(info.mean, np.float32),
                           np.asarray(info.std, np.float32), train, info.flip,
                           cutout, image_size)
  examples = records.random_map(preprocess, seed=_derived_seed(seed, epoch, 1))

  def local_batch(batch_index):
    rows = range(batch_index * batch_size + index, (batch_index + 1) * batch_size,
                 processes)
    items = [examples[r] if r < num_examples else _padding_example(image_size)
             for r in rows]
    return {k: np.stack([item[k] for item in items]) for k in items[0]}

  return grain.MapDataset.range(num_batches).map(local_batch)


def batches(dataset: grain.MapDataset, start: int = 0, *, num_threads: int = 4):
  """Iterates `dataset` from batch `start`, reading ahead on threads."""
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=8)
  return iter(dataset.slice(slice(start, None)).to_iter_dataset(options))
