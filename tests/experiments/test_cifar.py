"""CIFAR built from archives in the official format, without TensorFlow."""

import json
import pathlib

import cifar_archives
import no_tensorflow
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import cifar, cli, input_pipeline


@pytest.fixture
def archives(tmp_path, monkeypatch) -> dict:
  """Small archives of both datasets in a manual directory, their checksums
  recorded as the official ones are: {dataset: expected splits}."""
  folder = tmp_path / 'downloads'
  folder.mkdir()
  expected = {
      'cifar10': cifar_archives.write_cifar10(
          folder / 'cifar-10-python.tar.gz', per_batch=4
      ),
      'cifar100': cifar_archives.write_cifar100(
          folder / 'cifar-100-python.tar.gz', num_train=12, num_test=5
      ),
  }
  for dataset in expected:
    cifar_archives.record_checksums(monkeypatch, dataset, folder)
  return expected


def _files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(path for path in folder.rglob('*') if path.is_file())


def test_the_recorded_checksums_are_those_of_the_official_archives():
  # As published with the archives' users (Keras, torchvision's datasets).
  official = {
      'cifar-10-python.tar.gz': (
          170498071,
          '6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce',
      ),
      'cifar-100-python.tar.gz': (
          169001437,
          '85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7',
      ),
  }
  for builder_class in cifar.BUILDERS.values():
    info = builder_class.url_infos[builder_class.ARCHIVE.url]
    assert info.filename == builder_class.ARCHIVE.filename
    assert (info.size, info.checksum) == official[info.filename]


@pytest.mark.parametrize('dataset', ['cifar10', 'cifar100'])
def test_reads_back_the_archive_in_its_order(archives, tmp_path, dataset):
  data_dir = str(tmp_path / 'tfds')
  cifar.prepare(dataset, data_dir, manual_dir=tmp_path / 'downloads')
  for split, expected in archives[dataset].items():
    stored = input_pipeline.read_split(dataset, split, data_dir)
    assert stored.images.dtype == np.uint8
    assert stored.images.shape == (len(expected.labels), 32, 32, 3)
    np.testing.assert_array_equal(stored.images, expected.images)
    np.testing.assert_array_equal(stored.labels, expected.labels)
    if dataset == 'cifar100':
      source = cifar.builder(dataset, data_dir).as_data_source(split)
      coarse = [source[i]['coarse_label'] for i in range(len(source))]
      np.testing.assert_array_equal(coarse, expected.coarse_labels)


def test_builds_and_reads_with_tensorflow_unimportable(archives, tmp_path):
  images_and_labels = no_tensorflow.run(
      """
import pathlib
import cifar_archives
import pytest
from experiments import cifar, input_pipeline

root = pathlib.Path(sys.argv[1])
with pytest.MonkeyPatch.context() as monkeypatch:
  cifar_archives.record_checksums(monkeypatch, 'cifar10', root / 'downloads')
  cifar.prepare('cifar10', root / 'tfds', manual_dir=root / 'downloads')
stored = input_pipeline.read_split('cifar10', 'test', root / 'tfds')
result = [stored.images.tolist(), stored.labels.tolist()]
""",
      str(tmp_path),
  )
  expected = archives['cifar10']['test']
  np.testing.assert_array_equal(images_and_labels[0], expected.images)
  np.testing.assert_array_equal(images_and_labels[1], expected.labels)


def test_without_a_manual_directory_it_downloads_the_archive(
    archives, tmp_path, monkeypatch
):
  del archives  # the archive the download "returns"
  urls = []

  def download(self, url):
    del self  # unused
    urls.append(url)
    return tmp_path / 'downloads' / 'cifar-10-python.tar.gz'

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', download)
  cifar.prepare('cifar10', tmp_path / 'tfds')
  assert urls == ['https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz']
  assert cifar.builder('cifar10', tmp_path / 'tfds').is_prepared()


def _alter_one_byte(path):
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))


def _cut_short(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    'damage, checksums_of_damaged, message',
    [
        (_alter_one_byte, False, 'is not the official archive'),
        (_cut_short, False, 'is not the official archive'),
        # Were its checksums recorded, the cut is found when reading it.
        (_cut_short, True, 'cannot be read to its end'),
    ],
    ids=['other-bytes', 'cut-short', 'cut-short-checksum-recorded'],
)
def test_a_damaged_archive_is_refused_and_leaves_nothing_behind(
    archives, tmp_path, monkeypatch, damage, checksums_of_damaged, message
):
  del archives  # written and their checksums recorded
  downloads = tmp_path / 'downloads'
  damage(downloads / 'cifar-10-python.tar.gz')
  if checksums_of_damaged:
    cifar_archives.record_checksums(monkeypatch, 'cifar10', downloads)
  data_dir = tmp_path / 'tfds'
  with pytest.raises(cifar.ArchiveError, match=message):
    cifar.prepare('cifar10', data_dir, manual_dir=downloads)
  assert _files(data_dir) == []
  with pytest.raises(input_pipeline.DatasetNotFoundError):
    input_pipeline.read_split('cifar10', 'test', str(data_dir))


def test_a_manual_directory_without_the_archive_is_reported(tmp_path):
  with pytest.raises(FileNotFoundError, match='has no cifar-100-python.tar.gz'):
    cifar.prepare('cifar100', tmp_path / 'tfds', manual_dir=tmp_path)


def test_a_failed_download_says_how_to_prepare_offline(tmp_path, monkeypatch):
  def download(self, url):
    raise ConnectionError(f'{url} is unreachable')

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', download)
  with pytest.raises(FileNotFoundError, match='--download-dir'):
    cifar.prepare('cifar10', tmp_path / 'tfds')
  assert _files(tmp_path / 'tfds') == []


def test_a_training_command_prepares_cifar_on_first_use_then_trains(
    tmp_path, monkeypatch, capsys
):
  # 20 images a batch: enough for AdaLoss's 10% validation split to have some.
  downloads = tmp_path / 'downloads'
  downloads.mkdir()
  cifar_archives.write_cifar10(downloads / 'cifar-10-python.tar.gz', 20)
  cifar_archives.record_checksums(monkeypatch, 'cifar10', downloads)
  data_dir = tmp_path / 'tfds'
  workdir = tmp_path / 'run'
  argv = [
      'adaloss',
      '--dataset',
      'cifar10',
      '--data-dir',
      str(data_dir),
      '--download-dir',
      str(downloads),
      '--model',
      'mlp',
      '--bs',
      '8',
      '--ep',
      '1',
      '--max-steps',
      '2',
      '--no-progress',
      '--workdir',
      str(workdir),
  ]
  assert cli.main(argv) == 0
  assert cifar.builder('cifar10', data_dir).is_prepared()
  records = [
      json.loads(line)
      for line in (workdir / 'metrics.jsonl').read_text().splitlines()
  ]
  assert records[-1]['step'] == 2
  capsys.readouterr()
  # Prepared once: the archive is not needed again.
  (downloads / 'cifar-10-python.tar.gz').unlink()
  assert cli.main(['prepare', 'cifar10', '--data-dir', str(data_dir)]) == 0
  assert f'cifar10 is prepared in {data_dir}' in capsys.readouterr().out
