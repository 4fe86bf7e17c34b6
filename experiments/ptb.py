"""Mikolov's word-level Penn Treebank as a TFDS dataset, without TensorFlow.

The corpus is Mikolov's preprocessed PTB as AWD-LSTM's ``getdata.sh`` fetches
it (``simple-examples.tgz``, files ``ptb.{train,valid,test}.txt``): lower case,
numbers replaced by ``N``, a 10k-word vocabulary with ``<unk>`` for the rest.
As AWD-LSTM's ``data.py`` does, every line becomes ``line.split() + ['<eos>']``.

Each example is one line, in file order (the builder disables TFDS's
shuffling and keys lines by their index): ``'text'`` is the line without its
line break and ``'ids'`` the int32 ids of its tokens, ``<eos>`` included, so
concatenating ``'ids'`` over a split gives AWD-LSTM's token stream
(:func:`load_tokens`). The splits are ``train``, ``validation`` and ``test``.

The vocabulary follows AWD-LSTM's ``Dictionary``: ids in order of first
appearance while reading train, then validation, then test. (TensorFlow's PTB
tutorial instead sorts words by decreasing count; the two orders give the same
model up to a permutation of the embedding rows, but not the same random
initialisation.) On Mikolov's files every word of validation and test already
occurs in train, so the order is train's order of first appearance, with
``<eos>`` right after the first line's words; 10,000 entries. The list is stored
with the dataset, in the builder's ``metadata.json``
(:func:`load_vocabulary`).

Only ``Text`` and ``Tensor`` features are used and the files are ArrayRecord,
so both building (:func:`prepare`) and reading (``tfds.data_source``) work
without TensorFlow. Offline, put the three files in a directory and pass it as
``manual_dir``.
"""

from collections.abc import Iterable, Iterator, Sequence
import contextlib
import io
import os
from typing import Any

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

EOS = '<eos>'
SPLITS = ('train', 'validation', 'test')
# The archive AWD-LSTM's getdata.sh downloads, and where the files are in it.
_URL = 'http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz'
_ARCHIVE_DIR = 'simple-examples/data'
# Mikolov's names, then the names getdata.sh renames them to.
_FILE_NAMES = {
    'train': ('ptb.train.txt', 'train.txt'),
    'validation': ('ptb.valid.txt', 'valid.txt'),
    'test': ('ptb.test.txt', 'test.txt'),
}
_VOCABULARY_KEY = 'vocabulary'
_DEFAULT_DATA_DIR = '~/tensorflow_datasets'


def tokenize_line(line: str) -> list[str]:
  """The tokens of one line of a PTB file, ``<eos>`` appended (AWD-LSTM's rule).

  Args:
    line: a line of the file, with or without its line break.

  Returns:
    The whitespace-separated words followed by ``<eos>``.

  Example:
    >>> tokenize_line(' the <unk> rose N %\\n')
    ['the', '<unk>', 'rose', 'N', '%', '<eos>']
  """
  return line.split() + [EOS]


def build_vocabulary(lines: Iterable[str]) -> list[str]:
  """Words in first-appearance order, as AWD-LSTM's ``Dictionary`` numbers them.

  Args:
    lines: the lines of train, then validation, then test.

  Returns:
    The vocabulary; a word's id is its index.

  Example:
    >>> build_vocabulary([' b a b', ' c a'])
    ['b', 'a', '<eos>', 'c']
  """
  return list(
      dict.fromkeys(token for line in lines for token in tokenize_line(line))
  )


def _read_lines(path: epath.Path) -> list[str]:
  # Iterating over the file splits lines exactly where AWD-LSTM's `for line in
  # f` does (str.splitlines would also split at form feeds and the like).
  with path.open('r', encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]


def _find_file(directory: epath.Path, split: str) -> epath.Path | None:
  for name in _FILE_NAMES[split]:
    if (directory / name).exists():
      return directory / name
  return None


class Ptb(tfds.core.GeneratorBasedBuilder):
  """Mikolov's word-level Penn Treebank, one example per line, in order."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put `ptb.train.txt`, `ptb.valid.txt` and `ptb.test.txt` from Mikolov's
  `simple-examples.tgz` (directory `simple-examples/data/`), or AWD-LSTM's
  `data/penn/{train,valid,test}.txt`, in the manual directory.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Mikolov's preprocessed Penn Treebank (10k words), one line per "
            "example with '<eos>' appended; the vocabulary, in AWD-LSTM's "
            "order, is in the metadata under 'vocabulary'."
        ),
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'ids': tfds.features.Tensor(shape=(None,), dtype=np.int32),
        }),
        homepage='https://www.fit.vutbr.cz/~imikolov/rnnlm/',
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
        citation="""\
@article{marcus1993building,
  title={Building a Large Annotated Corpus of {E}nglish: The {P}enn {T}reebank},
  author={Marcus, Mitchell P. and Santorini, Beatrice and
          Marcinkiewicz, Mary Ann},
  journal={Computational Linguistics},
  volume={19},
  number={2},
  pages={313--330},
  year={1993}
}""",
    )

  def _source_files(self, dl_manager) -> dict[str, epath.Path]:
    """The three files, from the manual directory if it has them."""
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError:  # TFDS's way of saying there is none, or it is empty
      manual_dir = None
    if manual_dir is not None:
      files = {split: _find_file(manual_dir, split) for split in SPLITS}
      missing = [split for split, path in files.items() if path is None]
      if missing:
        raise FileNotFoundError(
            f'{manual_dir} lacks the {", ".join(missing)} file(s).\n'
            f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}'
        )
      return files
    try:
      directory = dl_manager.download_and_extract(_URL) / _ARCHIVE_DIR
    # Whatever the network or the archive raised, the way out is the same.
    except Exception as error:  # pylint: disable=broad-exception-caught
      raise FileNotFoundError(
          f'Penn Treebank is not prepared and downloading {_URL} failed '
          f'({type(error).__name__}). Offline, put the files in a directory '
          'and pass it as the manual directory (`--data DIR` of '
          '`python -m experiments adadiff-ptb`).\n'
          f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}'
      ) from error
    return {split: directory / _FILE_NAMES[split][0] for split in SPLITS}

  def _split_generators(self, dl_manager):
    lines = {
        split: _read_lines(path)
        for split, path in self._source_files(dl_manager).items()
    }
    vocabulary = build_vocabulary(
        line for split in SPLITS for line in lines[split]
    )
    self.info.metadata[_VOCABULARY_KEY] = vocabulary
    word_ids = {word: i for i, word in enumerate(vocabulary)}
    return {
        split: self._generate_examples(lines[split], word_ids)
        for split in SPLITS
    }

  def _generate_examples(
      self, lines: Sequence[str], word_ids: dict[str, int]
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    for index, line in enumerate(lines):
      ids = np.array(
          [word_ids[token] for token in tokenize_line(line)], dtype=np.int32
      )
      yield index, {'text': line, 'ids': ids}


def prepare(
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
) -> None:
  """Builds the ArrayRecord files once (no TensorFlow needed).

  Downloads Mikolov's archive unless ``manual_dir`` holds the three files.
  A manual directory that does not exist, or lacks a file, and a download
  that fails raise :class:`FileNotFoundError` with the instructions.
  TFDS's progress messages go to the log instead of stdout, its progress
  bars nowhere. An already
  prepared dataset is left as it is.

  Args:
    data_dir: TFDS data directory (default ``~/tensorflow_datasets``).
    manual_dir: directory with ``ptb.{train,valid,test}.txt``.

  Example:
    >>> import pathlib, tempfile
    >>> corpus = pathlib.Path(tempfile.mkdtemp())
    >>> for name, text in [('ptb.train.txt', ' a b\\n b c\\n'),
    ...                    ('ptb.valid.txt', ' c\\n'),
    ...                    ('ptb.test.txt', ' a\\n')]:
    ...   _ = (corpus / name).write_text(text)
    >>> prepare(corpus / 'tfds', manual_dir=corpus)
    >>> load_tokens('train', corpus / 'tfds')
    array([0, 1, 2, 1, 3, 2], dtype=int32)
  """
  if manual_dir is not None and not epath.Path(manual_dir).is_dir():
    # TFDS would take a missing manual directory for none and download.
    raise FileNotFoundError(
        f'The manual directory {manual_dir} does not exist.\n'
        f'{Ptb.MANUAL_DOWNLOAD_INSTRUCTIONS}'
    )
  builder = Ptb(data_dir=data_dir, file_format='array_record')
  config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  # TFDS's bars ("Generating splits...") would spill into the training
  # command's output for a corpus built in seconds; its default is restored.
  tfds.display_progress_bar(False)
  try:
    with contextlib.redirect_stdout(io.StringIO()) as messages:
      builder.download_and_prepare(download_config=config)
  finally:
    tfds.display_progress_bar(True)
  if messages.getvalue().strip():
    logging.info('%s', messages.getvalue().strip())


def data_source(split: str, data_dir: str | os.PathLike[str] | None = None):
  """Random access to a split's lines, in order.

  Args:
    split: ``'train'``, ``'validation'`` or ``'test'``.
    data_dir: TFDS data directory the dataset was prepared in.

  Returns:
    ``tfds.data_source``'s ArrayRecord source, one
    ``{'text': bytes, 'ids': int32}`` per line; its ``dataset_info.metadata``
    holds the vocabulary.

  Raises:
    ValueError: for an unknown split.
    experiments.input_pipeline.DatasetNotFoundError: if the dataset is not
      prepared there.

  Example:
    >>> import pathlib, tempfile
    >>> corpus = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ('ptb.train.txt', 'ptb.valid.txt', 'ptb.test.txt'):
    ...   _ = (corpus / name).write_text(' a b\\n')
    >>> prepare(corpus / 'tfds', manual_dir=corpus)
    >>> data_source('validation', corpus / 'tfds')[0]['text']
    b' a b'
  """
  # The import is here because input_pipeline pulls in Grain and JAX, which
  # building the dataset does not need.
  from experiments import input_pipeline  # pylint: disable=g-import-not-at-top

  if split not in SPLITS:
    raise ValueError(
        f'Unknown split {split!r}; choose one of {", ".join(SPLITS)}.'
    )
  builder = Ptb(data_dir=data_dir)
  if not builder.is_prepared():
    where = data_dir or _DEFAULT_DATA_DIR
    raise input_pipeline.DatasetNotFoundError(
        f'PTB is not prepared in {where}. Prepare it once with\n'
        f"  python -c 'from experiments import ptb; "
        f'ptb.prepare("{where}", manual_dir=DIR)\'\n'
        f'where DIR holds ptb.train.txt, ptb.valid.txt and ptb.test.txt (or '
        f'leave manual_dir out to download them).'
    )
  return tfds.data_source('ptb', split=split, data_dir=data_dir, download=False)


def load_tokens(
    split: str, data_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
  """A split's token ids in order, as ``Corpus.tokenize`` gives them.

  Args:
    split: ``'train'``, ``'validation'`` or ``'test'``.
    data_dir: TFDS data directory the dataset was prepared in.

  Returns:
    int32 array of shape ``(num_tokens,)``, ``<eos>`` after every line.

  Example:
    >>> import pathlib, tempfile
    >>> corpus = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ('ptb.train.txt', 'ptb.valid.txt', 'ptb.test.txt'):
    ...   _ = (corpus / name).write_text(' a b\\n b\\n')
    >>> prepare(corpus / 'tfds', manual_dir=corpus)
    >>> load_tokens('test', corpus / 'tfds')
    array([0, 1, 2, 1, 2], dtype=int32)
  """
  source = data_source(split, data_dir)
  records = source.__getitems__(range(len(source)))
  return np.concatenate([record['ids'] for record in records]).astype(np.int32)


def load_vocabulary(
    data_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
  """The vocabulary stored with the dataset; a word's id is its index.

  Args:
    data_dir: TFDS data directory the dataset was prepared in.

  Returns:
    The words in id order (10,000 for PTB).

  Example:
    >>> import pathlib, tempfile
    >>> corpus = pathlib.Path(tempfile.mkdtemp())
    >>> for name, text in [('ptb.train.txt', ' b a\\n'),
    ...                    ('ptb.valid.txt', ' c\\n'),
    ...                    ('ptb.test.txt', ' a\\n')]:
    ...   _ = (corpus / name).write_text(text)
    >>> prepare(corpus / 'tfds', manual_dir=corpus)
    >>> load_vocabulary(corpus / 'tfds')
    ['b', 'a', '<eos>', 'c']
  """
  return list(
      data_source('train', data_dir).dataset_info.metadata[_VOCABULARY_KEY]
  )
