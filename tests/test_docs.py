"""The built documentation site holds what it promises.

Every public name has its anchor, every link within the site reaches a page
(and the anchor it names), every notebook's page shows the figures the build
drew, and the index and an API page render in a headless Chromium without a
console error. The tests read the site that
``sphinx-build -W --keep-going docs docs/_build/html`` writes (the README's
command; ``.ci/run`` runs it before the tests). Without a built site they skip,
with that command in the reason, except in CI (``CI=true``), where a missing
site, or a missing Chromium, is a failure.
"""

import fcntl
import functools
import html.parser
import json
import os
import pathlib
import select
import shutil
import signal
import time
import urllib.parse

import pytest
import test_specification

import optax_adaptive

ROOT = pathlib.Path(__file__).parent.parent
SITE = ROOT / 'docs' / '_build' / 'html'
BUILD_COMMAND = 'sphinx-build -W --keep-going docs docs/_build/html'
IN_CI = os.environ.get('CI') == 'true'
BROWSER_TIMEOUT_S = 120


def _require(condition, reason):
  """Skips without `condition`, or fails in CI, where nothing may skip."""
  if not condition:
    if IN_CI:
      pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope='module')
def site():
  _require(
      (SITE / 'index.html').exists(),
      f'no built site in {SITE}: run `{BUILD_COMMAND}` from the root first',
  )
  return _parse_site()


class _Page(html.parser.HTMLParser):
  """The anchors a page defines and the references it makes."""

  def __init__(self):
    super().__init__()
    self.ids = set()
    self.links = []  # (tag, target) of every a href, img src, link, script
    self.images = []

  def handle_starttag(self, tag, attrs):
    attributes = dict(attrs)
    # Old-style anchors are named <a> elements.
    for anchor in ('id', 'name') if tag == 'a' else ('id',):
      if attributes.get(anchor):
        self.ids.add(attributes[anchor])
    attribute = {'a': 'href', 'link': 'href', 'img': 'src', 'script': 'src'}
    target = attributes.get(attribute.get(tag, ''))
    if target:
      self.links.append((tag, target))
      if tag == 'img':
        self.images.append(target)


@functools.cache
def _parse_site():
  pages = {}
  # _static holds the theme's templates, not pages.
  for path in sorted(SITE.rglob('*.html')):
    if path.is_relative_to(SITE / '_static'):
      continue
    page = _Page()
    page.feed(path.read_text(encoding='utf-8'))
    pages[path] = page
  return pages


def _internal_target(page_path, link):
  """The file and fragment an internal link names; None for another site."""
  parts = urllib.parse.urlsplit(link)
  if parts.scheme or parts.netloc:
    return None
  path = urllib.parse.unquote(parts.path)
  target = (page_path.parent / path).resolve() if path else page_path
  return target, urllib.parse.unquote(parts.fragment)


def test_every_public_name_has_an_anchor(site):
  anchors = set().union(*(page.ids for page in site.values()))
  missing = [
      name
      for name in optax_adaptive.__all__
      if f'optax_adaptive.{name}' not in anchors
  ]
  assert missing == []


def test_every_internal_link_resolves(site):
  broken = []
  for page_path, page in site.items():
    for tag, link in page.links:
      resolved = _internal_target(page_path, link)
      if resolved is None:
        continue
      target, fragment = resolved
      if not target.is_file() or not target.is_relative_to(SITE):
        broken.append(f'{page_path.relative_to(SITE)}: <{tag}> {link}')
      elif fragment and target.suffix == '.html':
        if fragment not in site[target].ids:
          broken.append(f'{page_path.relative_to(SITE)}: <{tag}> {link} (#)')
  assert broken == []


def test_the_specification_has_the_anchor_of_every_section(site):
  """A citation docs/specification.md#<target> is the page's address too."""
  page = SITE / 'specification.html'
  assert page in site, 'no page for docs/specification.md'
  anchors = test_specification.section_anchors()
  assert len(anchors) >= 15
  assert sorted(anchors - site[page].ids) == []


@pytest.mark.parametrize(
    'notebook',
    sorted((ROOT / 'notebooks').glob('*.ipynb')),
    ids=lambda path: path.stem,
)
def test_every_notebook_page_shows_its_figures(site, notebook):
  page_path = SITE / 'notebooks' / f'{notebook.stem}.html'
  assert page_path in site, f'no page for {notebook.name}'
  figures = [
      source
      for source in site[page_path].images
      if source.startswith('data:image/png')
      or (
          source.endswith('.png')
          and _internal_target(page_path, source)[0].is_file()
      )
  ]
  assert figures, f'{page_path.relative_to(SITE)} shows no figure'


class _Chromium:
  """A headless Chromium, driven by its DevTools protocol.

  ``--remote-debugging-pipe`` has the browser read commands from its file
  descriptor 3 and write replies and events to 4, as JSON messages that end
  with a NUL byte: no port, no network, and no client library.
  """

  def __init__(self, executable):
    # The browser's ends, moved above 4 so that placing them at 3 and 4 in the
    # child clobbers neither; close-on-exec leaves only those two copies open.
    commands_read, replies_write = (
        _move_above_4(fd) for fd in self._pipe_ends()
    )
    self.pid = os.posix_spawn(
        executable,
        [
            executable,
            '--headless',
            # The sandbox cannot start as root, nor in most containers.
            '--no-sandbox',
            '--disable-gpu',
            '--remote-debugging-pipe',
        ],
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, commands_read, 3),
            (os.POSIX_SPAWN_DUP2, replies_write, 4),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ],
    )
    os.close(commands_read)
    os.close(replies_write)
    self._deadline = time.monotonic() + BROWSER_TIMEOUT_S
    self._buffer = b''
    self._last_id = 0
    self.events = []

  def _pipe_ends(self):
    """Makes both pipes; keeps this side's ends, returns the browser's."""
    commands_read, self._commands = os.pipe()
    self._replies, replies_write = os.pipe()
    return commands_read, replies_write

  def send(self, method, session=None, **params):
    self._last_id += 1
    message = {'id': self._last_id, 'method': method, 'params': params}
    if session:
      message['sessionId'] = session
    os.write(self._commands, json.dumps(message).encode() + b'\0')
    while (reply := self._receive()).get('id') != self._last_id:
      self.events.append(reply)
    assert 'error' not in reply, (method, reply['error'])
    return reply['result']

  def wait_for_event(self, method, session):
    def matches(event):
      return event.get('method') == method and event['sessionId'] == session

    while not any(matches(event) for event in self.events):
      self.events.append(self._receive())

  def _receive(self):
    while b'\0' not in self._buffer:
      remaining = self._deadline - time.monotonic()
      if not select.select([self._replies], [], [], max(remaining, 0))[0]:
        raise TimeoutError(f'Chromium did not answer in {BROWSER_TIMEOUT_S} s')
      chunk = os.read(self._replies, 1 << 16)
      if not chunk:
        raise EOFError('Chromium closed its pipe')
      self._buffer += chunk
    message, self._buffer = self._buffer.split(b'\0', 1)
    return json.loads(message)

  def close(self):
    try:
      self.send('Browser.close')
    finally:
      os.close(self._commands)
      os.close(self._replies)
      self._reap()

  def _reap(self):
    """Waits for the browser to exit, and kills it if it hangs."""
    deadline = time.monotonic() + BROWSER_TIMEOUT_S
    while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
      if time.monotonic() > deadline:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return
      time.sleep(0.1)


def _move_above_4(fd):
  moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
  os.close(fd)
  return moved


def _render(chromium, url):
  """Opens `url`; returns its title, its typeset formulas and its errors.

  The errors are what the console shows in red: uncaught exceptions,
  ``console.error`` calls, and the browser's own entries of level error, among
  them every resource (script, style sheet, image) that failed to load.
  """
  browser = _Chromium(chromium)
  try:
    target = browser.send('Target.createTarget', url='about:blank')
    session = browser.send(
        'Target.attachToTarget', targetId=target['targetId'], flatten=True
    )['sessionId']
    for domain in ('Runtime', 'Log', 'Page'):
      browser.send(f'{domain}.enable', session)
    browser.send('Page.navigate', session, url=url)
    browser.wait_for_event('Page.loadEventFired', session)

    def evaluate(expression):
      return browser.send(
          'Runtime.evaluate',
          session,
          expression=expression,
          awaitPromise=True,
          returnByValue=True,
      )['result']['value']

    # MathJax typesets after the load event; its promise says when it is done.
    formulas = evaluate(
        '(window.MathJax?.startup?.promise ?? Promise.resolve()).then('
        "() => document.querySelectorAll('mjx-container').length)"
    )
    title = evaluate('document.title')
  finally:
    browser.close()
  errors = []
  for event in browser.events:
    params = event.get('params', {})
    if event.get('method') == 'Runtime.exceptionThrown':
      errors.append(params['exceptionDetails'].get('text'))
    elif event.get('method') == 'Runtime.consoleAPICalled':
      if params['type'] in ('error', 'assert'):
        errors.append(params['args'])
    elif event.get('method') == 'Log.entryAdded':
      if params['entry']['level'] == 'error':
        errors.append(params['entry'])
  return title, formulas, errors


@pytest.mark.parametrize(
    'page', ['index.html', '_autosummary/optax_adaptive.adaloss.html']
)
def test_pages_render_in_a_headless_browser_without_console_errors(site, page):
  del site  # Only its check that the site is built.
  chromium = shutil.which('chromium') or shutil.which('chromium-browser')
  _require(chromium, 'no chromium (the Debian package `chromium`) to run')
  title, formulas, errors = _render(chromium, (SITE / page).as_uri())
  assert errors == []
  assert 'optax_adaptive' in title
  # Both pages hold formulas: the index in its table, the API page in the
  # docstring. The bundled MathJax typesets them.
  assert formulas > 0
