"""CIFAR-10's training split read into memory: the new path against TFDS's.

The input pipeline reads a split once per process into memory
(``input_pipeline.read_records``), so how fast a run starts depends on how
fast the stored records are read back. Two ways of storing CIFAR-10 are timed:

* **new**: ``experiments.cifar``'s ``cifar10_arrays``, built from the
  Python-pickle archive without TensorFlow, images stored as raw uint8 bytes;
* **TFDS**: TFDS's own ``cifar10``, built by ``tfds build cifar10
  --file_format=array_record`` (TensorFlow encodes every image to PNG), the
  path the project took before; reading decodes the PNGs.

Both are built here from one generated set of images in the two archives'
layouts (random pixels, 10,000 images a batch by default, as in the official
archives; no download), and read by the same loop, in alternation, ``--rounds``
times. TFDS's path needs TensorFlow (``pip install tensorflow``) to build; in
an environment without it only the new path is measured. Random pixels are
the worst case for PNG: real CIFAR images compress to about 2.3 kB each,
random ones not at all, so TFDS's decoding is slower here than on real data.

Usage: ``python benchmarks/cifar_read.py [--write]`` from the repository's
root; ``--write`` rewrites this script's section of BENCHMARKS.md.
"""

import argparse
import hashlib
import importlib.util
import pathlib
import statistics
import sys
import tempfile
import time
from unittest import mock

import numpy as np
import report
import tensorflow_datasets as tfds

from experiments import cifar, input_pipeline

sys.path.insert(
    0, str(pathlib.Path(__file__).parent.parent / 'tests' / 'experiments')
)
# pylint: disable=g-import-not-at-top,wrong-import-position
import cifar_archives

# pylint: enable=g-import-not-at-top,wrong-import-position

_BINARY_FOLDER = 'cifar-10-batches-bin'


def has_tensorflow() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


def write_binary_layout(folder: pathlib.Path, splits: dict) -> pathlib.Path:
  """The same images in the extracted layout of ``cifar-10-binary.tar.gz``,
  which TFDS's builder reads: records of a label byte and 3,072 CHW bytes."""
  batches = folder / _BINARY_FOLDER
  batches.mkdir(parents=True)
  train = splits['train']
  num_train_batches = 5
  per_batch = len(train.labels) // num_train_batches
  files = [
      (
          f'data_batch_{i + 1}.bin',
          train,
          slice(i * per_batch, (i + 1) * per_batch),
      )
      for i in range(num_train_batches)
  ] + [('test_batch.bin', splits['test'], slice(None))]
  for name, split, rows in files:
    images = split.images[rows]
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    labels = split.labels[rows].astype(np.uint8)[:, None]
    (batches / name).write_bytes(np.concatenate([labels, planes], 1).tobytes())
  names = b'\n'.join(cifar_archives.CIFAR10_NAMES) + b'\n'
  (batches / 'batches.meta.txt').write_bytes(names)
  return folder


def build_new(workdir: pathlib.Path, archive: pathlib.Path):
  """Prepares ``cifar10_arrays``; returns its train source and the seconds."""
  data_dir = workdir / 'new'
  url_infos = {cifar.CIFAR10_ARCHIVE.url: cifar_archives.url_info(archive)}
  with mock.patch.object(cifar.Cifar10Arrays, 'url_infos', url_infos):
    start = time.perf_counter()
    cifar.prepare('cifar10', data_dir, manual_dir=archive.parent)
    seconds = time.perf_counter() - start
  return cifar.builder('cifar10', data_dir).as_data_source('train'), seconds


def build_tfds(workdir: pathlib.Path, extracted: pathlib.Path):
  """Prepares TFDS's ``cifar10`` (needs TensorFlow) from the extracted
  binary layout, as ``tfds build`` would after its download."""
  data_dir = workdir / 'tfds'
  with mock.patch.object(
      tfds.download.DownloadManager,
      'download_and_extract',
      return_value=extracted,
  ):
    start = time.perf_counter()
    builder = tfds.builder(
        'cifar10', data_dir=data_dir, file_format='array_record'
    )
    builder.download_and_prepare()
    seconds = time.perf_counter() - start
  source = tfds.data_source(
      'cifar10', split='train', data_dir=data_dir, download=False
  )
  return source, seconds


def _fingerprints(stored: input_pipeline.StoredSplit) -> list[bytes]:
  """Each (image, label) as a digest: the splits' contents, in any order."""
  return sorted(
      hashlib.sha1(image.tobytes() + bytes([label])).digest()
      for image, label in zip(stored.images, stored.labels)
  )


def measure(per_batch: int, rounds: int, workdir: pathlib.Path) -> str:
  """Builds both datasets, reads them back in alternation; the report."""
  downloads = workdir / 'downloads'
  downloads.mkdir()
  archive = downloads / 'cifar-10-python.tar.gz'
  splits = cifar_archives.write_cifar10(archive, per_batch)
  num_train = len(splits['train'].labels)
  sources, build_seconds = {}, {}
  sources['new'], build_seconds['new'] = build_new(workdir, archive)
  new_split = input_pipeline.read_records(sources['new'])
  np.testing.assert_array_equal(new_split.images, splits['train'].images)
  np.testing.assert_array_equal(new_split.labels, splits['train'].labels)
  note = ''
  if has_tensorflow():
    extracted = write_binary_layout(workdir / 'extracted', splits)
    sources['TFDS'], build_seconds['TFDS'] = build_tfds(workdir, extracted)
    tfds_split = input_pipeline.read_records(sources['TFDS'])
    assert tfds_split.images.shape == new_split.images.shape
    assert tfds_split.images.dtype == new_split.images.dtype
    # TFDS's builder shuffles the examples; the contents are the same.
    assert _fingerprints(tfds_split) == _fingerprints(new_split)
    note = (
        ' Both hold the same images and labels (TFDS in another order), '
        'checked.'
    )
  else:
    note = " TensorFlow is not installed here: TFDS's path was not measured."
  samples = report.time_alternately(
      {
          name: lambda source=source: input_pipeline.read_records(source)
          for name, source in sources.items()
      },
      rounds=rounds,
      warmup=0,
  )
  rows = [
      '| storage | build (s) | read examples/s | read time (s) |',
      '| --- | ---: | ---: | ---: |',
  ]
  descriptions = {
      'new': '`cifar10_arrays` (raw uint8, no TensorFlow)',
      'TFDS': "TFDS's `cifar10` (PNG, built with TensorFlow)",
  }
  for name, seconds in samples.items():
    median = statistics.median(seconds)
    rows.append(
        f'| {descriptions[name]} | {build_seconds[name]:.3g} | '
        f'{num_train / median:,.0f} | {median:.3g} |'
    )
  versions = {'tensorflow_datasets': tfds.__version__}
  if has_tensorflow():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    versions['tensorflow'] = tf.__version__
  lines = [
      f'{report.host_description(**versions)}.',
      (
          f'CIFAR-10 layout, {num_train:,} training images of random pixels; '
          f'median of {rounds} reads of the whole training split, the storages '
          f'alternating.{note}'
      ),
      '',
      *rows,
  ]
  if 'TFDS' in samples:
    ratio = report.paired_ratio(samples['TFDS'], samples['new'])
    lines += ['', f'New path / TFDS path, examples per second: {ratio:.1f}x.']
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument(
      '--per-batch',
      type=int,
      default=10_000,
      help='images in each of the five training batches and the test batch',
  )
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument(
      '--write', action='store_true', help='rewrite the BENCHMARKS.md section'
  )
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as workdir:
    table = measure(args.per_batch, args.rounds, pathlib.Path(workdir))
  print(table)
  if args.write:
    report.write_section(
        'cifar-read',
        '## Reading CIFAR-10 into memory, with and without TensorFlow\n\n'
        '`python benchmarks/cifar_read.py --write` (in an environment with '
        'TensorFlow)\n\n'
        + table,
    )


if __name__ == '__main__':
  main()
