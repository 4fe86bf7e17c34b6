"""The distribution holds the library alone, and its layout is the public one.

The wheel and the sdist are built from a copy of the tracked files with the
installed setuptools (no build isolation, so no download), as a user's
`pip install` would build them.
"""

import importlib
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import types
import zipfile

import pytest
import tomllib

import optax_adaptive

ROOT = pathlib.Path(__file__).parent.parent


@pytest.fixture(scope='module')
def distributions(tmp_path_factory) -> dict[str, list[str]]:
  """The file lists of a wheel and an sdist built from the tracked files."""
  if shutil.which('git') is None or not (ROOT / '.git').exists():
    pytest.skip('needs a git checkout to know the tracked files')
  source = tmp_path_factory.mktemp('source')
  tracked = (
      subprocess.run(
          ['git', 'ls-files', '-z'], cwd=ROOT, check=True, capture_output=True
      )
      .stdout.decode()
      .split('\0')
  )
  for name in filter(None, tracked):
    if (ROOT / name).is_file():
      (source / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(ROOT / name, source / name)
  out = tmp_path_factory.mktemp('dist')
  for hook in ('build_wheel', 'build_sdist'):
    # One process per hook, as a build frontend runs them.
    build = f'import sys, setuptools.build_meta as b; b.{hook}(sys.argv[1])'
    subprocess.run(
        [sys.executable, '-c', build, str(out)],
        cwd=source,
        check=True,
        capture_output=True,
    )
  (wheel,) = out.glob('*.whl')
  (sdist,) = out.glob('*.tar.gz')
  with zipfile.ZipFile(wheel) as archive:
    wheel_files = archive.namelist()
    (metadata,) = [f for f in wheel_files if f.endswith('.dist-info/METADATA')]
    requirements = re.findall(
        r'^Requires-Dist: (.*)$', archive.read(metadata).decode(), re.MULTILINE
    )
  with tarfile.open(sdist) as archive:
    # Names below the sdist's single top folder.
    sdist_files = [
        m.name.split('/', 1)[1] for m in archive.getmembers() if m.isfile()
    ]
  return {
      'wheel': wheel_files,
      'sdist': sdist_files,
      'wheel_name': [wheel.name],
      'requirements': requirements,
  }


def test_the_wheel_holds_the_library_and_its_metadata_only(distributions):
  version = optax_adaptive.__version__
  metadata = f'optax_adaptive-{version}.dist-info/'
  others = [
      f
      for f in distributions['wheel']
      if not (f.startswith('optax_adaptive/') or f.startswith(metadata))
  ]
  assert others == []
  assert 'optax_adaptive/py.typed' in distributions['wheel']
  assert 'optax_adaptive/_src/acme.py' in distributions['wheel']
  assert distributions['wheel_name'][0].startswith(f'optax_adaptive-{version}-')


def test_the_sdist_holds_no_experiments_benchmarks_or_tests(distributions):
  top_folders = {f.split('/')[0] for f in distributions['sdist'] if '/' in f}
  assert top_folders <= {'optax_adaptive', 'optax_adaptive.egg-info'}
  assert 'pyproject.toml' in distributions['sdist']
  assert 'optax_adaptive/_src/acme.py' in distributions['sdist']


def test_the_wheel_requires_jax_optax_and_chex_alone(distributions):
  always = [r for r in distributions['requirements'] if 'extra ==' not in r]
  names = {re.split(r'[<>=!~ ;\[]', r, maxsplit=1)[0].lower() for r in always}
  assert names == {'jax', 'optax', 'chex'}


def test_the_version_has_one_source():
  with open(ROOT / 'pyproject.toml', 'rb') as f:
    pyproject = tomllib.load(f)
  assert 'version' not in pyproject['project']
  assert 'version' in pyproject['project']['dynamic']
  assert pyproject['tool']['setuptools']['dynamic']['version'] == {
      'attr': 'optax_adaptive.__version__'
  }


@pytest.mark.parametrize(
    'family',
    [
        'acme',
        'adadiff',
        'adagrad_norm',
        'adaloss',
        'scale_free',
        'sgd_baselines',
    ],
)
def test_each_family_is_a_private_module_and_the_public_names_are_reexported(
    family,
):
  module = importlib.import_module(f'optax_adaptive._src.{family}')
  assert isinstance(module, types.ModuleType)
  exported = [
      n
      for n in optax_adaptive.__all__
      if getattr(getattr(optax_adaptive, n), '__module__', '')
      == module.__name__
  ]
  assert exported, f'{family} exports nothing'


def test_the_package_namespace_is_the_public_api_alone():
  public = {n for n in dir(optax_adaptive) if not n.startswith('_')}
  assert public == set(optax_adaptive.__all__)
