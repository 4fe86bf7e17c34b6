"""Language-model training loop: AWD-LSTM on PTB, laid out as the Flax examples.

:func:`train_and_evaluate` follows AWD-LSTM's ``main.py`` as the AdaDiff
authors run it (``nlp/main.py`` of deerOfHd/AdaDiff_v1):

* the training tokens are cut into ``batch_size`` columns and served in BPTT
  windows of random length (``experiments.lm_pipeline``); the LSTM state is
  carried from one window to the next and reset to zero at every epoch's
  start, as ``train()`` calls ``init_hidden``;
* the loss is the cross-entropy plus AR and TAR
  (``awd_lstm.activation_regularization``); the gradients' global norm is
  clipped to ``clip`` (``optax.clip_by_global_norm``, which differs from
  PyTorch's ``clip_grad_norm_`` only by the 1e-6 PyTorch adds to the norm),
  then each method adds its L2 ``weight_decay`` term;
* the step's learning rate is the epoch's rate times ``seq_len / bptt``, the
  window's drawn length, as ``main.py`` sets ``param_groups[0]['lr']`` around
  each ``optimizer.step()``; the epoch's rate is divided by 10 after each epoch
  of ``lr_decay_epochs`` (``--when``). The methods allowed here
  (:data:`METHODS`: SGD without momentum, Adam, AdaBelief, AdaDiff, each with
  its L2 term in the gradient) make a step proportional to their rate and keep
  a state that does not depend on it, so the optimizer is built at the base
  rate and its updates are multiplied by ``rate / base_rate`` in the step:
  exactly PyTorch's change of ``lr``;
* after every epoch the model is evaluated without dropout on the validation
  split in 10 columns and on the test split in 1 (AWD-LSTM's
  ``eval_batch_size`` and ``test_batch_size``), in windows of ``bptt``, with
  AWD-LSTM's normalisation: the sum of the token losses divided by the number
  of rows times columns of the batchified split (``len(data_source)``), although
  the last row has no target. (The authors' script evaluates only the test
  split, which it prints as "valid"; both are reported here.)

The training loss reported is the mean over the epoch's windows of each
window's mean cross-entropy (without AR and TAR), as ``train()`` averages
``raw_loss``; perplexities are ``exp`` of the losses.

Not reproduced: ``main.py``'s switch from SGD to ASGD when the loss stops
improving (``--nonmono``); SGD runs here stay plain SGD throughout.

Window lengths vary, so every training window is padded to a multiple of
``window_multiple`` steps and masked, and evaluation windows to ``bptt``: the
jitted steps compile for a handful of lengths. The loop runs on one device
(JAX's default): the LM's batches (80 or 20 columns in training, 10 and 1 in
evaluation) are too small to split, so unlike ``experiments.train`` it is not
data-parallel.

A run writes into its working directory what ``experiments.train`` writes
(``config.json``, ``metrics.jsonl`` and ``tensorboard/`` with one record per
epoch: train, val and test loss and perplexity, the epoch's learning rate;
``checkpoints/``), through the same
:class:`experiments.run_directory.RunDirectory`. A checkpoint holds the
parameters, the optimizer state, the carried LSTM state, the dropout RNG
streams, the position in the epoch and the state of the window-length
generator, so ``resume=True`` continues bit-for-bit.
"""

import functools
import json
import logging
import math
import pathlib
import sys
import time
from typing import Any

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from experiments import (
    lm_pipeline,
    optimizers,
    ptb,
    reporting,
    run_directory,
)
from experiments.configs import default as default_config
from experiments.configs.language_model import Config
from experiments.models import awd_lstm

_LOG = logging.getLogger(__name__)
# Methods whose step is proportional to the rate, with a state independent of
# it: for them, scaling the updates is scaling the rate (see the docstring).
METHODS = ('adadiff', 'adam', 'adabelief', 'sgd')
# Metric prefix -> (split, number of columns), as AWD-LSTM evaluates.
EVAL_SPLITS = {
    'val': ('validation', lm_pipeline.EVAL_BATCH_SIZE),
    'test': ('test', lm_pipeline.TEST_BATCH_SIZE),
}
_LR_DECAY = 0.1  # AWD-LSTM's `--when`: the rate is divided by 10


@flax.struct.dataclass
class TrainState:
  """What a training step reads and writes.

  Attributes:
    step: number of optimizer steps taken.
    params: the model's ``nnx.Param`` variables.
    model_state: its other variables (the dropout RNG streams).
    opt_state: the optimizer's state.
    carry: each LSTM layer's ``(h, c)`` after the last window, the next
      window's initial state.
  """

  step: jax.Array
  params: nnx.State
  model_state: nnx.State
  opt_state: optax.OptState
  carry: awd_lstm.Carry


def check_config(config: Config) -> None:
  """Refuses settings the loop cannot run faithfully, before doing any work."""
  if config.optimizer not in METHODS:
    raise ValueError(
        f'Unknown optimizer {config.optimizer!r} for the language model; '
        f'choose one of {", ".join(METHODS)}.'
    )
  for name in ('batch_size', 'bptt', 'window_multiple', 'num_layers'):
    if getattr(config, name) < 1:
      raise ValueError(
          f'`{name}` must be positive, got {getattr(config, name)}.'
      )


# Initialised under one jit (eagerly, every parameter's initialiser would
# compile on its own), compiled once per model settings.
_MODEL_FIELDS = (
    'embed_size',
    'hidden_size',
    'num_layers',
    'dropout',
    'dropouth',
    'dropouti',
    'dropoute',
    'wdrop',
    'seed',
)


@functools.partial(nnx.jit, static_argnums=(0, 1))
def _initialise(vocab_size: int, settings: tuple[tuple[str, Any], ...]):
  settings = dict(settings)
  return awd_lstm.AWDLSTM(
      vocab_size, rngs=nnx.Rngs(settings.pop('seed')), **settings
  )


def create_model(config: Config, vocab_size: int) -> awd_lstm.AWDLSTM:
  """The AWD-LSTM of `config`, initialised from ``config.seed``."""
  return _initialise(
      vocab_size, tuple((name, getattr(config, name)) for name in _MODEL_FIELDS)
  )


def create_optimizer(config: Config) -> optax.GradientTransformationExtraArgs:
  """Gradient clipping, then the method at the base rate (L2 term included)."""
  method = optimizers.create(
      config.optimizer, config.learning_rate, **config.optimizer_kwargs
  ).tx
  if not config.clip:
    return method
  return optax.chain(optax.clip_by_global_norm(config.clip), method)


def create_train_state(
    config: Config,
    vocab_size: int,
) -> tuple[nnx.GraphDef, TrainState, optax.GradientTransformationExtraArgs]:
  """The model's graph, the initial training state and the optimizer.

  Args:
    config: the run's configuration.
    vocab_size: number of words.

  Returns:
    ``(graphdef, state, tx)``; the carry is zero for ``config.batch_size``
    columns.

  Example:
    >>> from experiments.configs import language_model
    >>> config = language_model.get_config(
    ...     embed_size=4, hidden_size=6, num_layers=2, batch_size=3,
    ...     optimizer='adadiff', optimizer_kwargs={})
    >>> graphdef, state, tx = create_train_state(config, vocab_size=11)
    >>> [h.shape for h, _ in state.carry]
    [(3, 6), (3, 4)]
  """
  model = create_model(config, vocab_size)
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  tx = create_optimizer(config)
  state = TrainState(
      step=jnp.zeros([], jnp.int32),
      params=params,
      model_state=model_state,
      opt_state=tx.init(params),
      carry=model.init_carry(config.batch_size),
  )
  return graphdef, state, tx


def zero_carry(
    graphdef: nnx.GraphDef, state: TrainState, batch_size: int
) -> awd_lstm.Carry:
  """The zero LSTM state for `batch_size` columns (AWD-LSTM's ``init_hidden``).

  It is put where the parameters are, as :func:`eval_step`'s output carry
  is, so that evaluation compiles once, not once more for the first window.
  """
  carry = nnx.merge(graphdef, state.params, state.model_state).init_carry(
      batch_size
  )
  return jax.device_put(carry, jax.tree.leaves(state.params)[0].sharding)


def learning_rate_factor(config: Config, epoch: int) -> float:
  """The rate of epoch `epoch` (counted from 0) over the base rate: ``--when``.

  The rate is divided by 10 after each epoch of ``config.lr_decay_epochs``,
  counted from 1 as ``main.py`` counts them; others (its default ``-1``)
  never match.

  Example:
    >>> from experiments.configs import language_model
    >>> config = language_model.get_config(lr_decay_epochs=(-1, 2, 3))
    >>> [round(learning_rate_factor(config, epoch), 6) for epoch in range(4)]
    [1.0, 1.0, 0.1, 0.01]
  """
  decays = sum(1 for after in config.lr_decay_epochs if 1 <= after <= epoch)
  return _LR_DECAY**decays


def _token_losses(logits: jax.Array, window: dict[str, jax.Array]):
  """Each step's and column's cross-entropy, zero on padded steps."""
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), window['targets']
  )
  return losses * window['mask'][:, None]


def train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformationExtraArgs,
    state: TrainState,
    window: dict[str, jax.Array],
    learning_rate_scale: jax.Array,
    *,
    alpha: float,
    beta: float,
) -> tuple[TrainState, jax.Array]:
  """One optimizer step on one BPTT window, from the carried state.

  Args:
    graphdef: the model's graph.
    tx: the optimizer at the base rate (:func:`create_optimizer`).
    state: the training state; its carry is the window's initial state.
    window: ``inputs``, ``targets`` (int ``(steps, batch)``) and ``mask``
      (bool ``(steps,)``, False on padding), as ``lm_pipeline.Window``.
    learning_rate_scale: the step's rate over the base rate (``--when``
      divisions times ``seq_len / bptt``); multiplies the updates.
    alpha: AR weight.
    beta: TAR weight.

  Returns:
    ``(state, raw_loss)``: the state after the step, its carry the LSTM state
    after the window's last real step, and the window's mean cross-entropy
    before the step, without AR and TAR.
  """

  def loss_fn(params):
    model = nnx.merge(graphdef, params, state.model_state, copy=True)
    model.train()
    logits, carry, activations = model(
        window['inputs'], state.carry, window['mask']
    )
    num_tokens = jnp.sum(window['mask']) * window['targets'].shape[1]
    raw_loss = jnp.sum(_token_losses(logits, window)) / num_tokens
    penalty = awd_lstm.activation_regularization(
        activations, alpha=alpha, beta=beta, mask=window['mask']
    )
    return raw_loss + penalty, (
        raw_loss,
        carry,
        nnx.state(model, nnx.Not(nnx.Param)),
    )

  (_, (raw_loss, carry, model_state)), grads = jax.value_and_grad(
      loss_fn, has_aux=True
  )(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  updates = optax.tree.scale(learning_rate_scale, updates)
  new_state = TrainState(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      model_state=model_state,
      opt_state=opt_state,
      carry=carry,
  )
  return new_state, raw_loss


@functools.partial(jax.jit, static_argnums=0)
def eval_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    model_state: nnx.State,
    carry: awd_lstm.Carry,
    window: dict[str, jax.Array],
) -> tuple[jax.Array, awd_lstm.Carry]:
  """The sum of a window's token losses without dropout, and the next carry.

  Example:
    >>> import jax.numpy as jnp
    >>> from experiments.configs import language_model
    >>> config = language_model.get_config(
    ...     embed_size=4, hidden_size=6, num_layers=1, optimizer='sgd')
    >>> graphdef, state, _ = create_train_state(config, vocab_size=11)
    >>> window = {'inputs': jnp.zeros((5, 2), int),
    ...           'targets': jnp.zeros((5, 2), int),
    ...           'mask': jnp.arange(5) < 3}
    >>> loss_sum, carry = eval_step(graphdef, state.params, state.model_state,
    ...                             zero_carry(graphdef, state, 2), window)
    >>> bool(jnp.isclose(loss_sum, 6 * jnp.log(11.0), rtol=0.05))
    True
  """
  model = nnx.merge(graphdef, params, model_state, copy=True)
  model.eval()
  logits, carry, _ = model(window['inputs'], carry, window['mask'])
  return jnp.sum(_token_losses(logits, window)), carry


def device_window(window: lm_pipeline.Window) -> dict[str, jax.Array]:
  """A window's ``inputs``, ``targets`` and ``mask`` as the steps take them."""
  return {
      'inputs': jnp.asarray(window.inputs),
      'targets': jnp.asarray(window.targets),
      'mask': jnp.asarray(window.mask),
  }


def evaluate(
    graphdef: nnx.GraphDef,
    state: TrainState,
    tokens: np.ndarray,
    batch_size: int,
    bptt: int,
) -> float:
  """A split's loss as AWD-LSTM's ``evaluate(data_source, batch_size)``.

  The tokens are cut into `batch_size` columns and read in windows of `bptt`
  rows from a zero state, the state carried across windows.

  Args:
    graphdef: the model's graph.
    state: the training state (its parameters and RNG streams are used).
    tokens: the split's token ids in order.
    batch_size: number of columns (10 for validation, 1 for test).
    bptt: window length.

  Returns:
    The sum of the token losses over ``rows * batch_size``, ``rows`` being the
    batchified split's length (AWD-LSTM's normalisation, see the module
    docstring).
  """
  data = lm_pipeline.batchify(tokens, batch_size)
  carry = zero_carry(graphdef, state, batch_size)
  total = jnp.zeros([], jnp.float32)
  for window in lm_pipeline.bptt_windows(
      data, bptt, train=False, pad_to_multiple_of=bptt
  ):
    loss_sum, carry = eval_step(
        graphdef, state.params, state.model_state, carry, device_window(window)
    )
    total = total + loss_sum
  return float(total) / data.size


def _perplexity(loss: float) -> float:
  with np.errstate(over='ignore'):
    return float(np.exp(np.float64(loss)))


# The fields of a Config that the compiled training step depends on.
_STEP_FIELDS = (
    'optimizer',
    'learning_rate',
    'optimizer_kwargs',
    'clip',
    'alpha',
    'beta',
)


def jitted_train_step(graphdef: nnx.GraphDef, config: Config):
  """The loop's jitted :func:`train_step`, with the metrics' sums.

  Compiled once per model and step settings in a process: a resumed run, or
  another run of the same settings, reuses it.

  Args:
    graphdef: the model's graph.
    config: the run's configuration (the optimizer, ``clip``, ``alpha``,
      ``beta``).

  Returns:
    ``step(state, totals, window, learning_rate_scale) -> (state, totals)``,
    ``totals`` summing the windows' raw losses (``loss_sum``) and counting them
    (``count``); ``state`` and ``totals`` are donated.
  """
  return _compiled_train_step(
      graphdef, default_config.settings_key(config, _STEP_FIELDS)
  )


@functools.lru_cache(maxsize=8)
def _compiled_train_step(graphdef: nnx.GraphDef, step_key: str):
  config = Config(**json.loads(step_key))
  tx = create_optimizer(config)

  def accumulate(state, totals, window, learning_rate_scale):
    state, raw_loss = train_step(
        graphdef,
        tx,
        state,
        window,
        learning_rate_scale,
        alpha=config.alpha,
        beta=config.beta,
    )
    return state, {
        'loss_sum': totals['loss_sum'] + raw_loss,
        'count': totals['count'] + 1,
    }

  # Restored arrays are committed to a device and new ones are not, and
  # without fixed shardings jit compiles once for each kind.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.jit(
      accumulate,
      donate_argnums=(0, 1),
      in_shardings=device,
      out_shardings=device,
  )


def _zero_totals() -> dict[str, float]:
  return {'loss_sum': 0.0, 'count': 0.0}


def _on_device_totals(totals: dict[str, float]) -> dict[str, jax.Array]:
  return {k: jnp.asarray(v, jnp.float32) for k, v in totals.items()}


def load_splits(config: Config) -> tuple[int, dict[str, np.ndarray]]:
  """Prepares PTB if needed; the vocabulary size and every split's tokens."""
  ptb.prepare(config.data_dir, manual_dir=config.manual_dir)
  vocab_size = len(ptb.load_vocabulary(config.data_dir))
  return vocab_size, {
      split: ptb.load_tokens(split, config.data_dir) for split in ptb.SPLITS
  }


def train_and_evaluate(config: Config, workdir: str) -> list[dict[str, Any]]:
  """Trains and evaluates the language model of `config`, writing to `workdir`.

  Args:
    config: the run's configuration.
    workdir: the run's directory (created if needed).

  Returns:
    The metrics records of the whole run, one per epoch (and one where
    ``max_steps`` stops it), those of a resumed run's earlier part included.

  Raises:
    ValueError: for a configuration that does not fit (see
      :func:`check_config`), or a `workdir` with checkpoints and
      ``config.resume`` False.
  """
  check_config(config)
  workdir = pathlib.Path(workdir)
  vocab_size, tokens = load_splits(config)
  train_data = lm_pipeline.batchify(tokens['train'], config.batch_size)
  graphdef, state, _ = create_train_state(config, vocab_size)
  run = run_directory.RunDirectory(config, workdir)
  progress = run_directory.Progress(window=_zero_totals())
  if run.latest_step() is not None:
    state, progress = run.restore(state)
    _LOG.info('Resuming %s from step %d.', workdir, int(state.step))
  history = run.start(config, int(state.step))
  # One generator draws every epoch's window lengths in turn, as AWD-LSTM's
  # global NumPy generator does.
  lengths = np.random.default_rng(config.seed)
  if progress.data:
    lengths.bit_generator.state = progress.data['rng']
  totals = _on_device_totals(progress.window)
  jitted_train = jitted_train_step(graphdef, config)
  # One compilation per padded window length, each announced.
  train_by_length = {}

  def train(state, totals, window, scale):
    length = window.inputs.shape[0]
    if length not in train_by_length:
      train_by_length[length] = reporting.announcing_compilation(
          jitted_train, f'the training step for windows of {length} steps'
      )
    return train_by_length[length](state, totals, device_window(window), scale)

  def save(windows):
    progress.window = {k: float(v) for k, v in totals.items()}
    progress.data = windows.get_state()
    progress.seconds = time.perf_counter() - started
    run.save(state, progress)

  max_steps = config.max_steps or sys.maxsize
  epoch_steps = config.max_steps_per_epoch or sys.maxsize
  show_progress = config.progress_bar and sys.stderr.isatty()
  # Window lengths are drawn, so the steps of an epoch are known on average.
  windows_per_epoch = math.ceil((len(train_data) - 1) / config.bptt)
  progress_lines = reporting.ProgressLines(
      min(max_steps, config.num_epochs * min(epoch_steps, windows_per_epoch)),
      approximate=True,
  )
  started = time.perf_counter() - progress.seconds

  interrupt = run_directory.InterruptRequest()
  with interrupt:
    while progress.epoch < config.num_epochs and int(state.step) < max_steps:
      windows = lm_pipeline.bptt_windows(
          train_data,
          config.bptt,
          rng=lengths,
          pad_to_multiple_of=config.window_multiple,
      )
      if progress.batch:
        windows.set_state(progress.data)
      else:
        state = state.replace(
            carry=zero_carry(graphdef, state, config.batch_size)
        )
      rate_factor = learning_rate_factor(config, progress.epoch)
      stop = min(epoch_steps, progress.batch + max_steps - int(state.step))
      bar = tqdm.tqdm(
          total=len(train_data) - 1,
          initial=windows.get_state()['position'],
          unit='row',
          desc=f'epoch {progress.epoch + 1}/{config.num_epochs}',
          disable=not show_progress,
          leave=False,
          dynamic_ncols=True,
      )
      while progress.batch < stop and not windows.exhausted():
        window = next(windows)
        scale = np.float32(rate_factor * window.seq_len / config.bptt)
        state, totals = train(state, totals, window, scale)
        progress.batch += 1
        bar.update(window.length)
        if config.progress_bar and not show_progress:
          progress_lines.step_done(int(state.step))
        every = config.checkpoint_every_steps
        checkpoint_due = bool(every) and int(state.step) % every == 0
        if (
            progress.batch < stop
            and not windows.exhausted()
            and (checkpoint_due or interrupt.requested)
        ):
          # The loop's last window is checkpointed below, with what follows
          # it (the epoch's end, its evaluation) counted.
          save(windows)
          interrupt.stop_if_requested(run, int(state.step))
      bar.close()

      # The pass is over, the epoch shortened, or the run at max_steps: a
      # record in each case.
      end_of_epoch = windows.exhausted() or progress.batch >= epoch_steps
      epochs_trained = progress.epoch + (
          1.0
          if end_of_epoch
          else min(1.0, windows.get_state()['position'] / (len(train_data) - 1))
      )
      if end_of_epoch:
        progress.epoch, progress.batch = progress.epoch + 1, 0
      record = {'epoch': epochs_trained, 'step': int(state.step)}
      if float(totals['count']):
        train_loss = float(totals['loss_sum'] / totals['count'])
        record.update(
            train_loss=train_loss, train_perplexity=_perplexity(train_loss)
        )
      for prefix, (split, batch_size) in EVAL_SPLITS.items():
        loss = evaluate(graphdef, state, tokens[split], batch_size, config.bptt)
        record.update(
            {f'{prefix}_loss': loss, f'{prefix}_perplexity': _perplexity(loss)}
        )
      record['learning_rate'] = config.learning_rate * rate_factor
      record['seconds'] = time.perf_counter() - started
      history.append(record)
      run.write(record)
      reporting.say_record(workdir.name, record)
      totals = _on_device_totals(_zero_totals())
      save(windows)
      if progress.epoch < config.num_epochs and int(state.step) < max_steps:
        interrupt.stop_if_requested(run, int(state.step))
  run.close()
  return history
