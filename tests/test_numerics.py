"""Hostile numbers: no optimizer writes a NaN into its state, and each one does
what its docstring says with NaN and infinite gradients and losses, zero
gradients, losses multiplied by 1e-30 to 1e30, and bfloat16 parameters.

Every public alias (the entries of ``test_common``) runs one script of such
steps in one jitted scan per dtype; the checks then read the states and
parameters of every step.
"""

import enum
import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_common

import optax_adaptive

BAD_ENTRY = (0, 0)  # the kernel entry that a per-entry poisoning hits
HUGE_SCALE = 1e30  # squared, it overflows float32 and bfloat16


class Kind(enum.IntEnum):
  NORMAL = 0
  BAD_ENTRY = 1  # one gradient entry is `bad`
  BAD_GRADIENT = 2  # every gradient entry is `bad`
  BAD_LOSS = 3  # the loss is `bad`, the gradient is finite
  BAD_BOTH = 4  # the loss and every gradient entry are `bad`
  ZERO_GRADIENT = 5


class Event(NamedTuple):
  kind: Kind
  bad: float = 0.0
  scale: float = 1.0  # multiplies the loss, hence the gradient


SCRIPT = (
    Event(Kind.NORMAL),
    Event(Kind.NORMAL),
    Event(Kind.NORMAL),
    Event(Kind.BAD_ENTRY, np.nan),
    Event(Kind.BAD_ENTRY, np.inf),
    Event(Kind.BAD_ENTRY, -np.inf),
    Event(Kind.NORMAL),
    Event(Kind.BAD_BOTH, np.nan),
    Event(Kind.BAD_LOSS, np.nan),
    Event(Kind.BAD_LOSS, np.inf),
    Event(Kind.BAD_GRADIENT, np.inf),
    Event(Kind.BAD_GRADIENT, -np.inf),
    Event(Kind.ZERO_GRADIENT),
    Event(Kind.ZERO_GRADIENT),
    Event(Kind.NORMAL),
    *(
        Event(Kind.NORMAL, scale=s)
        for s in (1e-30, 1e-20, 1e-10, 1e10, 1e20, HUGE_SCALE, HUGE_SCALE)
    ),
    Event(Kind.NORMAL),
    Event(Kind.NORMAL),
    Event(Kind.NORMAL),
)

FIRST_SCALED = next(i for i, e in enumerate(SCRIPT) if e.scale != 1.0)


class Policy(NamedTuple):
  """What an optimizer's docstring says it does with hostile inputs.

  Attributes:
    gradient: what a non-finite gradient entry does: 'zero' (it counts as a
      zero), 'keep' (that entry keeps its parameter and moments), 'unit' (its
      output unit does), 'step' (the whole step is skipped) or 'reject' (ACME:
      the step is rejected).
    loss: what a non-finite loss does: 'ignored', 'skip' or 'reject'.
    squares: whether squared gradients enter the state, so that a gradient
      multiplied by 1e30 is unusable (and treated as a non-finite one).
  """

  gradient: str
  loss: str
  squares: bool


POLICIES = {
    'adaloss': Policy('zero', 'skip', squares=False),
    'sgd_constant': Policy('zero', 'ignored', squares=False),
    'sgd_decay_sqrt': Policy('zero', 'ignored', squares=False),
    'adagrad_norm': Policy('step', 'ignored', squares=True),
    'adagrad_norm_rows': Policy('unit', 'ignored', squares=True),
    'adam_l2': Policy('zero', 'ignored', squares=True),
    'adamw': Policy('zero', 'ignored', squares=True),
    'adam_prox': Policy('zero', 'ignored', squares=True),
    'adadiff': Policy('keep', 'ignored', squares=True),
    'acme': Policy('reject', 'reject', squares=True),
    'acme_fixed_rate': Policy('reject', 'reject', squares=True),
    'acme_sgd_asam_nesterov': Policy('reject', 'reject', squares=True),
}


def test_every_optimizer_has_a_policy():
  assert set(POLICIES) == {entry.name for entry in test_common.OPTIMIZERS}


def _poison(grads, loss, kind, bad):
  def poison_leaf(path, g):
    bad_g = jnp.asarray(bad, g.dtype)
    if jax.tree_util.keystr(path) == "['dense']['kernel']":
      entry = jnp.zeros(g.shape, bool).at[BAD_ENTRY].set(True)
      g = jnp.where((kind == Kind.BAD_ENTRY) & entry, bad_g, g)
    g = jnp.where(
        (kind == Kind.BAD_GRADIENT) | (kind == Kind.BAD_BOTH), bad_g, g
    )
    return jnp.where(kind == Kind.ZERO_GRADIENT, jnp.zeros_like(g), g)

  grads = jax.tree.map_with_path(poison_leaf, grads)
  loss = jnp.where(
      (kind == Kind.BAD_LOSS) | (kind == Kind.BAD_BOTH),
      jnp.asarray(bad, loss.dtype),
      loss,
  )
  return grads, loss


def _zero_unusable(grads, squares):
  """The gradient a 'zero' policy says the optimizer acts on.

  Squares are taken in float32 at least, the dtype of the moments of
  half-precision parameters.
  """

  def usable(g):
    wide = g.astype(jnp.promote_types(g.dtype, jnp.float32))
    return jnp.isfinite(jnp.square(wide) if squares else g)

  return jax.tree.map(lambda g: jnp.where(usable(g), g, 0), grads)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run_script(tx, policy, params, kinds, bads, scales):
  """Every step of SCRIPT.

  Returns:
    The parameters and states after each step and, for a 'zero' policy, those
    that the same step from the same point gives with the unusable gradient
    entries set to zero (else None).
  """

  def step(carry, event):
    params, state = carry
    kind, bad, scale = event

    def loss_fn(p):
      # Curvature 1: with test_common's rates, no method lands exactly on the
      # minimum within the script (SGD-DecaySqrt would at curvature 2).
      return scale * 0.5 * test_common.parabola(p)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    grads, loss = _poison(grads, loss, kind, bad)

    def apply(grads):
      updates, new_state = tx.update(
          grads, state, params, value=loss, value_fn=loss_fn
      )
      return optax.apply_updates(params, updates), new_state

    new = apply(grads)
    reference = (
        apply(_zero_unusable(grads, policy.squares))
        if policy.gradient == 'zero'
        else None
    )
    return new, (new, reference)

  _, trajectory = jax.lax.scan(
      step, (params, tx.init(params)), (kinds, bads, scales)
  )
  return trajectory


def _at(tree, i):
  return jax.tree.map(lambda x: np.asarray(x[i], np.float64), tree)


def _kernel(tree):
  return tree['dense']['kernel']


def _parameter_shaped(state, params):
  """The state's leaves shaped like the kernel: moments and remembered grads."""
  return [x for x in jax.tree.leaves(state) if x.shape == _kernel(params).shape]


def _accumulators(state):
  """AdaLoss's and AdaGrad-Norm's accumulators; none for the other methods."""
  return [x for _, x in optax.tree.get_all_with_path(state, 'accumulator')]


def _unit_accumulators(state, params):
  """AdaGrad-Norm 'rows' accumulators of the kernel: one per output unit."""
  units = (1, _kernel(params).shape[-1])
  return [x for x in jax.tree.leaves(state) if x.shape == units]


def _assert_equal(a, b, what, step):
  np.testing.assert_array_equal(a, b, err_msg=f'step {step}: {what}')


def _assert_moved(before, after, what, step):
  assert not np.array_equal(before, after), f'step {step}: {what} did not move'


def _check_step(policy, step, event, before, after, reference, rtol):
  """The behaviour the optimizer's docstring states for this step.

  `before` and `after` are (params, state) around the step; `reference` is
  the step with the unusable gradient entries set to zero, for 'zero'.
  """
  (params, state), (new_params, new_state) = before, after
  kernel, new_kernel = _kernel(params), _kernel(new_params)
  if policy.gradient == 'zero':
    # Up to rounding: XLA may fuse the two calls differently.
    chex.assert_trees_all_close(after, reference, rtol=rtol, atol=0)
  rejected = policy.gradient == 'reject'
  if rejected:
    was_rejected = int(new_state.num_rejected) == int(state.num_rejected) + 1
    if was_rejected:
      assert int(new_state.branch) == optax_adaptive.AcmeBranch.REJECTED
  unusable_gradient = event.kind in (Kind.BAD_GRADIENT, Kind.BAD_BOTH) or (
      policy.squares and event.scale == HUGE_SCALE
  )
  unusable_loss = (
      event.kind in (Kind.BAD_LOSS, Kind.BAD_BOTH) and policy.loss != 'ignored'
  )

  if rejected and (
      unusable_gradient or unusable_loss or event.kind == Kind.BAD_ENTRY
  ):
    assert was_rejected, f'step {step}: not rejected'
    chex.assert_trees_all_equal(new_params, params)
  elif unusable_loss or (unusable_gradient and policy.gradient != 'zero'):
    # Nothing of the gradient reaches the parameters or the moments.
    chex.assert_trees_all_equal(new_params, params)
    for old, new in zip(
        _parameter_shaped(state, params), _parameter_shaped(new_state, params)
    ):
      _assert_equal(new, old, 'moments', step)
    if unusable_loss or policy.gradient in ('step', 'unit'):
      for old, new in zip(_accumulators(state), _accumulators(new_state)):
        chex.assert_trees_all_equal(new, old)
  elif event.kind == Kind.BAD_ENTRY and policy.gradient == 'step':
    chex.assert_trees_all_equal(new_params, params)
    for old, new in zip(_accumulators(state), _accumulators(new_state)):
      chex.assert_trees_all_equal(new, old)
  elif event.kind == Kind.BAD_ENTRY and policy.gradient == 'unit':
    unit = BAD_ENTRY[-1]
    _assert_equal(new_kernel[:, unit], kernel[:, unit], 'its unit', step)
    _assert_moved(
        kernel[:, unit + 1], new_kernel[:, unit + 1], 'the other unit', step
    )
    for old, new in zip(
        _unit_accumulators(state, params), _unit_accumulators(new_state, params)
    ):
      _assert_equal(new[:, unit], old[:, unit], 'its accumulator', step)
  elif event.kind == Kind.BAD_ENTRY and policy.gradient == 'keep':
    _assert_equal(new_kernel[BAD_ENTRY], kernel[BAD_ENTRY], 'the entry', step)
    for old, new in zip(
        _parameter_shaped(state, params), _parameter_shaped(new_state, params)
    ):
      _assert_equal(new[BAD_ENTRY], old[BAD_ENTRY], 'its moments', step)
  if event.kind == Kind.BAD_ENTRY and policy.gradient not in ('reject', 'step'):
    others = np.ones(kernel.shape, bool)
    others[BAD_ENTRY] = False
    _assert_moved(kernel[others], new_kernel[others], 'the others', step)
  if event.kind == Kind.BAD_LOSS and policy.loss == 'ignored':
    _assert_moved(kernel, new_kernel, 'the kernel', step)


@test_common.parametrize_optimizers
@pytest.mark.parametrize('dtype', [jnp.float16, jnp.bfloat16, jnp.float32])
def test_hostile_steps_leave_no_nan_and_do_what_the_docstring_says(
    entry, dtype
):
  policy = POLICIES[entry.name]
  tx = entry.factory(**entry.kwargs)
  params = test_common.initial_params(dtype)
  kinds, bads, scales = (
      np.array(column, dtype)
      for column, dtype in zip(zip(*SCRIPT), (np.int32, np.float32, np.float32))
  )
  trajectory, references = _run_script(tx, policy, params, kinds, bads, scales)
  points = [jax.tree.map(np.asarray, (params, tx.init(params)))] + [
      _at(trajectory, i) for i in range(len(SCRIPT))
  ]

  for step, event in enumerate(SCRIPT):
    new_params, new_state = points[step + 1]
    for leaf_path, leaf in jax.tree.leaves_with_path(new_state):
      assert np.all(np.isfinite(leaf)), (
          f'step {step} ({event}): state {jax.tree_util.keystr(leaf_path)} '
          f'is {leaf}'
      )
    assert not any(
        np.isnan(x).any() for x in jax.tree.leaves(new_params)
    ), f'step {step} ({event}): NaN in the parameters'
    reference = None if references is None else _at(references, step)
    _check_step(
        policy,
        step,
        event,
        points[step],
        points[step + 1],
        reference,
        rtol=4 * float(jnp.finfo(dtype).eps),
    )
    if step < FIRST_SCALED and event.kind == Kind.NORMAL:
      # Training goes on after NaN and infinite inputs. (After a loss of 1e30
      # AdaLoss's step is tiny for good, by design: it is not checked there.)
      if policy.gradient == 'reject':
        # Each rejection shrinks ACME's momentum (see `acme`): the step can
        # be below the parameters' resolution, but it is accepted.
        assert int(new_state.num_rejected) == int(
            points[step][1].num_rejected
        ), f'step {step}: rejected'
      else:
        _assert_moved(
            _kernel(points[step][0]), _kernel(new_params), 'the kernel', step
        )


# A fixed gradient with entries of 1e4 (whose squares overflow float16) and
# exact zeros (whose second moment stays zero), every step.
FLOAT16_GRADIENT = {
    'dense': {
        'kernel': np.array([[1e4, 0.0], [-1e4, 1.0], [0.0, -0.5]]),
        'bias': np.array([0.0, 3.0]),
    },
    'scale': np.array(-1e4),
}


@test_common.parametrize_optimizers
def test_a_float16_model_trains_with_large_and_zero_gradients(entry):
  """Every step is a real one: finite float16 updates, none skipped or rejected.

  The loss is linear, so its gradient is FLOAT16_GRADIENT at every point; it is
  evaluated in float32, where its values (up to about 1e8) are finite.
  """

  def loss_fn(params):
    return sum(
        jnp.sum(c * p.astype(jnp.float32))
        for c, p in zip(
            jax.tree.leaves(FLOAT16_GRADIENT), jax.tree.leaves(params)
        )
    )

  tx = entry.factory(**entry.kwargs)
  params = test_common.initial_params(jnp.float16)
  if entry.name == 'acme':
    # Adam ACME's first second moment is the leaf's mean square (the authors'
    # code), so an entry 1e4 times below its leaf's largest takes a step 1e4
    # times smaller, under float16's smallest subnormal: only entries within
    # 1e-2 of the leaf's root mean square must move.
    moving = jax.tree.map(
        lambda c: np.abs(c) >= 1e-2 * np.sqrt(np.mean(np.square(c))),
        FLOAT16_GRADIENT,
    )
  else:
    moving = jax.tree.map(lambda c: c != 0, FLOAT16_GRADIENT)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(
        grads, state, params, value=loss, value_fn=loss_fn
    )
    return updates, state

  for i in range(4):
    updates, state = step(params, state)
    chex.assert_trees_all_equal_dtypes(updates, params)
    chex.assert_tree_all_finite((updates, state))
    for path, moves, update in zip(
        jax.tree.leaves_with_path(moving),
        jax.tree.leaves(moving),
        jax.tree.leaves(updates),
    ):
      assert np.all(
          np.asarray(update)[moves] != 0
      ), f'step {i}: {jax.tree_util.keystr(path[0])} did not move: {update}'
    params = optax.apply_updates(params, updates)
  chex.assert_trees_all_equal_dtypes(
      params, test_common.initial_params(jnp.float16)
  )


@test_common.parametrize_optimizers
@pytest.mark.parametrize('dtype', [jnp.float16, jnp.bfloat16, jnp.float32])
def test_the_state_is_at_least_float32_by_default(entry, dtype):
  state = entry.factory(**entry.kwargs).init(test_common.initial_params(dtype))
  for path, leaf in jax.tree.leaves_with_path(state):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.promote_types(
          dtype, jnp.float32
      ), f'{jax.tree_util.keystr(path)} is {leaf.dtype}'


@pytest.mark.parametrize(
    'factory',
    [
        optax_adaptive.adam_l2,
        optax_adaptive.adamw,
        optax_adaptive.adam_prox,
        optax_adaptive.adadiff,
        functools.partial(optax_adaptive.adadiff, accumulate_eps=False),
    ],
    ids=['adam_l2', 'adamw', 'adam_prox', 'adadiff', 'adadiff_textbook'],
)
def test_zero_gradients_with_eps_zero_give_zero_steps_not_nan(factory):
  tx = factory(learning_rate=0.1, eps=0.0)
  params = test_common.initial_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for _ in range(2):
    updates, state = step(zeros, state, params)
    chex.assert_trees_all_equal(updates, zeros)
    chex.assert_tree_all_finite(state)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  updates, state = step(grads, state, params)
  chex.assert_tree_all_finite((updates, state))
  assert float(jnp.abs(updates['dense']['kernel']).min()) > 0


@pytest.mark.parametrize(
    'target', [np.nan, 1e19, 'look'], ids=['nan', 'huge', 'look']
)
def test_acme_after_a_rejected_first_step_goes_on_from_its_moments(target):
  """The moments are initialised once, at the first call, even when it is
  rejected ('look': the look point's loss is infinite); the next step goes on
  from them, decayed. A first gradient that gives moments that are not finite
  (NaN; 1e19, whose mean square overflows) leaves them uninitialised instead,
  and the next step initialises them as a first step does.
  """

  def loss_fn(params, target):
    return 0.5 * test_common.parabola(
        jax.tree.map(lambda p: p - target + 1.0, params)
    )

  def exploding(params, target):
    far = optax.tree.norm(params) > 1e-5
    return jnp.where(far & (target == 1e3), jnp.inf, loss_fn(params, target))

  optimizer = optax_adaptive.acme(learning_rate=0.01)
  step = optax_adaptive.acme_step(exploding, optimizer)
  start = test_common.initial_params()
  first_target = 1e3 if target == 'look' else target
  params, state, _, _ = step(
      jax.tree.map(jnp.copy, start), optimizer.init(start), first_target
  )
  chex.assert_trees_all_equal(params, start)
  chex.assert_tree_all_finite(state)
  assert int(state.num_rejected) == 1
  assert int(state.step) == (1 if target == 'look' else 0)

  fresh_state = optimizer.init(start)._replace(
      adapted_learning_rate=jnp.copy(state.adapted_learning_rate)
  )
  expected, expected_state, _, _ = step(
      jax.tree.map(jnp.copy, start), fresh_state, 2.0
  )
  decayed_mu = jax.tree.map(jnp.copy, state.mu)
  params, state, _, _ = step(params, state, 2.0)
  assert int(state.num_rejected) == 1
  if target == 'look':
    # Not a fresh start: the momentum it had, a tenth of it, still counts.
    assert float(optax.tree.norm(decayed_mu)) > 0
    assert not np.allclose(
        state.mu['dense']['kernel'], expected_state.mu['dense']['kernel']
    )
    return
  chex.assert_trees_all_close(params, expected, rtol=1e-6)
  chex.assert_trees_all_close(
      (state.mu, state.nu, state.adapted_learning_rate),
      (
          expected_state.mu,
          expected_state.nu,
          expected_state.adapted_learning_rate,
      ),
      rtol=1e-6,
  )
