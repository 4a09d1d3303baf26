"""HASFL's batch-size step: the best b for fixed cuts (docs/hasfl.md section 4.2, BS subproblem).

With the cuts fixed, device i has per-sample coefficients a_i, g_i, s_i and cap u_i =
min(b_max, mcap_i), and the objective is (up to the factor 2 theta / gamma)::

    ratio(b) = N(b) / Den(b),  N(b) = max_i a_i b_i + max_i g_i b_i + sum_i s_i b_i + T_A / I,
                               Den(b) = eps' - k sum_i m_i / b_i,     eps' = eps - D(L_c)

(m_i = the problem's variance multiplier at device i's cut: 1 without privacy noise, so that
every mu below is really a per-device mu_i = mu m_i; the formulas are written for m = 1.)

Linear-over-concave after the epigraph T1 >= a_i b_i, T2 >= g_i b_i, hence quasi-convex: the
continuous relaxation is solved exactly by **Dinkelbach's method**. Each Dinkelbach step
minimises the convex function N(b) - lambda Den(b). For fixed (T1, T2) every b_i decouples into
min phi_i(b) = s_i b + mu / b (mu = lambda k) over [1, min(u_i, T1/a_i, T2/g_i)], so
b_i = clip(sqrt(mu / s_i), 1, min(u_i, T1/a_i, T2/g_i)), and what is left is the 2-D convex
function G(T1, T2). It is minimised as follows (the 2-D method):

* **T2 for fixed T1, exactly.** Let w_i = min(clip(sqrt(mu/s_i), 1, u_i), T1/a_i) and
  q_i = g_i w_i. Device i feels T2 only while T2 < q_i, so sorting q descending splits T2 into N+1
  intervals on each of which the active set is a prefix and G is
  T2 (1 + sum_act s_i/g_i) + mu sum_act g_i / T2 + const -- minimised in closed form
  (T2 = sqrt(mu sum g / (1 + sum s/g)) clipped to the interval). Prefix sums give all N+1 interval
  minima in O(N) after an O(N log N) sort; the smallest is the exact minimum over T2.
* **T1 by bounded Brent.** H(T1) = T1 + min_T2 G(T1, T2) is convex (partial minimisation of a
  jointly convex function) on [max_i a_i, max_i a_i u_i]; scipy's bounded Brent finds its minimum
  to 1e-11 relative in a few dozen evaluations; the end points are checked as well.

The continuous optimum is then rounded by :mod:`.rounding` (exact threshold sweeps, a joint
threshold window and +-1 descent, all scored with the exact integer objective).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from .problem import Problem
from .rounding import free_optimum, round_batch

__all__ = ["BatchTerms", "RelaxedBatch", "batch_terms", "solve_relaxed", "batch_step"]

log = logging.getLogger(__name__)

_DINKELBACH_RTOL = 1e-12
_BRENT_XRTOL = 1e-11


@dataclass(frozen=True)
class BatchTerms:
    """The batch subproblem for fixed cuts: per-device a, g, s, caps u and the scalars."""

    a: np.ndarray
    g: np.ndarray
    s: np.ndarray
    ub: np.ndarray
    m: np.ndarray  # variance multipliers m_i (ones without privacy noise)
    const: float  # T_A / I: does not depend on b
    eps_eff: float  # eps - D(L_c)
    k: float
    scale: float  # 2 theta / gamma

    def ratio(self, b: np.ndarray) -> float:
        """Continuous objective F(b) (inf where the bracket is not positive)."""
        den = self.eps_eff - self.k * float(np.sum(self.m / b))
        num = float(np.max(self.a * b) + np.max(self.g * b) + np.sum(self.s * b)) + self.const
        return self.scale * num / den if den > 0 else math.inf

    def ratio_many(self, b: np.ndarray) -> np.ndarray:
        """``ratio`` for each row of a (K, N) array."""
        den = self.eps_eff - self.k * np.sum(self.m / b, axis=1)
        num = np.max(self.a * b, axis=1) + np.max(self.g * b, axis=1) + np.sum(self.s * b, axis=1) + self.const
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, self.scale * num / den, np.inf)


def batch_terms(problem: Problem, j: np.ndarray) -> BatchTerms:
    """The :class:`BatchTerms` of ``problem`` at cut indices ``j``."""
    rows = np.arange(problem.num_devices)
    agg = float(np.max(problem.up[rows, j]) + np.max(problem.down[rows, j]))
    return BatchTerms(
        a=problem.a[rows, j], g=problem.g[rows, j], s=problem.s[rows, j], ub=problem.ub[rows, j].astype(float),
        m=problem.variance_mult[rows, j],
        const=agg / problem.interval, eps_eff=problem.epsilon - float(problem.drift[int(np.max(j))]),
        k=problem.k, scale=problem.scale,
    )


@dataclass(frozen=True)
class RelaxedBatch:
    """Continuous optimum: b, F(b) and the Dinkelbach parameter mu = lambda k at the end."""

    b: np.ndarray
    value: float
    mu: float
    iterations: int


def _safe_div(num: np.ndarray | float, den: np.ndarray) -> np.ndarray:
    """num / den with +inf where den == 0 (a zero coefficient never binds)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)


class _Inner:
    """min_b N(b) - lambda Den(b) for one lambda, via the 2-D (T1, T2) reduction."""

    def __init__(self, t: BatchTerms, mu: float) -> None:
        self.t, self.mu = t, mu
        self.cap = free_optimum(t, mu)  # unconstrained best b_i, inside [1, u_i]
        self.inv_a = _safe_div(1.0, t.a)
        self.s_over_g = np.where(t.g > 0, t.s / np.where(t.g > 0, t.g, 1.0), 0.0)
        self.mu_i = mu * t.m  # per-device weight of the 1/b term (exactly mu when m = 1)
        self.g0 = float(np.max(t.g))
        self.t1_lo = float(np.max(t.a))
        self.t1_hi = float(np.max(t.a * self.cap))

    def widths(self, t1: float) -> np.ndarray:
        """w_i: the largest useful b_i under T1 alone."""
        return np.minimum(self.cap, t1 * self.inv_a) if t1 > 0 else np.where(self.t.a > 0, 0.0, self.cap)

    def best_t2(self, t1: float) -> tuple[float, float]:
        """(T2*, min_T2 [T2 + sum_i phi_i(min(w_i, T2/g_i))]) exactly, by the interval scan."""
        t, mu = self.t, self.mu
        w = self.widths(t1)
        phi = t.s * w + self.mu_i / w
        q = np.where(t.g > 0, t.g * w, -np.inf)
        order = np.argsort(-q, kind="stable")
        qs = q[order]
        zero = np.zeros(1)
        sg = np.concatenate([zero, np.cumsum((t.m * t.g)[order])])  # sum of m_i g_i over the active prefix
        ssg = np.concatenate([zero, np.cumsum(self.s_over_g[order])])
        rest = float(np.sum(phi)) - np.concatenate([zero, np.cumsum(phi[order])])  # inactive devices
        hi = np.concatenate([[np.inf], qs])
        lo = np.maximum(np.concatenate([qs, [-np.inf]]), self.g0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t2 = np.clip(np.sqrt(mu * sg / (1.0 + ssg)), lo, hi)
            val = t2 * (1.0 + ssg) + np.where(sg > 0, mu * sg / t2, 0.0) + rest
        val = np.where(hi >= lo, val, np.inf)
        m = int(np.argmin(val))
        return float(t2[m]), float(val[m])

    def h(self, t1: float) -> float:
        return t1 + self.best_t2(t1)[1]

    def solve(self) -> np.ndarray:
        """The minimising b of the inner problem."""
        lo, hi = self.t1_lo, self.t1_hi
        cands = [lo]
        if hi > lo * (1 + 1e-15):
            res = minimize_scalar(self.h, bounds=(lo, hi), method="bounded",
                                  options={"xatol": _BRENT_XRTOL * hi, "maxiter": 500})
            cands += [float(res.x), hi]
        t1 = min(cands, key=self.h)
        t2 = self.best_t2(t1)[0]
        g = self.t.g
        limit = np.minimum(self.widths(t1), np.where(g > 0, t2 / np.where(g > 0, g, 1.0), np.inf))
        return np.maximum(limit, 1.0)


def solve_relaxed(t: BatchTerms, *, max_iter: int = 60) -> RelaxedBatch | None:
    """Exact continuous minimiser of F over b in [1, u] (None when even b = u misses eps)."""
    b = t.ub.copy()
    best_val = t.ratio(b)
    if not math.isfinite(best_val):
        return None
    lam = best_val / t.scale
    best_b, best_mu = b, lam * t.k
    for it in range(1, max_iter + 1):
        b_new = _Inner(t, lam * t.k).solve()
        val = t.ratio(b_new)
        if val < best_val:
            best_b, best_val, best_mu = b_new, val, lam * t.k
        # Dinkelbach: lambda_{t+1} = N/Den(b_new) <= lambda_t; stop when it no longer moves.
        if not val < lam * t.scale * (1.0 - _DINKELBACH_RTOL):
            return RelaxedBatch(best_b, best_val, best_mu, it)
        lam = val / t.scale
    log.debug("Dinkelbach stopped at the iteration cap (%d)", max_iter)
    return RelaxedBatch(best_b, best_val, best_mu, max_iter)


def batch_step(problem: Problem, b: np.ndarray | None, j: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Best integer b for cut indices ``j``; keeps ``b`` (None = no current plan) when it is better.

    Returns (b, F); F is inf when no batch sizes reach the target at these cuts.
    """
    t = batch_terms(problem, j)
    cur = problem.objective_idx(b, j) if b is not None else math.inf
    if np.any(t.ub < 1):
        return b, cur  # some device does not fit a single sample at its cut
    relaxed = solve_relaxed(t)
    if relaxed is None:
        return b, cur
    new_b = round_batch(t, relaxed)
    new = problem.objective_idx(new_b, j)
    return (new_b, new) if new < cur else (b, cur)
