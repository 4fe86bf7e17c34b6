"""How experiments.cifar reads the pickled batches of the official archives."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from experiments import cifar


def _batch(images, labels):
  """A batch as the archive pickles it: CHW planes, one row per image."""
  return {
      b'batch_label': b'training batch',
      b'data': images.transpose(0, 3, 1, 2).reshape(len(images), 3072),
      b'labels': list(labels),
      b'filenames': [b'image.png'] * len(images),
  }


def _write_archive(path, members):
  """A .tar.gz of {member name: object pickled with protocol 2}."""
  with tarfile.open(path, 'w:gz') as archive:
    for name, content in members.items():
      data = pickle.dumps(content, protocol=2)
      member = tarfile.TarInfo(name)
      member.size = len(data)
      archive.addfile(member, io.BytesIO(data))


def _cifar10_members(rng, skip=()):
  """CIFAR-10's batches, 3 images each, in the order the real archive lists
  them (not the batches' order); returns the members and each split's
  images."""
  order = [4, 'test', 3, 2, 5, 1]
  members, images = {}, {}
  for batch in order:
    name = 'test_batch' if batch == 'test' else f'data_batch_{batch}'
    images[name] = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    if name not in skip:
      members[f'cifar-10-batches-py/{name}'] = _batch(images[name], [batch] * 3)
  return members, images


def test_batches_come_in_their_order_whatever_the_archives_order(tmp_path):
  members, images = _cifar10_members(np.random.default_rng(0))
  _write_archive(tmp_path / 'a.tar.gz', members)
  batches = cifar.read_batches(tmp_path / 'a.tar.gz', cifar.CIFAR10_ARCHIVE)
  assert [b[b'labels'][0] for b in batches['train']] == [1, 2, 3, 4, 5]
  train = [
      cifar.batch_examples(b, cifar.CIFAR10_ARCHIVE.label_keys)
      for b in batches['train']
  ]
  np.testing.assert_array_equal(train[2]['image'], images['data_batch_3'])
  (test,) = batches['test']
  np.testing.assert_array_equal(
      cifar.batch_examples(test, {'label': b'labels'})['image'],
      images['test_batch'],
  )


def test_images_are_the_rows_planes_in_height_width_channel_order():
  data = np.random.default_rng(1).integers(0, 256, (2, 3072), dtype=np.uint8)
  arrays = cifar.batch_examples(
      {b'data': data, b'labels': [0, 1]}, {'label': b'labels'}
  )
  image = arrays['image']
  assert image.shape == (2, 32, 32, 3) and image.dtype == np.uint8
  for n, y, x, c in [
      (0, 0, 0, 0),
      (1, 31, 0, 2),
      (0, 5, 17, 1),
      (1, 31, 31, 2),
  ]:
    assert image[n, y, x, c] == data[n, c * 1024 + y * 32 + x]


def test_a_missing_batch_is_refused(tmp_path):
  members, _ = _cifar10_members(
      np.random.default_rng(2), skip=('data_batch_5',)
  )
  _write_archive(tmp_path / 'a.tar.gz', members)
  with pytest.raises(
      cifar.ArchiveError, match='lacks cifar-10-batches-py/data_batch_5'
  ):
    cifar.read_batches(tmp_path / 'a.tar.gz', cifar.CIFAR10_ARCHIVE)


@pytest.mark.parametrize(
    'batch, message',
    [
        ({b'labels': [0]}, r"b'data' is not a \(n, 3072\) uint8 array"),
        (
            {b'data': np.zeros((1, 3072), np.float32), b'labels': [0]},
            r"b'data' is not a \(n, 3072\) uint8 array",
        ),
        (
            {b'data': np.zeros((1, 1024), np.uint8), b'labels': [0]},
            r"b'data' is not a \(n, 3072\) uint8 array",
        ),
        (
            {b'data': np.zeros((2, 3072), np.uint8), b'labels': [0]},
            "2 images and 1 b'labels'",
        ),
    ],
    ids=['no data', 'float', 'narrow', 'labels'],
)
def test_a_batch_of_another_layout_is_refused(batch, message):
  with pytest.raises(cifar.ArchiveError, match=message):
    cifar.batch_examples(batch, {'label': b'labels'})


class _RunsACommand:

  def __reduce__(self):
    return (os.mkdir, ('created-by-unpickling',))


def test_a_pickle_that_would_call_anything_else_is_refused(
    tmp_path, monkeypatch
):
  monkeypatch.chdir(tmp_path)
  members, _ = _cifar10_members(np.random.default_rng(3))
  members['cifar-10-batches-py/data_batch_2'][b'labels'] = _RunsACommand()
  _write_archive(tmp_path / 'a.tar.gz', members)
  with pytest.raises(
      cifar.ArchiveError,
      match=r'UnpicklingError: a pickled posix.mkdir, which a CIFAR batch',
  ):
    cifar.read_batches(tmp_path / 'a.tar.gz', cifar.CIFAR10_ARCHIVE)
  assert not (tmp_path / 'created-by-unpickling').exists()
