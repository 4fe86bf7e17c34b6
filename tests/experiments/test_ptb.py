"""PTB built by TFDS from a tiny corpus in its format, and the BPTT pipeline."""

from etils import epath
import no_tensorflow
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import input_pipeline, lm_pipeline, ptb

_WORDS = [
    'the',
    'N',
    '<unk>',
    'stock',
    'rose',
    'fell',
    'market',
    'of',
    'a',
    'in',
    'to',
    'and',
    'said',
    'year',
    'shares',
    'company',
]


def _corpus_lines(seed: int, num_lines: int) -> list[str]:
  """Lines as Mikolov's files write them: a leading space, single spaces."""
  rng = np.random.default_rng(seed)
  return [
      ' ' + ' '.join(rng.choice(_WORDS, size=rng.integers(1, 12)))
      for _ in range(num_lines)
  ]


# A blank line in train, and words that first appear in validation ('zebra',
# then 'yak') and in test ('gnu'), to pin down the vocabulary's order.
_TRAIN = _corpus_lines(0, 60) + [''] + _corpus_lines(1, 20)
_VALID = (
    _corpus_lines(2, 5) + [' the zebra rose', ' yak N'] + _corpus_lines(3, 5)
)
_TEST = _corpus_lines(4, 4) + [' gnu zebra of'] + _corpus_lines(5, 9)
_LINES = {'train': _TRAIN, 'validation': _VALID, 'test': _TEST}


def _write(directory, names):
  directory.mkdir(parents=True, exist_ok=True)
  for split, name in names.items():
    (directory / name).write_text(
        ''.join(f'{line}\n' for line in _LINES[split])
    )


def _reference_tokens(lines):
  """awd-lstm's Corpus.tokenize: `line.split() + ['<eos>']` for every line."""
  return [word for line in lines for word in line.split() + ['<eos>']]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('ptb')
  _write(
      root / 'manual',
      {
          'train': 'ptb.train.txt',
          'validation': 'ptb.valid.txt',
          'test': 'ptb.test.txt',
      },
  )
  ptb.prepare(root / 'tfds', manual_dir=root / 'manual')
  return root / 'tfds'


def test_vocabulary_numbers_words_by_first_appearance_train_valid_test(
    data_dir,
):
  vocabulary = ptb.load_vocabulary(data_dir)
  expected = []
  for split in ('train', 'validation', 'test'):
    for word in _reference_tokens(_LINES[split]):
      if word not in expected:
        expected.append(word)
  assert vocabulary == expected
  first_line = _TRAIN[0].split()
  assert vocabulary.index('<eos>') == len(dict.fromkeys(first_line))
  train_words = set(_reference_tokens(_TRAIN))
  assert vocabulary[: len(train_words)] == [
      w for w in expected if w in train_words
  ]
  assert vocabulary[-3:] == ['zebra', 'yak', 'gnu']


@pytest.mark.parametrize('split', ['train', 'validation', 'test'])
def test_tokens_are_the_lines_in_order_with_eos_after_each(data_dir, split):
  vocabulary = ptb.load_vocabulary(data_dir)
  tokens = ptb.load_tokens(split, data_dir)
  words = _reference_tokens(_LINES[split])
  assert tokens.dtype == np.int32
  assert [vocabulary[i] for i in tokens] == words
  eos_positions = np.flatnonzero(tokens == vocabulary.index('<eos>'))
  line_ends = np.cumsum([len(line.split()) + 1 for line in _LINES[split]]) - 1
  np.testing.assert_array_equal(eos_positions, line_ends)


def test_records_keep_the_file_order_and_text(data_dir):
  source = ptb.data_source('train', data_dir)
  assert len(source) == len(_TRAIN)
  assert [source[i]['text'].decode() for i in range(len(source))] == _TRAIN
  blank = source[_TRAIN.index('')]
  assert blank['ids'].tolist() == [ptb.load_vocabulary(data_dir).index('<eos>')]


def test_builds_and_reads_with_tensorflow_unimportable(tmp_path):
  # AWD-LSTM's getdata.sh names are accepted too.
  _write(
      tmp_path / 'penn',
      {'train': 'train.txt', 'validation': 'valid.txt', 'test': 'test.txt'},
  )
  tokens = no_tensorflow.run(
      """
import pathlib
from experiments import ptb

root = pathlib.Path(sys.argv[1])
ptb.prepare(root / 'tfds', manual_dir=root / 'penn')
vocabulary = ptb.load_vocabulary(root / 'tfds')
result = [vocabulary[i] for i in ptb.load_tokens('test', root / 'tfds')]
""",
      str(tmp_path),
  )
  assert tokens == _reference_tokens(_TEST)


def test_without_a_manual_directory_it_reads_mikolovs_archive(
    tmp_path, monkeypatch
):
  archive = tmp_path / 'extracted'
  _write(
      archive / 'simple-examples' / 'data',
      {
          'train': 'ptb.train.txt',
          'validation': 'ptb.valid.txt',
          'test': 'ptb.test.txt',
      },
  )
  urls = []

  def download_and_extract(self, url):
    del self  # unused
    urls.append(url)
    return epath.Path(archive)

  monkeypatch.setattr(
      tfds.download.DownloadManager,
      'download_and_extract',
      download_and_extract,
  )
  ptb.prepare(tmp_path / 'tfds')
  assert len(urls) == 1 and urls[0].endswith('/simple-examples.tgz')
  tokens = ptb.load_tokens('validation', tmp_path / 'tfds')
  assert len(tokens) == len(_reference_tokens(_VALID))


def test_an_incomplete_manual_directory_is_reported(tmp_path):
  (tmp_path / 'manual').mkdir()
  (tmp_path / 'manual' / 'ptb.train.txt').write_text(' a b\n')
  with pytest.raises(FileNotFoundError, match='validation, test'):
    ptb.prepare(tmp_path / 'tfds', manual_dir=tmp_path / 'manual')


def test_a_missing_manual_directory_is_reported_not_downloaded(
    tmp_path, monkeypatch
):
  def download_and_extract(self, url):
    raise AssertionError(f'downloaded {url}')

  monkeypatch.setattr(
      tfds.download.DownloadManager,
      'download_and_extract',
      download_and_extract,
  )
  with pytest.raises(FileNotFoundError, match='does not exist'):
    ptb.prepare(tmp_path / 'tfds', manual_dir=tmp_path / 'absent')


def test_a_failed_download_says_how_to_prepare_offline(tmp_path, monkeypatch):
  def download_and_extract(self, url):
    raise ConnectionError(f'no route to {url}')

  monkeypatch.setattr(
      tfds.download.DownloadManager,
      'download_and_extract',
      download_and_extract,
  )
  with pytest.raises(
      FileNotFoundError, match='(?s)downloading .* failed .*ptb.train.txt'
  ):
    ptb.prepare(tmp_path / 'tfds')


def test_an_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(input_pipeline.DatasetNotFoundError, match='ptb.prepare'):
    ptb.load_tokens('train', tmp_path)
  with pytest.raises(ValueError, match='Unknown split'):
    ptb.data_source('valid', tmp_path)


def test_batchify_makes_contiguous_time_major_columns(data_dir):
  tokens = ptb.load_tokens('train', data_dir)
  for batch_size in (1, 3, 10):
    data = lm_pipeline.batchify(tokens, batch_size)
    rows = len(tokens) // batch_size
    assert data.shape == (rows, batch_size)
    for column in range(batch_size):
      np.testing.assert_array_equal(
          data[:, column], tokens[column * rows : (column + 1) * rows]
      )
  with pytest.raises(ValueError):
    lm_pipeline.batchify(tokens[:3], 4)


def test_evaluation_windows_are_fixed_and_tile_the_rows(data_dir):
  data = lm_pipeline.batchify(
      ptb.load_tokens('validation', data_dir), lm_pipeline.EVAL_BATCH_SIZE
  )
  windows = list(lm_pipeline.bptt_windows(data, 4, train=False))
  assert [w.start for w in windows] == list(range(0, len(data) - 1, 4))
  assert all(w.length == 4 and w.seq_len == 4 for w in windows[:-1])
  assert windows[-1].start + windows[-1].length == len(data) - 1
  np.testing.assert_array_equal(
      np.concatenate([w.inputs for w in windows]), data[:-1]
  )
  np.testing.assert_array_equal(
      np.concatenate([w.targets for w in windows]), data[1:]
  )


def _train_windows(data, seed, **kwargs):
  return list(lm_pipeline.bptt_windows(data, 12, rng=seed, **kwargs))


def test_training_windows_follow_awd_lstm_draws_and_tile_the_rows(data_dir):
  data = lm_pipeline.batchify(ptb.load_tokens('train', data_dir), 2)
  windows = _train_windows(data, seed=7)
  # The same draws, made here as AWD-LSTM's main.py makes them.
  rng = np.random.default_rng(7)
  start, expected = 0, []
  while start < len(data) - 2:
    bptt = 12 if rng.random() < 0.95 else 12 / 2
    seq_len = max(5, int(rng.normal(bptt, 5)))
    expected.append((start, seq_len, min(seq_len, len(data) - 1 - start)))
    start += seq_len
  assert [(w.start, w.seq_len, w.length) for w in windows] == expected
  assert len({w.seq_len for w in windows}) > 3
  for window in windows:
    assert window.inputs.shape == window.targets.shape == (window.length, 2)
    np.testing.assert_array_equal(window.targets[:-1], window.inputs[1:])
  np.testing.assert_array_equal(
      np.concatenate([w.inputs for w in windows]), data[:-1]
  )
  np.testing.assert_array_equal(
      np.concatenate([w.targets for w in windows]), data[1:]
  )


def test_training_windows_depend_only_on_the_seed(data_dir):
  data = lm_pipeline.batchify(ptb.load_tokens('train', data_dir), 2)

  def lengths(seed):
    return [w.seq_len for w in _train_windows(data, seed)]

  assert lengths(3) == lengths(3)
  assert lengths(3) != lengths(4)
  generator = np.random.default_rng(3)
  first_epoch = [w.seq_len for w in _train_windows(data, generator)]
  second_epoch = [w.seq_len for w in _train_windows(data, generator)]
  assert first_epoch == lengths(3) and second_epoch != first_epoch


def test_training_windows_resume_from_a_saved_state(data_dir):
  data = lm_pipeline.batchify(ptb.load_tokens('train', data_dir), 2)
  uninterrupted = _train_windows(data, seed=5)
  windows = lm_pipeline.bptt_windows(data, 12, rng=5)
  served = [next(windows) for _ in range(4)]
  state = windows.get_state()
  next(windows)  # a window served after the checkpoint, then lost
  resumed = lm_pipeline.bptt_windows(data, 12, rng=0)
  resumed.set_state(state)
  served += list(resumed)
  assert [w.start for w in served] == [w.start for w in uninterrupted]
  for got, want in zip(served, uninterrupted):
    np.testing.assert_array_equal(got.inputs, want.inputs)


def test_padded_windows_keep_the_data_and_mark_the_padding(data_dir):
  data = lm_pipeline.batchify(ptb.load_tokens('train', data_dir), 2)
  plain = _train_windows(data, seed=1)
  padded = _train_windows(data, seed=1, pad_to_multiple_of=8)
  for window, padded_window in zip(plain, padded, strict=True):
    steps = padded_window.inputs.shape[0]
    assert steps % 8 == 0 and steps - 8 < window.length <= steps
    assert padded_window.mask.tolist() == (
        [True] * window.length + [False] * (steps - window.length)
    )
    np.testing.assert_array_equal(
        padded_window.inputs[: window.length], window.inputs
    )
    np.testing.assert_array_equal(
        padded_window.targets[: window.length], window.targets
    )
    assert padded_window.seq_len == window.seq_len
