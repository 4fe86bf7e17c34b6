"""CIFAR ResNet-20 training images/s: JAX and this library against PyTorch.

For every optimizer of the library (and ``optax.adam``), the jitted training
step of ``experiments.models``' ResNet-20 at batch 128, with and without
BatchNorm, beside the same network and step written in plain PyTorch eager mode
(``benchmarks/torch_reference.py``), in one run: JAX and PyTorch each run in
their own worker process and the steps are timed one at a time in alternation,
so that both see the same load. The ratio is the median of the round-by-round
ratios.

PyTorch steps: ``torch.optim`` for SGD, Adam (with its L2 ``weight_decay`` for
Adam-L2) and AdamW; AdaDiff as its authors' optimizer computes it; AdaLoss as
its authors run it (SGD on the loss divided by b_t). Where there is no PyTorch
form here, the table names the closest step it times instead: SGD for
AdaGrad-Norm, AdamW for AdamProx, and for ACME, Adam with ACME's number of
forward-backward passes (two, three with ASAM), which is what ACME pays for
over Adam but not its rule.

    python benchmarks/end_to_end.py                     # prints the tables
    python benchmarks/end_to_end.py --rounds 2 --methods optax.adam acme
    python benchmarks/end_to_end.py --compare-settings  # XLA:CPU settings
    python benchmarks/end_to_end.py --write             # updates BENCHMARKS.md

``--xla-flags`` sets ``XLA_FLAGS`` for the JAX workers only;
``--compare-settings`` times the Adam step under each XLA:CPU setting of
``XLA_SETTINGS`` against PyTorch's, to find what narrows the gap.
"""

import argparse
import os
import statistics

import jax
import report
import resnet20

# JAX's name -> (PyTorch rule of `torch_reference.OPTIMIZERS`, forward-backward
# passes, whether it is the same method or only the closest PyTorch step).
TORCH_COUNTERPARTS = {
    'optax.adam': ('adam', 1, True),
    'adaloss': ('adaloss', 1, True),
    'adagrad_norm': ('sgd', 1, False),
    'sgd_constant': ('sgd', 1, True),
    'sgd_decay_sqrt': ('sgd', 1, True),
    'adam_l2': ('adam_l2', 1, True),
    'adamw': ('adamw', 1, True),
    'adam_prox': ('adamw', 1, False),
    'adadiff': ('adadiff', 1, True),
    'acme': ('adam', 2, False),
    'acme + ASAM': ('adam', 3, False),
}
TORCH_NAMES = {
    'sgd': 'torch.optim.SGD',
    'adam': 'torch.optim.Adam',
    'adam_l2': 'torch.optim.Adam (weight_decay)',
    'adamw': 'torch.optim.AdamW',
    'adadiff': "AdaDiff (authors' form)",
    'adaloss': "AdaLoss (authors' form: SGD on loss / b)",
}

# Candidate XLA:CPU settings for --compare-settings: name -> XLA_FLAGS.
XLA_SETTINGS = {
    'default': '',
    'oneDNN thunks': '--xla_cpu_use_onednn=true',
    'oneDNN custom calls': '--xla_cpu_experimental_onednn_custom_call=true',
    'XNNPACK': '--xla_cpu_use_xnnpack=true',
    'XNNPACK, greedy graph fusion': (
        '--xla_cpu_use_xnnpack=true '
        '--xla_cpu_experimental_xnn_graph_fusion_mode='
        'XNN_GRAPH_FUSION_MODE_GREEDY'
    ),
    # XLA:CPU hands some convolutions (most weight gradients) to YNNPACK by
    # default; an empty list of YNN fusion types leaves them all to Eigen.
    'YNNPACK fusions off': '--xla_cpu_experimental_ynn_fusion_type=',
    'YNNPACK fusions off, XNNPACK': (
        '--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_xnnpack=true'
    ),
    # XLA:CPU fuses the elementwise producers of a weight gradient's operands
    # (ReLU, residual sums, BatchNorm) into the layout transposes that its
    # convolution needs, and a fused transpose runs as a plain loop, several
    # times slower than the transpose alone; without the fusion pass every
    # transpose stays plain, and every elementwise op is a pass of its own.
    'instruction fusion off': '--xla_disable_hlo_passes=fusion',
    'instruction fusion and YNNPACK fusions off': (
        '--xla_disable_hlo_passes=fusion '
        '--xla_cpu_experimental_ynn_fusion_type='
    ),
    # YNNPACK's fusions of elementwise ops and reductions, a pass of their
    # own, take in the producers that XLA would fuse into the transposes,
    # which then stay plain; they also run with XLA's instruction fusion off.
    'YNNPACK for elementwise ops only': (
        '--xla_cpu_experimental_ynn_fusion_type=eltwise'
    ),
    'YNNPACK for elementwise ops and reductions': (
        '--xla_cpu_experimental_ynn_fusion_type=eltwise,reduce'
    ),
    'YNNPACK for elementwise ops and reductions, instruction fusion off': (
        '--xla_cpu_experimental_ynn_fusion_type=eltwise,reduce '
        '--xla_disable_hlo_passes=fusion'
    ),
    'fast math': '--xla_cpu_enable_fast_math=true',
    'one Eigen thread': '--xla_cpu_multi_thread_eigen=false',
}


def torch_label(rule: str, passes: int) -> str:
  label = TORCH_NAMES[rule]
  return label if passes == 1 else f'{label}, {passes} forward-backward passes'


def jax_steps(
    *, batch_norm: bool, methods: list[str], batch_size: int, depth: int = 20
):
  """Builds the JAX worker's programs (runs in the worker process)."""
  graphdef, params, batch_stats = resnet20.split_model(
      batch_norm=batch_norm, depth=depth
  )
  loss = resnet20.loss_function(graphdef)
  images, labels = resnet20.random_batch(batch_size)
  programs = {}
  for name, tx in resnet20.methods().items():
    if name not in methods:
      continue
    programs[name] = resnet20.step_program(
        resnet20.train_step(loss, name, tx),
        resnet20.copy_tree(params),
        tx.init(params),
        batch_stats,
        images,
        labels,
    )
  info = {
      'device': report.device_description(),
      'platform': jax.devices()[0].platform,
      'params': resnet20.num_params(params),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  return programs, info


def torch_steps(
    *,
    batch_norm: bool,
    rules: list[tuple[str, int]],
    batch_size: int,
    depth: int = 20,
):
  """Builds the PyTorch worker's programs (runs in the worker process)."""
  # pylint: disable=g-import-not-at-top
  import torch
  import torch_reference
  # pylint: enable=g-import-not-at-top
  torch.manual_seed(0)
  device = torch_reference.default_device()
  images = torch.randn(batch_size, 3, 32, 32, device=device)
  labels = torch.randint(0, resnet20.NUM_CLASSES, (batch_size,), device=device)
  programs = {}
  for rule, passes in rules:
    model = torch_reference.CifarResNet(depth, batch_norm=batch_norm).to(device)
    step = torch_reference.train_step(model, rule, evaluations=passes)
    run = torch_reference.blocking(
        lambda step=step: step(images, labels), device
    )
    run()
    programs[torch_label(rule, passes)] = run
  info = {
      'device': torch_reference.device_description(device),
      'params': sum(p.numel() for p in model.parameters()),
      'torch': torch.__version__,
  }
  return programs, info


def _norm_label(batch_norm: bool) -> str:
  return 'with BatchNorm' if batch_norm else 'without BatchNorm'


def compare_methods(args) -> tuple[str, str]:
  """The table of every method against its PyTorch step, and JAX's platform."""
  workers = {}
  for batch_norm in args.batch_norm:
    common = dict(
        batch_norm=batch_norm, batch_size=args.batch_size, depth=args.depth
    )
    workers['jax', batch_norm] = report.Worker(
        jax_steps,
        dict(methods=args.methods, **common),
        env={'XLA_FLAGS': args.xla_flags} if args.xla_flags else {},
    )
    rules = sorted({TORCH_COUNTERPARTS[m][:2] for m in args.methods})
    workers['torch', batch_norm] = report.Worker(
        torch_steps, dict(rules=rules, **common)
    )
  samples, info = report.time_in_alternation(
      workers,
      rounds=args.rounds,
      warmup=args.warmup,
      min_seconds=args.min_seconds,
  )

  jax_info = info['jax', args.batch_norm[0]]
  torch_info = info['torch', args.batch_norm[0]]
  lines = [
      f'JAX: {jax_info["device"]}, XLA_FLAGS="{jax_info["xla_flags"]}"; '
      f'PyTorch {torch_info["torch"]} eager: {torch_info["device"]}; '
      + report.host_description(torch=torch_info['torch'])
      + '.',
      (
          f'ResNet-{args.depth}, batch {args.batch_size} of random 32x32x3'
          f' images; median of {args.rounds} steps of each program, timed in'
          f' alternation after {args.warmup} untimed round(s). "JAX / PyTorch"'
          ' is the median of the round-by-round ratios of images per second.'
      ),
  ]
  for batch_norm in args.batch_norm:
    jax_params = info['jax', batch_norm]['params']
    torch_params = info['torch', batch_norm]['params']
    lines += [
        '',
        (
            f'**{_norm_label(batch_norm)}** ({jax_params:,} parameters in JAX, '
            f'{torch_params:,} in PyTorch)'
        ),
        '',
        (
            '| method | JAX images/s | PyTorch step | PyTorch images/s '
            '| JAX / PyTorch |'
        ),
        '| --- | ---: | --- | ---: | ---: |',
    ]
    for name in args.methods:
      rule, passes, same = TORCH_COUNTERPARTS[name]
      label = torch_label(rule, passes)
      jax_times = samples[('jax', batch_norm), name]
      torch_times = samples[('torch', batch_norm), label]
      lines.append(
          f'| {name} | {args.batch_size / statistics.median(jax_times):.0f} '
          f'| {label}{"" if same else " (closest)"} '
          f'| {args.batch_size / statistics.median(torch_times):.0f} '
          f'| {report.paired_ratio(torch_times, jax_times):.2f} |'
      )
  return '\n'.join(lines), jax_info['platform']


def compare_settings(args) -> tuple[str, str]:
  """The Adam step per XLA setting against PyTorch's, and JAX's platform."""
  workers = {}
  for batch_norm in args.batch_norm:
    common = dict(
        batch_norm=batch_norm, batch_size=args.batch_size, depth=args.depth
    )
    for setting, flags in XLA_SETTINGS.items():
      workers[setting, batch_norm] = report.Worker(
          jax_steps,
          dict(methods=['optax.adam'], **common),
          env={'XLA_FLAGS': flags},
      )
    workers['torch', batch_norm] = report.Worker(
        torch_steps, dict(rules=[('adam', 1)], **common)
    )
  samples, info = report.time_in_alternation(
      workers,
      rounds=args.rounds,
      warmup=args.warmup,
      min_seconds=args.min_seconds,
  )
  torch_info = info['torch', args.batch_norm[0]]
  lines = [
      f'JAX: {info["default", args.batch_norm[0]]["device"]}; PyTorch '
      f'{torch_info["torch"]} eager: {torch_info["device"]}; '
      + report.host_description(torch=torch_info['torch'])
      + '.',
      (
          f'The optax.adam step of ResNet-{args.depth}, batch'
          f' {args.batch_size}, under each XLA_FLAGS setting (one worker'
          f' process each), against torch.optim.Adam; median of {args.rounds}'
          ' steps, timed in alternation.'
      ),
      '',
      '| XLA setting | XLA_FLAGS | '
      + ' | '.join(
          f'images/s {_norm_label(b)} | JAX / PyTorch' for b in args.batch_norm
      )
      + ' |',
      '| --- | --- |' + ' ---: | ---: |' * len(args.batch_norm),
  ]
  rows = {
      **{s: f'`{f}`' if f else '' for s, f in XLA_SETTINGS.items()},
      'torch': '',
  }
  for setting, flags in rows.items():
    name = 'PyTorch eager (torch.optim.Adam)' if setting == 'torch' else setting
    cells = []
    for batch_norm in args.batch_norm:
      program = torch_label('adam', 1) if setting == 'torch' else 'optax.adam'
      times = samples[(setting, batch_norm), program]
      torch_times = samples[('torch', batch_norm), torch_label('adam', 1)]
      cells += [
          f'{args.batch_size / statistics.median(times):.0f}',
          f'{report.paired_ratio(torch_times, times):.2f}',
      ]
    lines.append(f'| {name} | {flags} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines), info['default', args.batch_norm[0]]['platform']


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  resnet20.add_model_arguments(parser)
  parser.add_argument(
      '--rounds',
      type=int,
      default=5,
      help='timed steps of each program, one per round',
  )
  parser.add_argument(
      '--warmup',
      type=int,
      default=1,
      help='untimed rounds before them (after compilation)',
  )
  parser.add_argument(
      '--min-seconds',
      type=float,
      default=0.05,
      help=(
          'repeat a step within a sample until this long '
          '(for fast devices); the sample is the mean'
      ),
  )
  parser.add_argument(
      '--methods',
      nargs='+',
      choices=list(TORCH_COUNTERPARTS),
      default=list(TORCH_COUNTERPARTS),
  )
  parser.add_argument(
      '--batch-norm', nargs='+', choices=['on', 'off'], default=['on', 'off']
  )
  parser.add_argument(
      '--xla-flags',
      default=os.environ.get('XLA_FLAGS', ''),
      help='XLA_FLAGS of the JAX workers',
  )
  parser.add_argument(
      '--compare-settings',
      action='store_true',
      help='time the Adam step under each of XLA_SETTINGS',
  )
  parser.add_argument(
      '--write',
      action='store_true',
      help='update this section of BENCHMARKS.md',
  )
  args = parser.parse_args()
  args.batch_norm = [b == 'on' for b in args.batch_norm]

  if args.compare_settings:
    table, platform = compare_settings(args)
    section, title, flags = (
        'xla-settings',
        'XLA settings against PyTorch',
        ' --compare-settings',
    )
  else:
    table, platform = compare_methods(args)
    section, title, flags = (
        'end-to-end',
        'End to end: ResNet-20 against PyTorch',
        '',
    )
  print(table)
  if args.write:
    report.write_run(
        section,
        title,
        f'python benchmarks/end_to_end.py{flags} --write',
        table,
        platform,
    )


if __name__ == '__main__':
  main()
