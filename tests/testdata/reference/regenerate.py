"""Regenerates the reference runs of this folder with the authors' own code.

Each case trains the README's small classifier for a few steps in float64
with one of the authors' PyTorch optimizers, imported from a checkout of their
repository at the commit pinned in ``REPOSITORIES``, and writes ``NAME.npz``
and ``cases.json`` in the format the README describes. The README's section
"Regenerating the runs" gives the commands; in short, with PyTorch installed:

  python tests/testdata/reference/regenerate.py --adaloss DIR \\
      --adamw-scale-free DIR --adadiff DIR --acme DIR [--out DIR]

With ``--out`` another folder, each case's line gives the largest difference
between the new arrays and the ones stored here. The case list and the data
(inputs, labels, minibatches) need only NumPy: tests/test_reference_cases.py
checks them against the stored files without PyTorch.
"""

import argparse
from collections.abc import Callable
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import pathlib
import shutil
import sys
import types
from typing import Any

import numpy as np

REFERENCE_DIR = pathlib.Path(__file__).resolve().parent
NUM_EXAMPLES, NUM_CLASSES, BATCH_SIZE = 64, 5, 16
INPUT_SHAPE = (3, 6, 6)  # channels, height, width
CONV_CHANNELS, KERNEL_SIZE = 4, 3


@dataclasses.dataclass(frozen=True)
class Repository:
  """One of the authors' repositories: the commit, and the files run here.

  ``files`` maps each path to its git blob id at that commit (what
  ``git rev-parse COMMIT:PATH`` prints): the script checks them before it
  imports anything, in a clone or in an exported tree alike.
  """

  name: str
  commit: str
  files: dict[str, str]


REPOSITORIES = {
    'adaloss': Repository(
        'gail-yxie/adaloss',
        'f44ca3c646ba4427ff596c6af757038b44ef6d73',
        {
            'model/loss.py': 'f97dc891ce66f0791c1b904e86c745b1660d05c1',
            'utils/adanorm.py': '16ba5ce0546f072605dafb57215f95d1adf61477',
            'parse_config.py': '931ff586cc3310a1ecc98cbe77567466d24287d9',
        },
    ),
    'adamw_scale_free': Repository(
        'zhenxun-zhuang/AdamW-Scale-free',
        'a42773cf88ce94d71cb275762b01d13fd6eff0a7',
        {'src/adam.py': 'e078fda008badb95606a6cecc44c73775d42f8ba'},
    ),
    'adadiff': Repository(
        'deerOfHd/AdaDiff_v1',
        '2723971050652f66bcc1ef6e1389254d87b25487',
        {'AdaDiff.py': 'd40ebea77a2d7aef9471b8aeb7d63e629f83da7a'},
    ),
    'acme': Repository(
        'ignasi00/acme',
        'b0796c85a318839b31d590843bdf69c4e70c476a',
        {'acme/acme.py': '2d307b03eb3bd0d1f1d4277b78885e031c3a4db5'},
    ),
}


# The AdaLoss repository's losses, which scale the loss before torch's SGD.
_CRITERIA = {
    'adaloss': 'AdaLoss',
    'sgd_constant': 'PlainLossb0',
    'sgd_decay_sqrt': 'PlainLossSqrt',
}


@dataclasses.dataclass(frozen=True)
class Case:
  """One reference run: an entry of cases.json (the README lists its fields)."""

  name: str
  optimizer: str
  seed: int
  steps: int
  hparams: dict[str, Any]
  bias: bool = True
  loss_multiplier: float | None = None
  x_scale: float | None = None
  conflict: bool = False
  schedule: list[float] | None = None

  @classmethod
  def from_json(cls, entry: dict[str, Any]) -> 'Case':
    """The case an entry describes; a ValueError says what is wrong with it."""
    fields = {field.name for field in dataclasses.fields(cls)}
    if entry.keys() - fields:
      raise ValueError(f'unknown fields {sorted(entry.keys() - fields)}')
    case = cls(**entry)
    wanted = HPARAMS.get(case.optimizer)
    if wanted is None:
      raise ValueError(f'{case.name}: no optimizer {case.optimizer!r}')
    if set(case.hparams) != wanted:
      raise ValueError(
          f'{case.name}: hparams {sorted(case.hparams)}, not {sorted(wanted)}'
      )
    if case.schedule is not None and len(case.schedule) != case.steps:
      raise ValueError(f'{case.name}: a schedule of {len(case.schedule)} rates')
    if case.loss_multiplier is not None and case.optimizer in _CRITERIA:
      raise ValueError(f'{case.name}: {case.optimizer} scales its own loss')
    return case

  @property
  def records_codes(self) -> bool:
    """Whether the run stores the row of the step-size table of each step."""
    return self.name.startswith('acme_branches_')


# The hyperparameters of each optimizer's cases, named as the library names
# them; the steps below pass each to the authors' code under its own name.
_ADAM = {'learning_rate', 'b1', 'b2', 'eps', 'weight_decay'}
HPARAMS = {
    'adaloss': {'learning_rate', 'b0', 'alpha', 'c', 'weight_decay'},
    'sgd_constant': {'learning_rate', 'b0', 'weight_decay'},
    'sgd_decay_sqrt': {'learning_rate', 'b0', 'alpha', 'weight_decay'},
    'adagrad_norm_rows': {'learning_rate', 'b0'},
    'adam_l2': _ADAM,
    'adamw': _ADAM,
    'adam_prox': _ADAM,
    'adadiff': _ADAM,
    'acme': (
        _ADAM
        | {
            'adapt_learning_rate',
            'adam',
            'asam',
            'rho',
            'eta',
            'nesterov',
            'bias_correction',
        }
    ),
}


def load_cases(path: pathlib.Path = REFERENCE_DIR / 'cases.json') -> list[Case]:
  return [Case.from_json(entry) for entry in json.loads(path.read_text())]


def make_data(case: Case) -> dict[str, np.ndarray]:
  """The inputs, labels and minibatch rows of a case, from its seed."""
  rng = np.random.default_rng(case.seed)
  inputs = rng.standard_normal((NUM_EXAMPLES, *INPUT_SHAPE))
  if case.x_scale is not None:
    inputs = inputs * case.x_scale
  labels = rng.integers(0, NUM_CLASSES, NUM_EXAMPLES)
  batches = np.stack([
      rng.choice(NUM_EXAMPLES, BATCH_SIZE, replace=False)
      for _ in range(case.steps)
  ])
  if case.conflict:
    half = NUM_EXAMPLES // 2
    inputs[half:] = inputs[:half]
    # Drawn after the plain minibatches, which they replace: the stored runs
    # were made in this order, and the draws must follow it to reproduce them.
    batches = np.stack([
        rng.choice(half, BATCH_SIZE, replace=False) + half * (step % 2)
        for step in range(case.steps)
    ])
  return {'X': inputs, 'y': labels, 'batches': batches}


def blob_id(content: bytes) -> str:
  """The id git gives a file of this content."""
  return hashlib.sha1(b'blob %d\0' % len(content) + content).hexdigest()


def checkout_problem(key: str, directory: pathlib.Path) -> str | None:
  """Why `directory` is not the pinned checkout of REPOSITORIES[key], if not."""
  repository = REPOSITORIES[key]
  wanted = f'a checkout of {repository.name} at {repository.commit[:12]}'
  for path, blob in repository.files.items():
    file = directory / path
    if not file.is_file():
      return f'{directory} has no {path}: pass {wanted}'
    if blob_id(file.read_bytes()) != blob:
      return f'{file} differs from the file of {wanted}'
  return None


def _load_file(name: str, path: pathlib.Path) -> types.ModuleType:
  spec = importlib.util.spec_from_file_location(name, path)
  assert spec is not None and spec.loader is not None, path
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@dataclasses.dataclass(frozen=True)
class AuthorsCode:
  """The authors' modules, imported from the checkouts."""

  adaloss_config: type  # the configuration singleton their losses read
  adaloss_losses: types.ModuleType
  adagrad_norm: types.ModuleType
  scale_free_adam: types.ModuleType
  adadiff: types.ModuleType
  acme: types.ModuleType

  @classmethod
  def load(cls, checkouts: dict[str, pathlib.Path]) -> 'AuthorsCode':
    # The AdaLoss modules import their siblings from the repository's root.
    sys.path.insert(0, str(checkouts['adaloss']))
    return cls(
        importlib.import_module('parse_config').ConfigParser,
        importlib.import_module('model.loss'),
        importlib.import_module('utils.adanorm'),
        _load_file(
            'scale_free_adam', checkouts['adamw_scale_free'] / 'src/adam.py'
        ),
        _load_file('adadiff', checkouts['adadiff'] / 'AdaDiff.py'),
        _load_file('acme', checkouts['acme'] / 'acme/acme.py'),
    )

  def adaloss_criterion(self, class_name, *, b0, alpha, c):
    """One of the AdaLoss repository's losses, which scale the loss."""
    # They read b0 and c from the training script's configuration, a
    # singleton that would parse the command line: it is set here instead.
    config = object.__new__(self.adaloss_config)
    config._config = {'train_loss': {'args': {'b0': b0, 'cc': c}}}
    self.adaloss_config._ConfigParser__instance = config
    return getattr(self.adaloss_losses, class_name)(
        num_examp=NUM_EXAMPLES, num_classes=NUM_CLASSES, alpha=alpha
    )


# A step: (step index, inputs, labels) -> (loss before the update, the
# recorded scalar or None, the table's row or None).
Step = Callable[[int, Any, Any], tuple[float, float | None, int | None]]


def _model(bias: bool):
  """The README's model, initialised by PyTorch from its global seed."""
  # Here and below, PyTorch is imported where it is used: the case list and
  # the data need only NumPy, and the tests read them without PyTorch.
  import torch

  height, width = (n - KERNEL_SIZE + 1 for n in INPUT_SHAPE[1:])
  return torch.nn.ModuleDict({
      'conv': torch.nn.Conv2d(
          INPUT_SHAPE[0], CONV_CHANNELS, KERNEL_SIZE, bias=bias
      ),
      'fc': torch.nn.Linear(
          CONV_CHANNELS * height * width, NUM_CLASSES, bias=bias
      ),
  })


def _logits(model, inputs):
  import torch

  return model['fc'](torch.relu(model['conv'](inputs)).flatten(1))


def _loss(case: Case, model, inputs, labels):
  import torch

  loss = torch.nn.functional.cross_entropy(_logits(model, inputs), labels)
  return loss if case.loss_multiplier is None else case.loss_multiplier * loss


def _scaled_loss_sgd(case: Case, model, code: AuthorsCode) -> Step:
  """AdaLoss and its SGD baselines: a scaled loss, then torch's SGD."""
  import torch

  h = case.hparams
  criterion = code.adaloss_criterion(
      _CRITERIA[case.optimizer],
      b0=h['b0'],
      alpha=h.get('alpha', 0.0),
      c=h.get('c', 0.0),
  )
  optimizer = torch.optim.SGD(
      model.parameters(), lr=h['learning_rate'], weight_decay=h['weight_decay']
  )

  def step(index, inputs, labels):
    del index  # The rate is fixed.
    optimizer.zero_grad()
    logits = _logits(model, inputs)
    criterion(None, logits, labels).backward()
    optimizer.step()
    loss = torch.nn.functional.cross_entropy(logits, labels)
    scalar = criterion.acc_loss_array if case.optimizer == 'adaloss' else None
    return loss.item(), None if scalar is None else float(scalar), None

  return step


def _plain_step(case: Case, model, optimizer) -> Step:
  """A step of an optimizer that takes the gradient of the plain loss."""
  schedule = case.schedule

  def step(index, inputs, labels):
    if schedule is not None:
      for group in optimizer.param_groups:
        group['lr'] = schedule[index]
    optimizer.zero_grad()
    loss = _loss(case, model, inputs, labels)
    loss.backward()
    optimizer.step()
    return loss.item(), None, None

  return step


_WEIGHT_DECAY_OPTIONS = {
    'adam_l2': 'AdamL2',
    'adamw': 'AdamW',
    'adam_prox': 'AdamProx',
}


def _scale_free_adam(case: Case, model, code: AuthorsCode) -> Step:
  h = case.hparams
  optimizer = code.scale_free_adam.Adam(
      model.parameters(),
      lr=h['learning_rate'],
      betas=(h['b1'], h['b2']),
      eps=h['eps'],
      weight_decay=h['weight_decay'],
      weight_decay_option=_WEIGHT_DECAY_OPTIONS[case.optimizer],
  )
  return _plain_step(case, model, optimizer)


def _adagrad_norm_rows(case: Case, model, code: AuthorsCode) -> Step:
  h = case.hparams
  optimizer = code.adagrad_norm.Adagradnorm(
      model.parameters(),
      lr=h['learning_rate'],
      initial_accumulator_value=h['b0'],
  )
  return _plain_step(case, model, optimizer)


def _adadiff(case: Case, model, code: AuthorsCode) -> Step:
  h = case.hparams
  optimizer = code.adadiff.AdaDiff(
      model.parameters(),
      lr=h['learning_rate'],
      betas=(h['b1'], h['b2']),
      eps=h['eps'],
      weight_decay=h['weight_decay'],
  )
  return _plain_step(case, model, optimizer)


def _acme_step(case: Case, model, code: AuthorsCode) -> Step:
  h = case.hparams
  optimizer = code.acme.Acme(
      model,
      lr=h['learning_rate'],
      betas=(h['b1'], h['b2']),
      epsilon=h['eps'],
      weight_decay=h['weight_decay'],
      acme=h['adapt_learning_rate'],
      adam=h['adam'],
      asam=h['asam'],
      rho=h['rho'],
      eta=h['eta'],
      nesterov=h['nesterov'],
      bias_correction=h['bias_correction'],
  )
  group = optimizer.param_groups[0]

  def step(index, inputs, labels):
    del index  # ACME adapts the rate itself.

    def closure():
      loss = _loss(case, model, inputs, labels)
      loss.backward()
      return loss

    loss = optimizer.step(closure)
    # `ret` ends with the authors' `cod`, the row of the table the step took.
    row = group['ret'][-1] if h['adapt_learning_rate'] else None
    return loss.item(), float(group['lr']), row

  return step


_STEPS: dict[str, Callable[[Case, Any, AuthorsCode], Step]] = {
    'adaloss': _scaled_loss_sgd,
    'sgd_constant': _scaled_loss_sgd,
    'sgd_decay_sqrt': _scaled_loss_sgd,
    'adagrad_norm_rows': _adagrad_norm_rows,
    'adam_l2': _scale_free_adam,
    'adamw': _scale_free_adam,
    'adam_prox': _scale_free_adam,
    'adadiff': _adadiff,
    'acme': _acme_step,
}


def run_case(case: Case, code: AuthorsCode) -> dict[str, np.ndarray]:
  """The arrays of a case's .npz, from a run of the authors' optimizer."""
  import torch

  torch.set_default_dtype(torch.float64)
  data = make_data(case)
  torch.manual_seed(case.seed)
  model = _model(case.bias)
  params = dict(model.named_parameters())
  arrays = dict(data)
  for name, param in params.items():
    arrays[f'init/{name}'] = param.detach().numpy().copy()
  step = _STEPS[case.optimizer](case, model, code)
  losses, scalars, rows = [], [], []
  trajectories: dict[str, list[np.ndarray]] = {name: [] for name in params}
  for index, batch in enumerate(data['batches']):
    inputs = torch.from_numpy(data['X'][batch])
    labels = torch.from_numpy(data['y'][batch])
    loss, scalar, row = step(index, inputs, labels)
    losses.append(loss)
    scalars.append(scalar)
    rows.append(row)
    for name, param in params.items():
      trajectories[name].append(param.detach().numpy().copy())
  arrays['losses'] = np.array(losses)
  if scalars[0] is not None:
    arrays['scalars'] = np.array(scalars)
  if case.records_codes:
    arrays['codes'] = np.array(rows, np.int64)
  for name, trajectory in trajectories.items():
    arrays[f'traj/{name}'] = np.stack(trajectory)
  return arrays


def difference_from_stored(case: Case, arrays: dict[str, np.ndarray]) -> str:
  """How the new arrays of a case differ from those stored in this folder."""
  path = REFERENCE_DIR / f'{case.name}.npz'
  if not path.exists():
    return 'no stored run'
  with np.load(path) as stored:
    if set(stored.files) != set(arrays):
      return f'other arrays: {sorted(set(stored.files) ^ set(arrays))}'
    reshaped = [k for k in arrays if stored[k].shape != arrays[k].shape]
    if reshaped:
      return f'other shapes: {reshaped}'
    largest = max(
        float(np.max(np.abs(arrays[k] - stored[k]), initial=0.0))
        for k in arrays
    )
  return f'max |new - stored| over {len(arrays)} arrays: {largest:.3g}'


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description="Regenerates the reference runs with the authors' optimizers."
  )
  for key, repository in REPOSITORIES.items():
    parser.add_argument(
        '--' + key.replace('_', '-'),
        type=pathlib.Path,
        required=True,
        metavar='DIR',
        help=f'a checkout of {repository.name} at {repository.commit[:12]}',
    )
  parser.add_argument(
      '--out',
      type=pathlib.Path,
      default=REFERENCE_DIR,
      metavar='DIR',
      help='where to write (default: this folder, replacing the stored runs)',
  )
  args = parser.parse_args(argv)
  try:
    cases = load_cases()
  except (ValueError, TypeError) as error:
    parser.error(f'cases.json: {error}')
  checkouts = {key: getattr(args, key) for key in REPOSITORIES}
  for key, directory in checkouts.items():
    problem = checkout_problem(key, directory)
    if problem is not None:
      parser.error(problem)
  if importlib.util.find_spec('torch') is None:
    parser.error("the authors' optimizers need PyTorch, which is not installed")
  code = AuthorsCode.load(checkouts)
  out = args.out.resolve()
  out.mkdir(parents=True, exist_ok=True)
  compare = out != REFERENCE_DIR
  if compare:
    shutil.copyfile(REFERENCE_DIR / 'cases.json', out / 'cases.json')
  for case in cases:
    arrays = run_case(case, code)
    np.savez_compressed(out / f'{case.name}.npz', **arrays)
    report = difference_from_stored(case, arrays) if compare else 'written'
    print(f'{case.name}: {report}', flush=True)


if __name__ == '__main__':
  main()
