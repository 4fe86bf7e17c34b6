"""A short language-model run on PTB's real text, against the unigram baseline.

``python -m experiments.ptb_check PTB_DIR WORKDIR [adadiff-ptb flags...]``
needs only Mikolov's ``ptb.valid.txt`` and ``ptb.test.txt`` in ``PTB_DIR``
(73,760 and 82,430 tokens with ``<eos>``): it copies them into
``WORKDIR/text`` as the training split (the validation text) and as the
validation and test splits (the test text), prepares the ``ptb`` dataset from
there in ``WORKDIR/tfds``, prints each split's token count and the unigram
baseline's test perplexity, then runs ``python -m experiments adadiff-ptb``
with the given flags into ``WORKDIR/run`` and prints its perplexities beside
the baseline. The README's "Language model" section records such a run.

The vocabulary is that of the two texts (the words of the validation text,
then those only in the test text), so the model and the baseline predict over
the same words.
"""

import argparse
from collections.abc import Sequence
import math
import pathlib
import shutil
import sys

import numpy as np

from experiments import cli, ptb, run_directory

# Which of Mikolov's files each split of the prepared dataset is read from.
_LAYOUT = {
    'ptb.train.txt': 'ptb.valid.txt',
    'ptb.valid.txt': 'ptb.test.txt',
    'ptb.test.txt': 'ptb.test.txt',
}


def unigram_perplexity(
    train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int
) -> float:
  """Perplexity of add-one smoothed training-word frequencies on other text.

  Each word's probability is ``(count + 1) / (num_train_tokens +
  vocab_size)``, its count taken in `train_tokens`, so that a word the
  training text lacks has a finite cost.

  Args:
    train_tokens: token ids the frequencies are counted in.
    eval_tokens: token ids the perplexity is measured on.
    vocab_size: number of words (ids are below it).

  Returns:
    ``exp`` of the mean negative log-probability of `eval_tokens`.

  Example:
    >>> import numpy as np
    >>> round(unigram_perplexity(np.array([0, 0, 1]), np.array([0, 1]), 2), 4)
    2.0412
  """
  counts = np.bincount(train_tokens, minlength=vocab_size) + 1.0
  log_probabilities = np.log(counts / counts.sum())
  return math.exp(-float(np.mean(log_probabilities[eval_tokens])))


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the check; returns the training command's exit status."""
  parser = argparse.ArgumentParser(
      prog='python -m experiments.ptb_check',
      allow_abbrev=False,
      description=(
          "Train on PTB's validation text, evaluate on its test "
          'text, and compare with the unigram baseline.'
      ),
  )
  parser.add_argument('ptb_dir', help='holds ptb.valid.txt and ptb.test.txt')
  parser.add_argument('workdir')
  parser.add_argument(
      'flags',
      nargs=argparse.REMAINDER,
      help='flags of python -m experiments adadiff-ptb',
  )
  args = parser.parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  text = workdir / 'text'
  text.mkdir(parents=True, exist_ok=True)
  for name, source in _LAYOUT.items():
    shutil.copyfile(pathlib.Path(args.ptb_dir) / source, text / name)
  data_dir = workdir / 'tfds'
  ptb.prepare(data_dir, manual_dir=text)
  vocab_size = len(ptb.load_vocabulary(data_dir))
  train_tokens = ptb.load_tokens('train', data_dir)
  test_tokens = ptb.load_tokens('test', data_dir)
  baseline = unigram_perplexity(train_tokens, test_tokens, vocab_size)
  unseen = float(
      np.mean(np.bincount(train_tokens, minlength=vocab_size)[test_tokens] == 0)
  )
  print(
      f'tokens: train (ptb.valid.txt) {len(train_tokens):,}, test '
      f'(ptb.test.txt) {len(test_tokens):,}; vocabulary {vocab_size:,}; '
      f'{unseen:.2%} of the test tokens are words the training text lacks'
  )
  print(
      f'unigram baseline (add-one): test perplexity {baseline:.2f}', flush=True
  )
  status = cli.main([
      'adadiff-ptb',
      '--data',
      str(text),
      '--data-dir',
      str(data_dir),
      '--workdir',
      str(workdir / 'run'),
      *args.flags,
  ])
  if status:
    return status
  records = run_directory.read_metrics(workdir / 'run')
  print(
      '| epoch | train ppl | val ppl (batch 10) | test ppl (batch 1) | '
      'test ppl / unigram |'
  )
  print('| ---: | ---: | ---: | ---: | ---: |')
  for record in records:
    print(
        f'| {record["epoch"]:g} |'
        f' {record.get("train_perplexity", math.nan):.2f} |'
        f' {record["val_perplexity"]:.2f} | {record["test_perplexity"]:.2f} |'
        f' {record["test_perplexity"] / baseline:.3f} |'
    )
  return 0


if __name__ == '__main__':
  sys.exit(main())
