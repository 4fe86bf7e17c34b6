"""ACME's step-size table: the new rate from the values and slopes along a step.

The row of the table a step takes is recorded as an :class:`AcmeBranch`, with
the authors' numbering, so that a run can be compared with theirs row by row
(``docs/specification.md#spec-acme-table``).
"""

import enum

import jax.numpy as jnp


class AcmeBranch(enum.IntEnum):
  """Values of :attr:`AcmeState.branch`: the row of the step-size table taken.

  The rows 0 to 7 are numbered as the authors' code numbers them (its ``cod``),
  so a run can be compared with theirs row for row.
  """

  REJECTED = -2  # a non-finite quantity: the step was rejected
  NO_ACME = -1  # `adapt_learning_rate=False`, or no step yet
  NOT_SIGNIFICANT = 0  # |L1 - L0| too small to fit: double or keep
  CUBIC_BETTER = 1  # slopes change sign, L1 <= L0: the cubic's minimiser
  CUBIC_WORSE = 2  # slopes change sign, L1 > L0: the cubic's minimiser
  PARABOLA_NEW = 3  # improved, still descending: parabola at the look point
  PARABOLA_OLD = 4  # worse, was descending: parabola at the start
  GROW = 5  # improved, both slopes descending: extrapolate up
  SHRINK = 6  # worse, both slopes ascending: extrapolate down
  OTHERWISE = 7  # keep the rate if improved, else zero


_SIGNIFICANCE = 1e4  # |L1 - L0| must exceed max(L0, L1) / _SIGNIFICANCE


def _fitted_rates(diff, slope0, slope1, lr):
  """The minimisers of the cubic and of the two parabolas, as rates."""
  if jnp.finfo(jnp.result_type(lr)).bits >= 64:
    # The authors' expressions, whose rounding the float64 reference runs
    # record (their rates follow it to 1e-12).
    a3 = -(slope0 + slope1) / lr**2 - 2 * diff / lr**3
    b3 = (2 * slope0 + slope1) / lr + 3 * diff / lr**2
    c3 = -slope0
    a2_new, b2_new = -slope1 / lr - diff / lr**2, slope1 + 2 * diff / lr
    a2_old, b2_old = slope0 / lr + diff / lr**2, -slope0
    return (
        (-b3 + jnp.sqrt(b3**2 - 3 * a3 * c3)) / (3 * a3),
        -b2_new / a2_new / 2,
        -b2_old / a2_old / 2,
    )
  # Below float64, lr**3 leaves the range for rates under about 1e-10 or over
  # about 1e10: the same fits in units x = rate / lr, where the slopes are
  # s * lr and every minimiser is in [0, 1].
  unit_slope0, unit_slope1 = slope0 * lr, slope1 * lr
  a = -(unit_slope0 + unit_slope1) - 2 * diff  # a x^3 + b x^2 - unit_slope0 x
  b = 2 * unit_slope0 + unit_slope1 + 3 * diff
  root = jnp.sqrt(b**2 + 3 * a * unit_slope0)
  # (root - b) / (3 a) loses its digits to cancellation when b > 0; there the
  # same minimiser is unit_slope0 / (b + root).
  cubic = jnp.where(b > 0, unit_slope0 / (b + root), (root - b) / (3 * a))
  parabola_new = (unit_slope1 + 2 * diff) / (unit_slope1 + diff) / 2
  parabola_old = unit_slope0 / (unit_slope0 + diff) / 2
  return lr * cubic, lr * parabola_new, lr * parabola_old


def step_size_table(loss0, loss1, slope0, slope1, learning_rate, b1):
  r"""The new learning rate from the values and slopes at the two points.

  The slopes are :math:`s = \sum m \cdot g / D`, positive when the step
  direction :math:`-m/D` descends. In float64 the fits use the authors'
  coefficients; in lower precision they are solved for the rate in units of
  the current one, where float32 holds them for any rate it can represent.

  Returns:
    ``(new_rate, fitted_rate, branch)``: the rate the adapted one moves
    toward, the fit's minimiser used by the leap when the look point was worse,
    and the row of the table taken.
  """
  lr = learning_rate
  better = loss1 <= loss0
  diff = loss1 - loss0
  # max, not the larger magnitude: with negative losses every change counts.
  significant = jnp.abs(diff) > jnp.maximum(loss0, loss1) / _SIGNIFICANCE
  cubic, parabola_new, parabola_old = _fitted_rates(diff, slope0, slope1, lr)

  cubic_branch = jnp.where(
      better, AcmeBranch.CUBIC_BETTER, AcmeBranch.CUBIC_WORSE
  )
  branch = jnp.select(
      [
          ~significant,
          (slope0 > 0) & (slope1 < 0),
          better & (slope1 < 0),
          ~better & (slope0 > 0),
          better & (slope0 > 0) & (slope1 > 0),
          ~better & (slope0 < 0) & (slope1 < 0),
      ],
      [
          AcmeBranch.NOT_SIGNIFICANT,
          cubic_branch,
          AcmeBranch.PARABOLA_NEW,
          AcmeBranch.PARABOLA_OLD,
          AcmeBranch.GROW,
          AcmeBranch.SHRINK,
      ],
      default=AcmeBranch.OTHERWISE,
  )
  keep = jnp.where(better, lr, 0.0)
  fitted = jnp.select(
      [
          (branch == AcmeBranch.CUBIC_BETTER)
          | (branch == AcmeBranch.CUBIC_WORSE),
          branch == AcmeBranch.PARABOLA_NEW,
          branch == AcmeBranch.PARABOLA_OLD,
      ],
      [cubic, parabola_new, parabola_old],
      default=keep,
  )
  new = jnp.select(
      [
          branch == AcmeBranch.NOT_SIGNIFICANT,
          branch == AcmeBranch.GROW,
          branch == AcmeBranch.SHRINK,
          branch == AcmeBranch.OTHERWISE,
      ],
      [
          jnp.where(better, 2 * lr, lr),
          jnp.minimum(lr * (1 + slope1 / slope0), lr * (2 - b1) / (1 - b1)),
          jnp.maximum(-lr * slope1 / slope0, lr * (0.5 - b1) / (1 - b1)),
          keep,
      ],
      default=fitted,
  )
  return new, fitted, branch
