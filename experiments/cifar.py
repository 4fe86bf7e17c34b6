"""CIFAR-10 and CIFAR-100 as TFDS datasets, built and read without TensorFlow.

The source is the archive of Python pickles that the dataset's authors publish
and that torchvision and Keras download (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``), fetched by TFDS's download manager and checked
against the size and sha256 recorded in ``checksums.tsv`` beside this file.
Each pickled batch is a dict with ``b'data'``, a ``(n, 3072)`` uint8 array
whose rows are the red, green and blue 32x32 planes of an image, and the
labels: ``b'labels'`` for CIFAR-10, ``b'fine_labels'`` and ``b'coarse_labels'``
for CIFAR-100.

The datasets are ``cifar10_arrays`` and ``cifar100_arrays``, split ``train``
(50,000 images) and ``test`` (10,000), in the archive's order (CIFAR-10's
training set is ``data_batch_1`` to ``data_batch_5``). An example is
``{'image': (32, 32, 3) uint8, 'label': int64}``, and for CIFAR-100 also
``'coarse_label'`` (its 20 superclasses). Images are stored as raw arrays, not
PNG, so nothing needs TensorFlow to encode or decode them, and the files are
ArrayRecord, read with ``tfds.data_source``. TFDS's own ``cifar10`` builder,
which reads the binary archive and needs TensorFlow, is left as it is.

:func:`prepare` builds a dataset once; ``manual_dir`` is a directory with the
archive downloaded by hand, for a machine without network access.
"""

import codecs
from collections.abc import Iterator, Sequence
import contextlib
import io
import logging
import os
import pickle
import tarfile
import time
from typing import Any, NamedTuple
import zlib

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import download_manager

_LOG = logging.getLogger(__name__)
DEFAULT_DATA_DIR = tfds.core.constants.DATA_DIR  # honours TFDS_DATA_DIR
_IMAGE_SHAPE = (32, 32, 3)
_PIXELS_PER_IMAGE = 32 * 32 * 3
_HOMEPAGE = 'https://www.cs.toronto.edu/~kriz/cifar.html'
_CITATION = """\
@techreport{krizhevsky2009learning,
  title={Learning Multiple Layers of Features from Tiny Images},
  author={Krizhevsky, Alex},
  institution={University of Toronto},
  year={2009}
}"""


class Archive(NamedTuple):
  """Where a dataset's archive is and how its batches are laid out."""

  url: str
  folder: str  # the archive's top folder
  batches: dict[str, tuple[str, ...]]  # per split, its members in order
  label_keys: dict[str, bytes]  # feature -> key of the pickled dict

  @property
  def filename(self) -> str:
    return self.url.rsplit('/', 1)[-1]


CIFAR10_ARCHIVE = Archive(
    url='https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
    folder='cifar-10-batches-py',
    batches={
        'train': tuple(f'data_batch_{i}' for i in range(1, 6)),
        'test': ('test_batch',),
    },
    label_keys={'label': b'labels'},
)
CIFAR100_ARCHIVE = Archive(
    url='https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
    folder='cifar-100-python',
    batches={'train': ('train',), 'test': ('test',)},
    label_keys={'label': b'fine_labels', 'coarse_label': b'coarse_labels'},
)


class ArchiveError(ValueError):
  """An archive that is not the official one or cannot be read whole."""


class _ArraysUnpickler(pickle.Unpickler):
  """Unpickles dicts of NumPy arrays, lists and bytes, and nothing else.

  A pickle can name any function to call; these may name only those that
  rebuild an array, so a file put in the manual directory that is not the
  official one cannot run code even where its checksum is not checked.
  """

  # What an array's pickle calls to rebuild it, under its two module names
  # (numpy.core before NumPy 2); `_codecs.encode` is how Python 3 writes bytes
  # in a protocol-2 pickle.
  _RECONSTRUCT = np.zeros(0).__reduce__()[0]
  _ALLOWED = {
      ('numpy.core.multiarray', '_reconstruct'): _RECONSTRUCT,
      ('numpy._core.multiarray', '_reconstruct'): _RECONSTRUCT,
      ('numpy', 'ndarray'): np.ndarray,
      ('numpy', 'dtype'): np.dtype,
      ('_codecs', 'encode'): codecs.encode,
  }

  def __init__(self, file):
    # The pickles were written by Python 2: `encoding='bytes'` keeps their
    # str keys and the arrays' raw buffers as bytes.
    super().__init__(file, encoding='bytes')

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._ALLOWED[module, name]
    except KeyError:
      raise pickle.UnpicklingError(
          f'a pickled {module}.{name}, which a CIFAR batch does not hold'
      ) from None


def read_batches(
    path: epath.PathLike, archive: Archive
) -> dict[str, list[dict[bytes, Any]]]:
  """The unpickled batches of every split, in order.

  The archive is read in one pass, in the order of its members (not that of
  the batches), so that a compressed archive is decompressed once.

  Args:
    path: the ``.tar.gz`` file.
    archive: its layout.

  Returns:
    For each split, its batches in order, as the dicts the pickles hold.

  Raises:
    ArchiveError: the archive is cut short or damaged, or lacks a batch.
  """
  wanted = {
      f'{archive.folder}/{name}'
      for names in archive.batches.values()
      for name in names
  }
  found: dict[str, dict[bytes, Any]] = {}
  try:
    with tarfile.open(epath.Path(path), 'r|gz') as tar:
      for member in tar:
        if member.name in wanted:
          found[member.name] = _ArraysUnpickler(tar.extractfile(member)).load()
  except (tarfile.TarError, EOFError, zlib.error, pickle.UnpicklingError) as e:
    raise ArchiveError(
        f'{path} cannot be read to its end ({type(e).__name__}: {e}); it is '
        'cut short or damaged. Download it again.'
    ) from e
  missing = sorted(wanted - found.keys())
  if missing:
    raise ArchiveError(f'{path} lacks {", ".join(missing)}.')
  return {
      split: [found[f'{archive.folder}/{name}'] for name in names]
      for split, names in archive.batches.items()
  }


def batch_examples(
    batch: dict[bytes, Any], label_keys: dict[str, bytes]
) -> dict[str, np.ndarray]:
  """A pickled batch as arrays: images ``(n, 32, 32, 3)`` uint8, labels.

  Example:
    >>> import numpy as np
    >>> planes = np.repeat(np.uint8([10, 20, 30]), 1024)  # red, green, blue
    >>> arrays = batch_examples({b'data': planes[None], b'labels': [7]},
    ...                         {'label': b'labels'})
    >>> arrays['image'].shape, arrays['image'][0, 5, 9], arrays['label']
    ((1, 32, 32, 3), array([10, 20, 30], dtype=uint8), array([7]))

  Args:
    batch: the dict of one pickle.
    label_keys: feature name -> the key of its labels in ``batch``.

  Returns:
    ``'image'`` and each feature of ``label_keys``, one row per image.

  Raises:
    ArchiveError: the batch does not have CIFAR's layout.
  """
  data = batch.get(b'data')
  if (
      not isinstance(data, np.ndarray)
      or data.dtype != np.uint8
      or data.ndim != 2
      or data.shape[1] != _PIXELS_PER_IMAGE
  ):
    raise ArchiveError(
        f"A batch's b'data' is not a (n, {_PIXELS_PER_IMAGE}) uint8 array."
    )
  # Each row holds the red, then the green, then the blue plane, row-major.
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  arrays = {'image': images}
  for feature, key in label_keys.items():
    labels = np.asarray(batch.get(key, []))
    if labels.shape != (len(images),):
      raise ArchiveError(
          f'A batch has {len(images)} images and {labels.size} {key!r}.'
      )
    arrays[feature] = labels
  return arrays


class _CifarArrays(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """CIFAR from the Python-pickle archive, images stored as uint8 arrays."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  ARCHIVE: Archive
  NUM_CLASSES: dict[str, int]  # per label feature

  @classmethod
  def manual_download_instructions(cls) -> str:
    return (
        f'Download {cls.ARCHIVE.url} (from {_HOMEPAGE}) and put '
        f'{cls.ARCHIVE.filename} in the directory, under that name.'
    )

  def _info(self) -> tfds.core.DatasetInfo:
    labels = {
        feature: tfds.features.ClassLabel(num_classes=num_classes)
        for feature, num_classes in self.NUM_CLASSES.items()
    }
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            f'{self.name}: the images of the Python-pickle archive as '
            '(32, 32, 3) uint8 arrays, in the archive order.'
        ),
        features=tfds.features.FeaturesDict({
            # As raw bytes: the default encodes each pixel as a varint.
            'image': tfds.features.Tensor(
                shape=_IMAGE_SHAPE,
                dtype=np.uint8,
                encoding=tfds.features.Encoding.BYTES,
            ),
            **labels,
        }),
        supervised_keys=('image', 'label'),
        homepage=_HOMEPAGE,
        disable_shuffling=True,
        citation=_CITATION,
    )

  def _archive_path(self, dl_manager) -> epath.Path:
    """The archive, checked against its recorded size and sha256.

    TFDS takes it from the manual directory when it is there under its own
    name, and downloads it otherwise.
    """
    try:
      return dl_manager.download(self.ARCHIVE.url)
    except download_manager.NonMatchingChecksumError as error:
      raise ArchiveError(_checksum_message(self, error)) from error
    # Whatever the network raised, the way out is the same.
    except Exception as error:  # pylint: disable=broad-exception-caught
      raise FileNotFoundError(
          f'{self.name} is not prepared and downloading {self.ARCHIVE.url} '
          f'failed ({type(error).__name__}: {error}). Offline, download it '
          'elsewhere and pass the directory that holds it as --download-dir '
          '(`manual_dir` of experiments.cifar.prepare).'
      ) from error

  def _split_generators(self, dl_manager):
    batches = read_batches(self._archive_path(dl_manager), self.ARCHIVE)
    return {
        split: self._generate_examples(split_batches)
        for split, split_batches in batches.items()
    }

  def _generate_examples(
      self, batches: Sequence[dict[bytes, Any]]
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    index = 0
    for batch in batches:
      arrays = batch_examples(batch, self.ARCHIVE.label_keys)
      for row in range(len(arrays['image'])):
        yield index, {name: values[row] for name, values in arrays.items()}
        index += 1


def _checksum_message(
    dataset_builder: _CifarArrays,
    error: download_manager.NonMatchingChecksumError,
) -> str:
  archive = dataset_builder.ARCHIVE
  expected = dataset_builder.url_infos[archive.url]
  return (
      f'{archive.filename} is not the official archive: its size or '
      f'sha256 differs from the recorded {int(expected.size)} bytes and '
      f'{expected.checksum} (a download cut short, or another file). '
      'Download it again.\n'
      + str(error).split('\nTo debug', 1)[0]
  )


class Cifar10Arrays(_CifarArrays):
  """CIFAR-10: 10 classes, 50,000 training and 10,000 test images."""

  name = 'cifar10_arrays'
  ARCHIVE = CIFAR10_ARCHIVE
  NUM_CLASSES = {'label': 10}


class Cifar100Arrays(_CifarArrays):
  """CIFAR-100: 100 classes in 20 superclasses (``coarse_label``)."""

  name = 'cifar100_arrays'
  ARCHIVE = CIFAR100_ARCHIVE
  NUM_CLASSES = {'label': 100, 'coarse_label': 20}


BUILDERS: dict[str, type[_CifarArrays]] = {
    'cifar10': Cifar10Arrays,
    'cifar100': Cifar100Arrays,
}
"""The builder of each dataset name of ``experiments.input_pipeline``."""


def builder(
    dataset: str, data_dir: str | os.PathLike[str] | None = None
) -> _CifarArrays:
  """The TFDS builder of ``'cifar10'`` or ``'cifar100'`` in ``data_dir``.

  Raises:
    ValueError: an unknown dataset.
  """
  if dataset not in BUILDERS:
    raise ValueError(
        f'Unknown dataset {dataset!r}; choose one of {", ".join(BUILDERS)}.'
    )
  return BUILDERS[dataset](data_dir=data_dir, file_format='array_record')


def prepare(
    dataset: str,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> None:
  """Builds a dataset's ArrayRecord files once (no TensorFlow needed).

  Downloads the archive unless ``manual_dir`` holds it (by default TFDS's
  ``data_dir/downloads/manual``). TFDS's own messages go to the log, but for
  its progress bars; this function logs a line when it starts and when it
  ends.
  An already prepared dataset is left as it is, unless ``overwrite``. A build
  that fails leaves no files of the dataset in ``data_dir``.

  Args:
    dataset: ``'cifar10'`` or ``'cifar100'``.
    data_dir: TFDS data directory (TFDS's default if None).
    manual_dir: a directory with the archive downloaded by hand, under its
      own name (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``).
    overwrite: build again even if the dataset is prepared.

  Raises:
    ValueError: an unknown dataset.
    FileNotFoundError: ``manual_dir`` lacks the archive, or the download
      failed; the message says how to prepare the dataset offline.
    ArchiveError: the archive differs from the official one (its size or
      sha256), or cannot be read to its end.
  """
  dataset_builder = builder(dataset, data_dir)
  if dataset_builder.is_prepared() and not overwrite:
    return
  archive = dataset_builder.ARCHIVE
  source: epath.Path | str
  if manual_dir is not None:
    source = epath.Path(manual_dir).expanduser() / archive.filename
    if not source.is_file():
      # TFDS would download it instead.
      raise FileNotFoundError(
          f'{manual_dir} has no {archive.filename}. '
          f'{dataset_builder.manual_download_instructions()}'
      )
  else:
    # Where TFDS looks for a manually downloaded archive by default.
    source = (
        epath.Path(dataset_builder.data_dir_root)
        / 'downloads'
        / 'manual'
        / archive.filename
    )
    if not source.is_file():
      source = archive.url
  _LOG.info(
      'Preparing %s in %s from %s (once).',
      dataset_builder.name,
      dataset_builder.data_dir_root,
      source,
  )
  start = time.perf_counter()
  config = tfds.download.DownloadConfig(
      manual_dir=manual_dir,
      download_mode=(
          tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
          if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
      ),
  )
  with contextlib.redirect_stdout(io.StringIO()) as messages:
    dataset_builder.download_and_prepare(download_config=config)
  if messages.getvalue().strip():
    _LOG.debug('%s', messages.getvalue().strip())
  _LOG.info(
      'Prepared %s in %.0f s.',
      dataset_builder.name,
      time.perf_counter() - start,
  )
