"""Image input pipelines: CIFAR-10/100 from TFDS and scikit-learn's digits.

Modelled on the Flax ImageNet example's input pipeline, without TensorFlow:
CIFAR is read with ``tfds.data_source`` (ArrayRecord files, random access) and
batched and augmented with Grain.

* **Data.** A split is read once per process into memory and kept there (the
  50,000 CIFAR training images take 150 MB), so an epoch costs only its
  augmentation. CIFAR is the dataset ``experiments.cifar`` builds from the
  official archive, images stored as uint8 arrays; see
  :data:`PREPARE_COMMAND`. ``digits`` is scikit-learn's bundled 8x8 digits,
  upsampled to 32x32x3: no download, the dataset of a first run.
* **Augmentation** (training): a random 32x32 crop of the image padded with 4
  zero pixels on each side, as PyTorch's ``RandomCrop(32, padding=4)``; a
  horizontal flip with probability 1/2 (not for digits: a mirrored digit is
  another glyph); per-channel normalisation; optionally Cutout. At another
  ``image_size`` (224 to fine-tune ViT or ResNet-50) the crop is instead a
  random ``image_size`` crop of the image resized bilinearly to
  ``image_size * 8 / 7`` (256 for 224), and evaluation takes the centre crop,
  as the AdaLoss code's ``Resize(256)`` and ``RandomCrop(224)`` or
  ``CenterCrop(224)``.
* **Order and randomness.** Epoch ``e`` of a training split is a permutation
  drawn under ``(seed, e)``; the augmentation of example ``i`` in epoch ``e``
  draws from a counter-based generator (Philox) keyed by ``seed`` at counter
  ``(e, i)``. Every batch is therefore a function of ``seed`` and its position
  alone: the iterator resumes from a saved position (:class:`BatchIterator`),
  and neither the number of reader threads nor the number of hosts changes a
  batch. Grain maps these examples, batches them and assembles batches ahead
  on threads.
* **Batches.** A training epoch has ``n // batch_size`` full batches; the last
  ``n % batch_size`` examples of each shuffled epoch are left out. Evaluation
  keeps every example in order: the last batch is padded with zero images,
  and ``mask`` is False on the padding, as in the Flax examples.
* **Hosts.** ``batch_size`` is the global batch. Host ``k`` of ``p`` (Grain's
  ``ShardByJaxProcess``: ``jax.process_index()`` of ``jax.process_count()``)
  gets rows ``[k * b, (k + 1) * b)`` of every global batch, ``b =
  batch_size // p``, so the hosts' local batches laid end to end in process
  order are the global batch; every host serves the same number of batches.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import logging
import sys
from typing import Any, NamedTuple

import grain
import numpy as np
from PIL import Image

PREPARE_COMMAND = 'python -m experiments prepare {name} --data-dir {data_dir}'
"""Prepares a CIFAR dataset once (``experiments.cifar``: no TensorFlow needed).

A training command with ``--dataset cifar10`` or ``cifar100`` does it on first
use; this command does it ahead, e.g. on a machine that can download.
"""

DATASETS = ('cifar10', 'cifar100', 'digits')
_CIFAR_SPLITS = {
    'train': 50_000,
    'test': 10_000,
    'train45k': 45_000,
    'val5k': 5_000,
}
_DIGITS_TRAIN = 1500
_DIGITS_SPLITS = {'train': _DIGITS_TRAIN, 'test': 1797 - _DIGITS_TRAIN}
_NUM_CLASSES = {'cifar10': 10, 'cifar100': 100, 'digits': 10}
_IMAGE_SIZE = 32
_PADDING = 4
_RESIZE_RATIO = 256 / 224

# Per-channel mean and standard deviation of the training images, as in
# Zhuang et al.'s code. AdaLoss's code uses (0.5071, 0.4867, 0.4408) and
# (0.2675, 0.2565, 0.2761) for CIFAR-100; AdaDiff's uses (0.4914, 0.4822,
# 0.4465) and (0.2023, 0.1994, 0.2010) for both datasets: pass `mean_std`.
CIFAR10_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_MEAN_STD = ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762))

# The 45k/5k split and the digits split are fixed, whatever the training seed.
_SPLIT_SEED = 0
_VALIDATION_FRACTION = 0.1
# Domain separation of the streams derived from the training seed.
_SHUFFLE_STREAM, _AUGMENT_STREAM = 0, 1


class DatasetNotFoundError(FileNotFoundError):
  """A dataset that is not prepared; the message says how to prepare it."""


class DatasetCorruptError(ValueError):
  """A prepared dataset whose files cannot be read; the message says how to
  prepare it again."""


class DatasetInfo(NamedTuple):
  """What a model and a training loop need to know about a dataset."""

  num_classes: int
  num_examples: Mapping[str, int]  # per split
  image_size: int  # side of the stored square images


def dataset_info(name: str) -> DatasetInfo:
  """The number of classes, examples per split and image side of a dataset.

  Example:
    >>> from experiments import input_pipeline
    >>> num_classes, num_examples, image_size = input_pipeline.dataset_info(
    ...     'cifar100')
    >>> num_classes, num_examples['val5k'], image_size
    (100, 5000, 32)

  Args:
    name: one of :data:`DATASETS`.

  Returns:
    A :class:`DatasetInfo`, a named tuple
    ``(num_classes, num_examples, image_size)``.

  Raises:
    ValueError: an unknown name; the message lists the known ones.
  """
  if name not in DATASETS:
    raise ValueError(
        f'Unknown dataset {name!r}; choose one of {", ".join(DATASETS)}.'
    )
  splits = _DIGITS_SPLITS if name == 'digits' else _CIFAR_SPLITS
  return DatasetInfo(_NUM_CLASSES[name], dict(splits), _IMAGE_SIZE)


def split_45k_5k(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The fixed train/validation indices of a training set, stratified by class.

  A tenth of each class goes to validation, as in the AdaLoss code (450
  training and 50 validation images per CIFAR-100 class, 4,500 and 500 per
  CIFAR-10 class), chosen under a fixed seed independent of the training seed.

  Example:
    >>> import numpy as np
    >>> from experiments import input_pipeline
    >>> labels = np.arange(50_000) % 100
    >>> train, validation = input_pipeline.split_45k_5k(labels)
    >>> len(train), len(validation)
    (45000, 5000)

  Args:
    labels: the class of every example of the training set.

  Returns:
    ``(train, validation)``: sorted, disjoint index arrays that together cover
    every example.

  References:
    Wu, Xie, Du and Ward, `AdaLoss: A computationally-efficient and provably
    convergent adaptive gradient method <https://arxiv.org/abs/2109.08282>`_,
    AAAI 2022.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(_SPLIT_SEED)
  validation = []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    validation.append(members[: round(len(members) * _VALIDATION_FRACTION)])
  validation = np.sort(np.concatenate(validation))
  train = np.setdiff1d(np.arange(len(labels)), validation)
  return train, validation


class StoredSplit(NamedTuple):
  """The images and labels of a split as stored."""

  images: np.ndarray  # (n, 32, 32, 3) uint8
  labels: np.ndarray  # (n,) int32


@functools.cache
def _digits() -> tuple[StoredSplit, StoredSplit]:
  """Digits as 32x32x3 uint8 images: train and test under a fixed split.

  Each 8x8 pixel becomes a 4x4 block (nearest-neighbour upsampling), its grey
  level, 0 to 16, is scaled to 0 to 255 and copied to the three channels.
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)
  scale = _IMAGE_SIZE // images.shape[1]
  images = images.repeat(scale, axis=1).repeat(scale, axis=2)
  images = np.repeat(images[..., None], 3, axis=-1)
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
  train, test = order[:_DIGITS_TRAIN], order[_DIGITS_TRAIN:]
  return (
      StoredSplit(images[train], labels[train]),
      StoredSplit(images[test], labels[test]),
  )


def _corrupt(
    name: str, data_dir: str | None, error: Exception
) -> DatasetCorruptError:
  from experiments import cifar  # pylint: disable=g-import-not-at-top

  root = data_dir or cifar.DEFAULT_DATA_DIR
  reason = (str(error).strip().splitlines() or [''])[0]
  command = PREPARE_COMMAND.format(name=name, data_dir=root)
  return DatasetCorruptError(
      f'{name} in {root} cannot be read ({type(error).__name__}: {reason}). '
      f'Prepare it again with:\n  {command} --overwrite'
  )


def _open_tfds(name: str, split: str, data_dir: str | None):
  """A split's ArrayRecord source, or one clear error if it is not readable."""
  # Imported here: TFDS takes seconds to import, and digits needs none of it.
  from experiments import cifar  # pylint: disable=g-import-not-at-top

  try:
    builder = cifar.builder(name, data_dir)
  # TFDS's constructor parses the metadata of a prepared dataset.
  except Exception as error:  # pylint: disable=broad-exception-caught
    raise _corrupt(name, data_dir, error) from error
  try:
    return builder.as_data_source(split)
  # TFDS raises AssertionError, KeyError or FileNotFoundError for a dataset
  # that is not there, depending on what the folder holds.
  except Exception as error:  # pylint: disable=broad-exception-caught
    opening_error = error
  if not builder.is_prepared():
    command = PREPARE_COMMAND.format(name=name, data_dir=builder.data_dir_root)
    raise DatasetNotFoundError(
        f'{name} is not prepared in {builder.data_dir_root}. A training '
        f'command with --dataset {name} prepares it on first use, or '
        f'prepare it with:\n  {command}'
    ) from opening_error
  raise _corrupt(name, data_dir, opening_error) from opening_error


def prepare(
    dataset: str, data_dir: str | None = None, download_dir: str | None = None
) -> None:
  """Prepares CIFAR once, on first use (``experiments.cifar.prepare``).

  Digits needs nothing. A CIFAR dataset already prepared in ``data_dir`` is
  left as it is; otherwise its archive is read from ``download_dir`` if given,
  else downloaded.

  Args:
    dataset: one of :data:`DATASETS`.
    data_dir: where TFDS keeps prepared datasets (TFDS's default if None).
    download_dir: a folder with the official archive
      (``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz``).

  Raises:
    FileNotFoundError: ``download_dir`` lacks the archive, or it cannot be
      downloaded.
    ValueError: an unknown dataset, or an archive that is not the official
      one (``experiments.cifar.ArchiveError``).
  """
  dataset_info(dataset)
  if dataset == 'digits':
    return
  from experiments import cifar  # pylint: disable=g-import-not-at-top

  cifar.prepare(dataset, data_dir, manual_dir=download_dir)


def read_records(source: Any) -> StoredSplit:
  """Every record of a TFDS data source, in order, as a split's arrays.

  The one reading loop of CIFAR, used for the datasets of
  ``experiments.cifar`` and, by ``benchmarks/cifar_read.py``, for TFDS's own.

  Args:
    source: ``tfds.data_source``'s, or a builder's ``as_data_source``: records
      with ``'image'`` (HWC uint8) and ``'label'``.

  Returns:
    A :class:`StoredSplit`.
  """
  # One call for all records: ArrayRecord reads them twice as fast as one by
  # one.
  records = source.__getitems__(range(len(source)))
  return StoredSplit(
      np.stack([record['image'] for record in records]),
      np.array([record['label'] for record in records], np.int32),
  )


_TFDS_CACHE: dict[tuple[Any, ...], StoredSplit] = {}


def _read_tfds(name: str, split: str, data_dir: str | None) -> StoredSplit:
  """A TFDS split in memory, read once per process."""
  source = _open_tfds(name, split, data_dir)
  key = (name, split, str(source.dataset_info.data_dir), len(source))
  if key not in _TFDS_CACHE:
    logging.info('Reading %d records of %s/%s.', len(source), name, split)
    try:
      _TFDS_CACHE[key] = read_records(source)
    # ArrayRecord raises RuntimeError for a damaged file, protobuf a
    # DecodeError for a damaged record.
    except Exception as error:  # pylint: disable=broad-exception-caught
      raise _corrupt(name, data_dir, error) from error
  return _TFDS_CACHE[key]


def read_split(
    dataset: str, split: str, data_dir: str | None = None
) -> StoredSplit:
  """The stored images and labels of a split, in order, without augmentation.

  Example:
    >>> from experiments import input_pipeline
    >>> images, labels = input_pipeline.read_split('digits', 'test')
    >>> images.shape, images.dtype, labels.shape, labels.dtype
    ((297, 32, 32, 3), dtype('uint8'), (297,), dtype('int32'))

  Args:
    dataset: one of :data:`DATASETS`.
    split: a split of ``dataset_info(dataset).num_examples``.
    data_dir: where TFDS keeps prepared datasets (TFDS's default if None).

  Returns:
    A :class:`StoredSplit`, the named tuple ``(images, labels)``.

  Raises:
    ValueError: an unknown dataset or split.
    DatasetNotFoundError: CIFAR is not prepared in ``data_dir``.
    DatasetCorruptError: its files in ``data_dir`` cannot be read.
  """
  info = dataset_info(dataset)
  if split not in info.num_examples:
    raise ValueError(
        f'Unknown split {split!r} of {dataset}; choose one of '
        f'{", ".join(info.num_examples)}.'
    )
  if dataset == 'digits':
    train, test = _digits()
    return train if split == 'train' else test
  arrays = _read_tfds(dataset, 'test' if split == 'test' else 'train', data_dir)
  if split in ('train45k', 'val5k'):
    train, validation = split_45k_5k(arrays.labels)
    rows = train if split == 'train45k' else validation
    arrays = StoredSplit(arrays.images[rows], arrays.labels[rows])
  return arrays


def _default_mean_std(dataset: str) -> tuple[Sequence[float], Sequence[float]]:
  """(mean, std) per channel; digits' are those of its training images."""
  if dataset == 'cifar10':
    return CIFAR10_MEAN_STD
  if dataset == 'cifar100':
    return CIFAR100_MEAN_STD
  pixels = _digits()[0].images / 255.0
  return (pixels.mean(),) * 3, (pixels.std(),) * 3


@dataclasses.dataclass(frozen=True)
class _Augment:
  """A stored uint8 image -> the served float32 image.

  Given a generator (training): a random crop, a flip, Cutout; without
  (evaluation): the centre. At the stored size, normalises first, where it is
  cheapest, and pads with the normalised value of black; at another size,
  resizes the uint8 image with Pillow and crops it, then normalises, as
  torchvision does.
  """

  # 1 / (255 * std) and mean / std, repeated along a row of `image_size`
  # pixels: NumPy's inner loops over 3 values per pixel take four times longer.
  row_scale: np.ndarray
  row_offset: np.ndarray
  image_size: int
  flip: bool
  cutout: int

  def _normalise(self, pixels: np.ndarray) -> np.ndarray:
    rows = pixels.reshape(self.image_size, -1)
    image = np.multiply(rows, self.row_scale, dtype=np.float32)
    image -= self.row_offset
    return image.reshape(pixels.shape)

  def __call__(
      self, pixels: np.ndarray, rng: np.random.Generator | None
  ) -> np.ndarray:
    stored, size = pixels.shape[0], self.image_size
    if size == stored:
      image = self._normalise(pixels)
      if rng is not None:
        canvas = np.empty((stored + 2 * _PADDING,) * 2 + (3,), np.float32)
        canvas[...] = -self.row_offset[:3]
        canvas[_PADDING : _PADDING + stored, _PADDING : _PADDING + stored] = (
            image
        )
        top, left = rng.integers(2 * _PADDING + 1, size=2)
        image = canvas[top : top + size, left : left + size]
    else:
      resized = round(size * _RESIZE_RATIO)
      margin = resized - size
      top, left = (
          rng.integers(margin + 1, size=2)
          if rng is not None
          else (round(margin / 2),) * 2
      )
      image = np.asarray(
          Image.fromarray(pixels).resize(
              (resized, resized), Image.Resampling.BILINEAR
          )
      )
      image = self._normalise(image[top : top + size, left : left + size])
    if rng is not None and self.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    image = np.ascontiguousarray(image)
    if rng is not None and self.cutout:
      # DeVries and Taylor's code: after normalisation, a square of side
      # `cutout` centred on a uniformly drawn pixel, clipped at the border.
      y, x = rng.integers(size, size=2)
      half = self.cutout // 2
      image[max(0, y - half) : y + half, max(0, x - half) : x + half] = 0.0
    return image


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order of a training epoch.

  A permutation drawn once per epoch: cheaper than Grain's ``shuffle``, which
  computes every shuffled index anew, and free of its reuse of the orders of
  seed ``s + 1`` as the later epochs of seed ``s``.
  """
  return np.random.default_rng(
      np.random.SeedSequence(seed, spawn_key=(_SHUFFLE_STREAM, epoch))
  ).permutation(num_examples)


@dataclasses.dataclass(frozen=True)
class _Examples:
  """This host's examples, indexed in serving order over all epochs.

  Flat index ``j`` is row ``r`` of this host's share of global batch ``b`` of
  epoch ``e``; that row holds the example at position ``b * batch_size +
  shard_index * local_batch_size + r`` of the epoch's order.
  """

  arrays: StoredSplit
  augment: _Augment
  seed: int | None  # None: evaluation, in stored order
  key: np.ndarray | None  # the Philox key of the augmentation generators
  batch_size: int
  local_batch_size: int
  shard_index: int
  steps_per_epoch: int

  def __call__(self, flat_index: int) -> dict[str, np.ndarray]:
    epoch, offset = divmod(
        flat_index, self.steps_per_epoch * self.local_batch_size
    )
    step, row = divmod(offset, self.local_batch_size)
    position = (
        step * self.batch_size + self.shard_index * self.local_batch_size + row
    )
    num_examples = len(self.arrays.labels)
    if position >= num_examples:  # the padding of an evaluation batch
      size = self.augment.image_size
      return {
          'image': np.zeros((size, size, 3), np.float32),
          'label': np.int32(0),
          'mask': np.False_,
      }
    if self.seed is None:
      index, rng = position, None
    else:
      index = int(_permutation(self.seed, epoch, num_examples)[position])
      rng = np.random.Generator(
          np.random.Philox(key=self.key, counter=[0, 0, epoch, index])
      )
    return {
        'image': self.augment(self.arrays.images[index], rng),
        'label': self.arrays.labels[index],
        'mask': np.True_,
    }


class BatchIterator(grain.DatasetIterator):
  """Batches of one split, with a position that can be saved and restored.

  A ``grain.DatasetIterator``: ``get_state()`` is ``{'next_index': k}``, ``k``
  the number of batches served so far, and ``set_state`` resumes at any such
  position, so Grain's Orbax handler (``grain.checkpoint.CheckpointSave``)
  checkpoints it, and a run that saved only its step ``s`` resumes its data
  with ``set_state({'next_index': s})``.

  Example:
    >>> from experiments import input_pipeline
    >>> def digits():
    ...   return input_pipeline.create_split(
    ...       'digits', 'train', batch_size=100, train=True, seed=0)
    >>> batches = digits()
    >>> _ = next(batches), next(batches)
    >>> state = batches.get_state()
    >>> state
    {'next_index': 2}
    >>> resumed = digits()
    >>> resumed.set_state(state)
    >>> bool((next(resumed)['image'] == next(batches)['image']).all())
    True

  Attributes:
    steps_per_epoch: batches per pass over the split.
    num_batches: batches in all, or None if training repeats indefinitely.
  """

  def __init__(
      self,
      batches: grain.IterDataset,
      steps_per_epoch: int,
      num_batches: int | None,
  ):
    super().__init__(iter(batches))
    self.steps_per_epoch = steps_per_epoch
    self.num_batches = num_batches

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state)


def create_split(
    dataset: str,
    split: str,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    data_dir: str | None = None,
    image_size: int = _IMAGE_SIZE,
    cutout: int = 0,
    num_epochs: int | None = None,
    mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
    shard_options: grain.sharding.ShardOptions | None = None,
    num_threads: int = 4,
    prefetch_buffer_size: int = 4,
) -> BatchIterator:
  """This host's batches of a split, as an iterator with a resumable position.

  See the module's documentation for the augmentation, the order and the
  split of every global batch across hosts.

  Example:
    >>> from experiments import input_pipeline
    >>> batches = input_pipeline.create_split(
    ...     'digits', 'train', batch_size=64, train=True, seed=0)
    >>> batch = next(batches)
    >>> batch['image'].shape, batch['image'].dtype, batch['label'].dtype
    ((64, 32, 32, 3), dtype('float32'), dtype('int32'))
    >>> batches.steps_per_epoch
    23

  Args:
    dataset: one of :data:`DATASETS`.
    split: ``'train'``, ``'test'``, and for CIFAR ``'train45k'`` and
      ``'val5k'`` (see :func:`split_45k_5k`).
    batch_size: the global batch size, a multiple of the number of hosts.
    train: shuffle and augment, and leave out each epoch's incomplete last
      batch; else serve every example in order and pad the last batch.
    seed: fixes the order and the augmentation of every epoch.
    data_dir: where TFDS keeps prepared datasets (TFDS's default if None).
    image_size: side of the served images; 32 keeps CIFAR's size.
    cutout: side of the Cutout square in training, in pixels of the served
      image (0: no Cutout).
    num_epochs: passes over the split; None repeats indefinitely when
      training and passes once otherwise.
    mean_std: per-channel ``(mean, std)`` of pixel values in [0, 1] to
      normalise with, instead of the dataset's own.
    shard_options: this host's index and the number of hosts; Grain's
      ``ShardByJaxProcess()`` if None.
    num_threads: threads that assemble batches ahead of use.
    prefetch_buffer_size: batches assembled ahead of use.

  Returns:
    A :class:`BatchIterator` of dicts of NumPy arrays: ``image`` float32
    ``(batch_size // hosts, image_size, image_size, 3)``, ``label`` int32 and
    ``mask`` bool (False on evaluation padding).

  Raises:
    ValueError: an unknown dataset or split, or a batch size that does not
      divide over the hosts or exceeds a training split.
    DatasetNotFoundError: CIFAR is not prepared in ``data_dir``; the message
      gives the command that prepares it.
    DatasetCorruptError: its files in ``data_dir`` cannot be read; the
      message gives the command that prepares them again.
  """
  arrays = read_split(dataset, split, data_dir)
  shard = shard_options or grain.sharding.ShardByJaxProcess()
  if batch_size % shard.shard_count:
    raise ValueError(
        f'batch_size {batch_size} does not divide over '
        f'{shard.shard_count} hosts.'
    )
  num_examples = len(arrays.labels)
  if train and batch_size > num_examples:
    raise ValueError(
        f'batch_size {batch_size} exceeds the {num_examples} '
        f'examples of {dataset}/{split}.'
    )
  if image_size < _IMAGE_SIZE:
    raise ValueError(
        f'image_size {image_size} is below the stored {_IMAGE_SIZE}.'
    )
  mean, std = (
      np.asarray(v, np.float32) for v in mean_std or _default_mean_std(dataset)
  )
  augment = _Augment(
      np.tile(1 / (255 * std), image_size),
      np.tile(mean / std, image_size),
      image_size,
      flip=dataset != 'digits',
      cutout=cutout,
  )

  if train:
    steps_per_epoch = num_examples // batch_size
    key = np.random.SeedSequence(
        seed, spawn_key=(_AUGMENT_STREAM,)
    ).generate_state(2, np.uint64)
    examples_seed = seed
  else:
    steps_per_epoch = -(-num_examples // batch_size)
    examples_seed = key = None
    num_epochs = num_epochs or 1
  local_batch_size = batch_size // shard.shard_count
  examples = _Examples(
      arrays,
      augment,
      examples_seed,
      key,
      batch_size,
      local_batch_size,
      shard.shard_index,
      steps_per_epoch,
  )

  num_batches = None if num_epochs is None else num_epochs * steps_per_epoch
  flat_indices = grain.MapDataset.range(
      sys.maxsize if num_batches is None else num_batches * local_batch_size
  )
  batches = flat_indices.map(examples).batch(local_batch_size)
  read_options = grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size
  )
  return BatchIterator(
      batches.to_iter_dataset(read_options), steps_per_epoch, num_batches
  )
