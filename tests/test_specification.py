"""The specification lives in the repository, and what cites it resolves.

docs/specification.md states every rule the methods follow. Docstrings, tests
and pages cite a rule by the page's path and the anchor of its section
(`docs/specification.md#spec-acme-table`); no tracked file cites a document
outside the repository.
"""

import pathlib
import re
import shutil
import subprocess

import pytest

import optax_adaptive

ROOT = pathlib.Path(__file__).parent.parent
SPECIFICATION = ROOT / 'docs' / 'specification.md'
# What files cited before the specification moved in: the page of a folder
# beside the checkout, and paths on one machine. The character class keeps
# this file's own pattern from matching itself.
OUTSIDE = re.compile(r'algorithms\.md|\.\./shared|/wor[k]/', re.IGNORECASE)
CITATION = re.compile(r'specification\.md#([\w-]+)')


def section_anchors() -> set[str]:
  """The labels of the specification's sections, its MyST targets."""
  return set(
      re.findall(r'^\(([\w-]+)\)=$', SPECIFICATION.read_text(), re.MULTILINE)
  )


@pytest.fixture(scope='module')
def tracked_texts() -> dict[str, str]:
  """Every tracked text file, by its path from the root."""
  if shutil.which('git') is None or not (ROOT / '.git').exists():
    pytest.skip('needs a git checkout to know the tracked files')
  names = subprocess.run(
      ['git', 'ls-files', '-z'], cwd=ROOT, check=True, capture_output=True
  ).stdout.decode()
  texts = {}
  for name in filter(None, names.split('\0')):
    path = ROOT / name
    if not path.is_file():  # deleted in the working tree, not yet committed
      continue
    try:
      texts[name] = path.read_text(encoding='utf-8')
    except UnicodeDecodeError:  # the reference runs' arrays, images
      continue
  return texts


def test_no_tracked_file_cites_a_document_outside_the_repository(
    tracked_texts,
):
  outside = [
      f'{name}:{text.count(chr(10), 0, match.start()) + 1}: {match.group()}'
      for name, text in tracked_texts.items()
      for match in OUTSIDE.finditer(text)
  ]
  assert outside == []


def test_every_citation_names_a_section_of_the_specification(tracked_texts):
  anchors = section_anchors()
  cited = {
      (name, label)
      for name, text in tracked_texts.items()
      for label in CITATION.findall(text)
  }
  # The tests, the reference runs' README, the docstrings and the pages.
  assert len({name for name, _ in cited}) >= 8, cited
  assert sorted(c for c in cited if c[1] not in anchors) == []


def test_the_specification_gives_every_public_function_its_rule():
  text = SPECIFICATION.read_text()
  functions = [name for name in optax_adaptive.__all__ if name.islower()]
  assert functions
  missing = [f for f in functions if f'optax_adaptive.{f}`' not in text]
  assert missing == []
