"""Sphinx configuration of the optax_adaptive documentation.

Build it from the repository's root (the README gives the command):
`sphinx-build -W --keep-going docs docs/_build/html`.
"""

import os
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# This checkout, not an installed copy, is what autodoc and the notebooks read.
sys.path.insert(0, str(ROOT))

import optax_adaptive  # noqa: E402  (after the path is set)

project = 'optax_adaptive'
author = 'optax_adaptive authors'
copyright = '2026, optax_adaptive authors'
release = optax_adaptive.__version__

extensions = [
    'myst_nb',
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.mathjax',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
    # MathJax 3 served with the site, not from a CDN: the math renders
    # offline, and the headless-browser check needs no network.
    'sphinx-mathjax-offline',
]

exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store']

# The API: one page per public name, from the docstrings (Google style, as
# optax's), in the order the source gives the members.
autosummary_generate = True
autodoc_member_order = 'bysource'
# The docstrings' Args say what each argument may be; the annotations would
# spell out optax's aliases (ScalarOrSchedule) in full.
autodoc_typehints = 'none'
autodoc_default_options = {'members': True, 'show-inheritance': False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
add_module_names = False
# The docstrings' references to optax's names (:func:`optax.adamw`) stay plain
# text: intersphinx would need the network at build time.


def _skip_named_tuple_fields(app, what, name, obj, skip, options):
  """Leaves a state's fields to its docstring's Attributes section.

  autodoc would document each field a second time, under the docstring
  Python gives it ("Alias for field number 0").
  """
  del app, what, name, options  # The event's signature.
  doc = getattr(obj, '__doc__', None) or ''
  return True if doc.startswith('Alias for field number') else skip


myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence']
myst_heading_anchors = 3

# The notebooks in notebooks/ are kept without outputs; the build runs them at
# their small size, as tests/test_notebooks.py does, so that the pages show
# the figures. Each kernel inherits this process's environment: this checkout
# on the path, one host device (a caller's request for several, as the test
# suite's conftest makes, is dropped), matplotlib's inline backend.
#
# The notebooks stay where they are, in notebooks/; the build copies them (and
# their README, the index of the section) into docs/notebooks/, which git
# ignores, so that their links to each other resolve inside the site.
NOTEBOOKS_SOURCE = ROOT / 'notebooks'
NOTEBOOKS_COPY = ROOT / 'docs' / 'notebooks'
NOTEBOOKS_COPY.mkdir(exist_ok=True)
for _source in [
    *NOTEBOOKS_SOURCE.glob('*.ipynb'),
    NOTEBOOKS_SOURCE / 'README.md',
]:
  _copy = NOTEBOOKS_COPY / _source.name
  if not _copy.exists() or _copy.read_bytes() != _source.read_bytes():
    shutil.copy2(_source, _copy)
nb_execution_mode = 'force'
nb_execution_in_temp = True
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_merge_streams = True
os.environ['OPTAX_ADAPTIVE_NOTEBOOK_SIZE'] = 'small'
os.environ['PYTHONPATH'] = os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]
)
os.environ['XLA_FLAGS'] = re.sub(
    r'--xla_force_host_platform_device_count=\d+',
    '',
    os.environ.get('XLA_FLAGS', ''),
).strip()
os.environ.pop('MPLBACKEND', None)

html_theme = 'sphinx_book_theme'
html_title = 'optax_adaptive'
# The theme reads the colour mode from here before the reader picks one; left
# empty, its script logs an error on every first visit.
html_context = {'default_mode': 'auto'}
html_theme_options = {
    'show_toc_level': 2,
    'use_download_button': False,
}


# Repository files that the site renders, by their path from the root, and
# the page of the site that renders each.
PAGES_OF_FILES = {
    'BENCHMARKS.md': 'benchmarks.md',
    'experiments/README.md': 'experiments.md',
    **{
        f'notebooks/{path.name}': f'notebooks/{path.name}'
        for path in NOTEBOOKS_SOURCE.glob('*.ipynb')
    },
}
_MARKDOWN_LINK = re.compile(r'\]\(([^)#\s]+)(#[^)\s]*)?\)')


def _link_included_files_to_pages(app, relative_path, parent_docname, content):
  """Points an included file's links to other repository files at pages.

  BENCHMARKS.md and experiments/README.md are included, not copied, and link
  to each other, and to figures committed under docs/, by their paths in the
  repository; in the site those links must reach the pages that render the
  files, or the figures in the source folder (a path from the source folder,
  written with a leading slash).
  """
  del parent_docname  # The event's signature.
  included = (pathlib.Path(app.srcdir) / relative_path).resolve().parent

  source = pathlib.Path(app.srcdir).resolve()

  def to_page(match):
    target = (included / match.group(1)).resolve()
    if not target.is_relative_to(ROOT):
      return match.group(0)
    if target.is_relative_to(source):
      # A file of the site's own source, such as a committed figure: Sphinx
      # reads a path with a leading slash from the source folder.
      return f'](/{target.relative_to(source).as_posix()})'
    page = PAGES_OF_FILES.get(target.relative_to(ROOT).as_posix())
    if page is None:
      return match.group(0)
    return f'](/{page}{match.group(2) or ""})'

  content[0] = _MARKDOWN_LINK.sub(to_page, content[0])


def setup(app):
  app.connect('autodoc-skip-member', _skip_named_tuple_fields)
  app.connect('include-read', _link_included_files_to_pages)
