"""Small CIFAR archives in the official Python format, for tests, benchmarks.

The layout is that of ``cifar-10-python.tar.gz`` and
``cifar-100-python.tar.gz``: the same member names, each a protocol-2 pickle
of a dict with bytes keys, ``b'data'`` a C-ordered ``(n, 3072)`` uint8 array
of CHW planes, labels as lists of ints. Only the number of images differs
(and the pixels, random).
"""

import hashlib
import io
import pathlib
import pickle
import tarfile
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

CIFAR10_NAMES = [
    b'airplane',
    b'automobile',
    b'bird',
    b'cat',
    b'deer',
    b'dog',
    b'frog',
    b'horse',
    b'ship',
    b'truck',
]


class Split(NamedTuple):
  images: np.ndarray  # (n, 32, 32, 3) uint8, HWC
  labels: np.ndarray  # (n,)
  coarse_labels: np.ndarray | None  # (n,), CIFAR-100 only


def _add(archive: tarfile.TarFile, name: str, content: Any) -> None:
  data = pickle.dumps(content, protocol=2)
  member = tarfile.TarInfo(name)
  member.size = len(data)
  archive.addfile(member, io.BytesIO(data))


def _batch(rng, num_images, label_keys, label_counts, batch_label):
  images = rng.integers(0, 256, (num_images, 32, 32, 3), dtype=np.uint8)
  content = {
      b'batch_label': batch_label,
      # The official layout: each row the red, green and blue planes.
      b'data': images.transpose(0, 3, 1, 2).reshape(num_images, 3072),
      b'filenames': [f'image_{i}.png'.encode() for i in range(num_images)],
  }
  labels = [
      [int(v) for v in rng.integers(0, count, num_images)]
      for count in label_counts
  ]
  for key, values in zip(label_keys, labels):
    content[key] = values
  return content, images, labels


def write_cifar10(
    path: pathlib.Path,
    per_batch: int,
    seed: int = 0,
    num_test: int | None = None,
) -> dict:
  """``cifar-10-python.tar.gz`` with `per_batch` images in each of its five
  training batches and `num_test` (default `per_batch`) in its test batch;
  returns the expected ``{'train': Split, 'test': Split}``."""
  rng = np.random.default_rng(seed)
  splits: dict[str, list] = {'train': [], 'test': []}
  with tarfile.open(path, 'w:gz') as archive:
    for name, split, batch_label in [
        *[
            (f'data_batch_{i}', 'train', f'training batch {i} of 5')
            for i in range(1, 6)
        ],
        ('test_batch', 'test', 'testing batch 1 of 1'),
    ]:
      size = per_batch if split == 'train' else (num_test or per_batch)
      content, images, (labels,) = _batch(
          rng, size, [b'labels'], [10], batch_label.encode()
      )
      _add(archive, f'cifar-10-batches-py/{name}', content)
      splits[split].append((images, labels))
    _add(
        archive,
        'cifar-10-batches-py/batches.meta',
        {
            b'num_cases_per_batch': per_batch,
            b'label_names': CIFAR10_NAMES,
            b'num_vis': 3072,
        },
    )
  return {
      split: Split(
          np.concatenate([images for images, _ in parts]),
          np.concatenate([labels for _, labels in parts]),
          None,
      )
      for split, parts in splits.items()
  }


def write_cifar100(path: pathlib.Path, num_train: int, num_test: int) -> dict:
  """``cifar-100-python.tar.gz`` with `num_train` and `num_test` images;
  returns the expected ``{'train': Split, 'test': Split}``."""
  rng = np.random.default_rng(1)
  expected = {}
  with tarfile.open(path, 'w:gz') as archive:
    for split, count in (('train', num_train), ('test', num_test)):
      content, images, (fine, coarse) = _batch(
          rng,
          count,
          [b'fine_labels', b'coarse_labels'],
          [100, 20],
          split.encode(),
      )
      _add(archive, f'cifar-100-python/{split}', content)
      expected[split] = Split(images, np.array(fine), np.array(coarse))
    _add(
        archive,
        'cifar-100-python/meta',
        {
            b'fine_label_names': [f'fine_{i}'.encode() for i in range(100)],
            b'coarse_label_names': [f'coarse_{i}'.encode() for i in range(20)],
        },
    )
  return expected


def url_info(path: pathlib.Path) -> tfds.download.checksums.UrlInfo:
  """The size and SHA-256 TFDS records for a file, under its name."""
  data = path.read_bytes()
  return tfds.download.checksums.UrlInfo(
      size=len(data),
      checksum=hashlib.sha256(data).hexdigest(),
      filename=path.name,
  )


def record_checksums(monkeypatch, dataset: str, folder: pathlib.Path) -> None:
  """Records the checksums of the archive in `folder` as the official ones."""
  # Not at the top: the archive writers need no experiments code.
  from experiments import cifar  # pylint: disable=g-import-not-at-top

  builder_class = cifar.BUILDERS[dataset]
  path = folder / builder_class.ARCHIVE.filename
  monkeypatch.setattr(
      builder_class, 'url_infos', {builder_class.ARCHIVE.url: url_info(path)}
  )
