"""ACME as docs/specification.md#spec-acme states it, in NumPy float64.

One step at a time, from a state of plain arrays: the tests compare the
library with it value by value around rejections, where the reference runs
never go. Its table is test_acme.table_oracle's.
"""

import dataclasses
import math

import numpy as np


@dataclasses.dataclass
class SpecState:
  m: dict | None = None  # None until the very first call initialises it
  v: dict | None = None
  lr: float = 1e-3
  t: int = 1
  sched: float = 1.0


def _table(loss0, loss1, s0, s1, lr, b1):
  better = loss1 <= loss0
  significant = abs(loss0 - loss1) > max(loss0, loss1) / 1e4
  d = loss1 - loss0
  a3 = -(s0 + s1) / lr**2 - 2 * d / lr**3
  b3 = (2 * s0 + s1) / lr + 3 * d / lr**2
  c3 = -s0
  a2, b2 = -s1 / lr - d / lr**2, s1 + 2 * d / lr
  a2p, b2p = s0 / lr + d / lr**2, -s0
  lr_opt = lr if better else 0.0
  if not significant:
    return (2 * lr if better else lr), lr_opt
  if s0 > 0 and s1 < 0:
    lr_opt = (-b3 + math.sqrt(b3**2 - 3 * a3 * c3)) / (3 * a3)
    return lr_opt, lr_opt
  if better and s1 < 0:
    return -b2 / (2 * a2), -b2 / (2 * a2)
  if not better and s0 > 0:
    return -b2p / (2 * a2p), -b2p / (2 * a2p)
  if better and s0 > 0 and s1 > 0:
    return min(lr * (1 + s1 / s0), lr * (2 - b1) / (1 - b1)), lr_opt
  if not better and s0 < 0 and s1 < 0:
    return max(-lr * s1 / s0, lr * (0.5 - b1) / (1 - b1)), lr_opt
  return (lr if better else 0.0), lr_opt


def step(
    p,
    state,
    loss0,
    g0,
    loss_and_grad,
    *,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    adapt_learning_rate=True,
    adam=True,
    asam=False,
    rho=1.0,
    eta=0.0,
    nesterov=False,
    bias_correction=True,
    schedule_steps=50_000,
    weights=(),
):
  """One ACME step; returns (new params, new state, accepted).

  `loss_and_grad(p)` gives (loss, grads) as floats and dicts of arrays;
  `weights` names the ASAM weight leaves.
  """
  with np.errstate(all='ignore'):
    return _step(
        p,
        state,
        loss0,
        g0,
        loss_and_grad,
        b1,
        b2,
        eps,
        weight_decay,
        adapt_learning_rate,
        adam,
        asam,
        rho,
        eta,
        nesterov,
        bias_correction,
        schedule_steps,
        weights,
    )


def _step(
    p,
    state,
    loss0,
    g0,
    loss_and_grad,
    b1,
    b2,
    eps,
    wd,
    adapt_learning_rate,
    adam,
    asam,
    rho,
    eta,
    nesterov,
    bias_correction,
    schedule_steps,
    weights,
):
  keys = sorted(p)
  lr, t = state.lr, state.t
  c1, c2 = (1 - b1**t, 1 - b2**t) if bias_correction else (1.0, 1.0)
  m, v = state.m, state.v
  if m is None:  # step 1: the very first call only
    m = {k: ((1 - b1) if bias_correction else 1.0) * g0[k] for k in keys}
    v = (
        {k: np.full_like(g0[k], np.mean(g0[k] ** 2)) for k in keys}
        if adam
        else None
    )
  before = (m, v)

  def denominators(v):
    if adam:
      return {k: (np.sqrt(v[k] / c2) + eps) * c1 for k in keys}
    return {k: c1 for k in keys}

  def average(m, v, u):
    d = denominators(v) if adam else {k: 1.0 for k in keys}
    pg = sum(np.sum(m[k] * u[k] / d[k]) for k in keys)
    pp = sum(np.sum(m[k] ** 2 / d[k]) for k in keys)
    gg = sum(np.sum(u[k] ** 2 / d[k]) for k in keys)
    k_ = (b1 * pg - np.sqrt((2 - b1**2) * gg * pp + b1**2 * pg**2)) / (
        gg * (b1 - 1)
    )
    f = k_ if k_ < 1 else 1.0
    m = {k: b1 * m[k] + (1 - b1) * f * u[k] for k in keys}
    if adam:
      v = {k: b2 * v[k] + (1 - b2) * (f * u[k]) ** 2 for k in keys}
    finite = all(np.isfinite(x) for x in (pg, pp, gg))
    return m, v, finite

  def rejected(m, v):
    return (
        p,
        SpecState({k: (1 - b1) * m[k] for k in keys}, v, b1 * lr, 1, 1.0),
        False,
    )

  u = g0
  if asam:
    d = denominators(v)
    h = {k: g0[k] / d[k] for k in keys} if adam else g0
    w = {k: (np.abs(p[k]) + eta) if k in weights else 1.0 for k in keys}
    norm = math.sqrt(sum(np.sum((h[k] * w[k]) ** 2) for k in keys)) + 1e-16
    _, u = loss_and_grad(
        {k: p[k] + h[k] * w[k] * w[k] * rho / norm for k in keys}
    )
  m, v, finite = average(m, v, u)
  if not finite:
    return rejected(*before)
  d = denominators(v)
  look = b1 if (nesterov and not adapt_learning_rate) else 1.0
  p1 = {k: p[k] - lr * look * m[k] / d[k] for k in keys}
  if not adapt_learning_rate:
    if nesterov:
      p1 = {k: p1[k] - lr * (1 - b1) * u[k] / d[k] for k in keys}
    p1 = {k: p1[k] * (1 - lr * wd) for k in keys}
    if not np.isfinite(loss0):
      return rejected(m, v)
    return p1, SpecState(m, v, lr, t + 1, state.sched), True
  loss1, g1 = loss_and_grad(p1)
  s0 = sum(np.sum(m[k] * g0[k] / d[k]) for k in keys)
  s1 = sum(np.sum(m[k] * g1[k] / d[k]) for k in keys)
  if not all(np.isfinite(x) for x in (loss0, loss1, s0, s1, lr)):
    return rejected(m, v)
  lr_new, lr_opt = _table(loss0, loss1, s0, s1, lr, b1)
  gamma = 2 * (1 - b1) / (1 + b1) * (1 + 2 * b1) / (2 - b1) * state.sched
  a = (lr_opt if loss1 > loss0 else lr) * gamma
  new_p = {k: p[k] - a * (b1 if nesterov else 1.0) * m[k] / d[k] for k in keys}
  if nesterov:
    g = g0 if loss1 > loss0 else g1
    new_p = {k: new_p[k] - a * (1 - b1) * g[k] / d[k] for k in keys}
  new_p = {k: new_p[k] * (1 - a * wd) for k in keys}
  new_lr = b1 * lr + (1 - b1) * lr_new
  sched = 0.01 + 0.99 * (1 + math.cos(math.pi * t / schedule_steps)) / 2
  if loss1 < loss0:
    m, v, finite = average(m, v, g1)
    if not finite:
      return rejected(m, v)
  return new_p, SpecState(m, v, new_lr, t + 1, sched), True
