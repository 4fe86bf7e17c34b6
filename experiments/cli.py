"""`python -m experiments`: the experiments' command line.

``compare`` is the first run: it trains one small model on scikit-learn's digits
(no download) with every optimizer of the library and writes a comparison table
and plot.
"""

import argparse
import pathlib
import sys
import time

from experiments import input_pipeline
from experiments import train

# Settings for `compare`, fixed rather than tuned per method. The scale-free
# decay of adamw/adam_prox is applied per step (weight_decay * lr_t / lr_0), so
# 5e-4 here is optax.adamw's weight_decay=0.5 at this rate.
COMPARE = {
    'adaloss': dict(learning_rate=1.0, optimizer_kwargs=dict(b0=1.0)),
    'adagrad_norm': dict(learning_rate=1.0, optimizer_kwargs=dict(b0=1.0)),
    'sgd_constant': dict(learning_rate=0.1, optimizer_kwargs=dict(b0=1.0)),
    'sgd_decay_sqrt': dict(learning_rate=0.5, optimizer_kwargs=dict(b0=1.0)),
    'adam_l2': dict(learning_rate=1e-3, optimizer_kwargs=dict(weight_decay=5e-4)),
    'adamw': dict(learning_rate=1e-3, optimizer_kwargs=dict(weight_decay=5e-4)),
    'adam_prox': dict(learning_rate=1e-3, optimizer_kwargs=dict(weight_decay=5e-4)),
    'adadiff': dict(learning_rate=1e-3, optimizer_kwargs=dict(weight_decay=5e-4)),
    'acme': dict(learning_rate=1e-3),
}


def compare(args) -> int:
  workdir = pathlib.Path(args.workdir)
  results = {}
  for name in args.optimizers:
    settings = COMPARE[name]
    config = train.Config(
        dataset='digits', model=args.model, optimizer=name,
        batch_size=args.batch_size, num_epochs=args.epochs,
        max_steps_per_epoch=args.max_steps_per_epoch, seed=args.seed,
        **settings)
    started = time.perf_counter()
    history = train.train_and_evaluate(config, str(workdir / name))
    results[name] = (history, time.perf_counter() - started)
    print(f'{name:16s} test accuracy {history[-1]["eval_accuracy"]:.3f} '
          f'({results[name][1]:.0f} s)', flush=True)
  _write_table(workdir / 'comparison.md', results, args)
  _write_plot(workdir / 'comparison.png', results)
  print(f'Wrote {workdir / "comparison.md"} and {workdir / "comparison.png"}.')
  return 0


def _write_table(path, results, args):
  lines = [
      f'# {args.model} on digits, {args.epochs} epochs, batch {args.batch_size}, '
      f'seed {args.seed}',
      '',
      '| method | final train loss | test accuracy | wall time (s) |',
      '| --- | ---: | ---: | ---: |',
  ]
  for name, (history, seconds) in results.items():
    lines.append(f'| {name} | {history[-1]["train_loss"]:.4f} '
                 f'| {history[-1]["eval_accuracy"]:.4f} | {seconds:.0f} |')
  path.write_text('\n'.join(lines) + '\n')


def _write_plot(path, results):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
  for name, (history, _) in results.items():
    epochs = [r['epoch'] for r in history]
    loss_axis.plot(epochs, [r['train_loss'] for r in history], label=name)
    accuracy_axis.plot(epochs, [r['eval_accuracy'] for r in history], label=name)
  loss_axis.set(xlabel='epoch', ylabel='train loss', yscale='log')
  accuracy_axis.set(xlabel='epoch', ylabel='test accuracy')
  accuracy_axis.legend(fontsize='small')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m experiments')
  commands = parser.add_subparsers(dest='command', required=True)
  cmp = commands.add_parser(
      'compare', help='every optimizer on digits: a table and a plot')
  cmp.add_argument('--workdir', default='runs/compare')
  cmp.add_argument('--model', default='resnet8')
  cmp.add_argument('--optimizers', nargs='+', default=list(COMPARE),
                   choices=list(COMPARE), metavar='NAME')
  cmp.add_argument('--epochs', type=int, default=4)
  cmp.add_argument('--batch-size', type=int, default=64)
  cmp.add_argument('--max-steps-per-epoch', type=int, default=None)
  cmp.add_argument('--seed', type=int, default=0)
  cmp.set_defaults(run=compare)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.run(args)
  except (ValueError, input_pipeline.DatasetNotFoundError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
