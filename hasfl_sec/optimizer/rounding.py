"""Integer batch sizes from the continuous optimum of the batch step (docs/hasfl.md 4.2, "round").

For fixed cuts, any integer plan is described by two thresholds: device i uses
b_i = min(base_i, floor(T1 / a_i), floor(T2 / g_i)), where base_i is the integer minimiser of the
device's own term phi_i(b) = s_i b + mu / b (mu = lambda k from Dinkelbach) and T1, T2 bound the
two barriers. The rounding therefore searches thresholds, scoring every candidate with the exact
integer objective (the ratio itself, not a linearisation):

1. **Exact threshold sweeps.** With T2 fixed, every b_i is a non-decreasing step function of T1
   that steps at T1 = a_i n. Sorting all these events (at most N b_max) and accumulating the
   changes of sum s_i b_i, sum 1/b_i and of the other barrier (a running max) scores *every*
   distinct T1 in O(E log E); the best is kept. Then T2 is swept with T1 fixed, and so on until
   neither sweep improves (coordinate descent on the two thresholds).
2. **Joint window.** Because the two thresholds can need to move together, every pair from the
   few event values nearest to the current (T1, T2) is scored as well.
3. **+-1 descent.** Single-device +-1 moves, all N of them scored exactly in O(N) per move (the
   two maxima by top-2 bookkeeping), until none improves.

Every candidate stays in [1, u_i]; ceil of the relaxed b is feasible whenever the relaxation is,
and it is among the candidates, so rounding never loses feasibility.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["round_batch", "max_excluding", "free_optimum"]

log = logging.getLogger(__name__)

_WINDOW = 6  # event values per side in the joint (T1, T2) scan
_SWEEPS = 8  # alternations of the two exact sweeps (they stop earlier once neither improves)
_BAND = 0.25  # relative range of thresholds one sweep scores
_SLACK = 1 + 1e-9  # keeps a_i n / a_i from flooring to n - 1 in floating point


def max_excluding(x: np.ndarray) -> np.ndarray:
    """For each i, max_{k != i} x_k (top-2 bookkeeping; -inf when there is one element)."""
    if len(x) == 1:
        return np.array([-np.inf])
    i1 = int(np.argmax(x))
    out = np.full_like(x, x[i1], dtype=np.float64)
    out[i1] = float(np.max(np.delete(x, i1)))
    return out


def free_optimum(t: Any, mu: float) -> np.ndarray:
    """clip(sqrt(mu m_i / s_i), 1, u_i): each device's best b ignoring the barriers (s_i = 0 -> u_i)."""
    if mu <= 0:
        return np.ones_like(t.s)
    mu_i = mu * t.m
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(np.sqrt(np.where(t.s > 0, mu_i / np.where(t.s > 0, t.s, 1.0), np.inf)), 1.0, t.ub)


def _floor_div(level: float | np.ndarray, coef: np.ndarray) -> np.ndarray:
    """floor(level / coef) with +inf where coef == 0 (that barrier never binds)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(coef > 0, np.floor(level * _SLACK / np.where(coef > 0, coef, 1.0)), np.inf)


def _sweep(t: Any, cap: np.ndarray, c: np.ndarray, o: np.ndarray, around: float) -> tuple[np.ndarray, float]:
    """Best b_i = min(cap_i, floor(T / c_i)) over every threshold T within a factor
    ``1 +- _BAND`` of ``around``; the other barrier uses ``o``. Returns the best b and its ratio.

    The band keeps the event count (and the sort) small; a best T on the band's edge simply
    makes the next sweep start from there.
    """
    n = len(cap)
    pos = c > 0
    lo_level = max(float(np.max(c)), around * (1 - _BAND))
    b0 = np.maximum(np.minimum(cap, _floor_div(lo_level, c)), 1.0)
    top = np.maximum(np.minimum(cap, _floor_div(around * (1 + _BAND), c)), b0)
    counts = np.where(pos, top - b0, 0).astype(np.int64)
    total = int(counts.sum())
    inv0, s0 = float(np.sum(t.m / b0)), float(np.sum(t.s * b0))
    best_b, best_val = b0, t.ratio(b0)
    if total == 0:
        return best_b, best_val
    dev = np.repeat(np.arange(n), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    step = b0[dev] + (np.arange(total) - first[dev]) + 1.0  # the b_i reached at the event
    level = c[dev] * step
    order = np.argsort(level, kind="stable")
    dev, step, level = dev[order], step[order], level[order]
    inv = inv0 + np.cumsum(t.m[dev] * (1.0 / step - 1.0 / (step - 1.0)))
    s_sum = s0 + np.cumsum(t.s[dev])
    other = np.maximum.accumulate(np.maximum(float(np.max(o * b0)), o[dev] * step))
    # The c-barrier equals the latest event level: events are sorted and all lie above c b0.
    num = level + other + s_sum + t.const
    den = t.eps_eff - t.k * inv
    with np.errstate(divide="ignore", invalid="ignore"):
        val = np.where(den > 0, t.scale * num / den, np.inf)
    # Only the last event of a group with equal levels is a real threshold.
    last = np.append(level[1:] != level[:-1], True)
    val = np.where(last, val, np.inf)
    k = int(np.argmin(val))
    if val[k] < best_val:
        best_b = b0 + np.bincount(dev[: k + 1], minlength=n)
        best_val = float(val[k])
    return best_b, best_val


def _sweeps(t: Any, base: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Alternate the exact T1 and T2 sweeps from ``b`` until neither improves."""
    cur = t.ratio(b)
    for _ in range(_SWEEPS):
        improved = False
        for c, o in ((t.a, t.g), (t.g, t.a)):
            cap = np.maximum(np.minimum(base, _floor_div(float(np.max(o * b)), o)), 1.0)
            nb, val = _sweep(t, cap, c, o, float(np.max(c * b)))
            if val < cur * (1 - 1e-13):
                b, cur, improved = nb, val, True
        if not improved:
            break
    return b


def _events_near(coef: np.ndarray, level: float, ub: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` distinct values coef_i n (n <= u_i) on each side of ``level``."""
    pos = coef > 0
    n = np.floor(level / coef[pos])[:, None] + np.arange(1 - width, width + 1)[None, :]
    n = np.where((n >= 1) & (n <= ub[pos][:, None]), n, np.nan)
    vals = np.unique((coef[pos][:, None] * n).ravel())
    vals = vals[np.isfinite(vals) & (vals >= float(np.max(coef)))]
    k = int(np.searchsorted(vals, level))
    return vals[max(0, k - width): k + width]


def _joint_window(t: Any, base: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Best of every (T1, T2) pair among the event values nearest to the thresholds of ``b``."""
    t1, t2 = float(np.max(t.a * b)), float(np.max(t.g * b))
    near1 = _events_near(t.a, t1, t.ub, _WINDOW)
    near2 = _events_near(t.g, t2, t.ub, _WINDOW)
    if len(near1) == 0 or len(near2) == 0:
        return b
    p1, p2 = np.meshgrid(near1, near2, indexing="ij")
    rows = np.minimum(np.minimum(base[None, :], _floor_div(p1.ravel()[:, None], t.a[None, :])),
                      _floor_div(p2.ravel()[:, None], t.g[None, :]))
    rows = np.clip(rows, 1.0, t.ub[None, :])
    vals = t.ratio_many(rows)
    k = int(np.argmin(vals))
    return rows[k] if vals[k] < t.ratio(b) else b


def _local_search(t: Any, b: np.ndarray, max_moves: int) -> np.ndarray:
    """Steepest descent over single-device +-1 moves, all evaluated exactly in O(N) per move."""
    b = b.copy()
    cur = t.ratio(b)
    for _ in range(max_moves):
        ex_a, ex_g = max_excluding(t.a * b), max_excluding(t.g * b)
        s_sum, inv = float(np.sum(t.s * b)), float(np.sum(t.m / b))
        best_val, best_i, best_b = cur, -1, 0.0
        for step in (-1.0, 1.0):
            nb = b + step
            ok = (nb >= 1) & (nb <= t.ub)
            nb_safe = np.where(ok, nb, b)
            num = np.maximum(ex_a, t.a * nb_safe) + np.maximum(ex_g, t.g * nb_safe) + s_sum + t.s * step + t.const
            den = t.eps_eff - t.k * (inv - t.m / b + t.m / nb_safe)
            with np.errstate(divide="ignore", invalid="ignore"):
                val = np.where(ok & (den > 0), t.scale * num / den, np.inf)
            i = int(np.argmin(val))
            if val[i] < best_val:
                best_val, best_i, best_b = float(val[i]), i, nb[i]
        if best_i < 0 or not best_val < cur * (1 - 1e-13):
            break
        b[best_i] = best_b
        cur = t.ratio(b)
    return b


def round_batch(t: Any, relaxed: Any) -> np.ndarray:
    """Integer b near the continuous optimum ``relaxed`` of the batch terms ``t``.

    Args:
        t: :class:`~hasfl_sec.optimizer.batch.BatchTerms` of the fixed cuts.
        relaxed: its :class:`~hasfl_sec.optimizer.batch.RelaxedBatch`.
    """
    b = relaxed.b
    hi = np.clip(np.ceil(b), 1, t.ub)
    cands = [np.clip(np.floor(b), 1, t.ub), hi, np.clip(np.round(b), 1, t.ub)]
    best = min(cands, key=t.ratio)
    # Integer Dinkelbach: re-derive mu from the best integer ratio so far and search again.
    mu = relaxed.mu
    for rep in range(2):
        free = free_optimum(t, mu)
        f_lo, f_hi = np.clip(np.floor(free), 1, t.ub), np.clip(np.ceil(free), 1, t.ub)
        mu_i = mu * t.m
        base = np.where(t.s * f_lo + mu_i / f_lo <= t.s * f_hi + mu_i / f_hi, f_lo, f_hi)
        start = np.clip(np.minimum(base, np.minimum(_floor_div(float(np.max(t.a * b)), t.a),
                                                      _floor_div(float(np.max(t.g * b)), t.g))), 1, t.ub)
        # Both the threshold-rounded start and the best plain rounding: with few samples per
        # device (big integer steps) they can lead to different local optima.
        for cand in (start, best) if rep == 0 else (best,):
            swept = _joint_window(t, base, _sweeps(t, base, cand))
            if t.ratio(swept) < t.ratio(best):
                best = swept
        mu_new = t.ratio(best) / t.scale * t.k
        if mu_new == mu:
            break
        mu = mu_new
    return _local_search(t, best, max_moves=4 * len(b) + 50)
