"""HASFL's cut step: the best per-device cuts for given batch sizes (docs/hasfl.md 4.2, MS subproblem).

The bound depends on the cuts only through the deepest cut L_c, so the step enumerates L_c over
the allowed cuts; for each, every device picks a cut <= L_c. With ``clip_batch`` (HASFL's default)
a device may take a cut whose memory cap is below its b_i, with b_i clipped to that cap -- without
it, a memory-tight device could never reach a cut that pays only with a slightly smaller batch.
Device i at cut column c then uses bc[i, c] = min(b_i, cap[i, c]), and for a fixed L_c the step
minimises::

    F_L(c) = 2 theta / gamma * T(c) / (eps - D(L_c) - k sum_i m[i, c_i] / bc[i, c_i])
    T(c) = max_i A[i, c_i] + max_i G[i, c_i] + sum_i S[i, c_i] + (max_i U[i, c_i] + max_i V[i, c_i]) / I

(A = bc a, G = bc g, S = bc s, U = up, V = down; m = the problem's variance multipliers, which
depend on the cut when privacy noise is planned). Without clipping and with m = 1 the denominator
is a constant and this is the round latency alone. A device's exact best response needs, for each max term, the
maximum over the *other* devices: top-2 bookkeeping gives all N of them in O(N), so every
device's value at every cut is one (N, C) array evaluation. The step repeats: take every device's
best response at once if that is better than the single best move, otherwise the single best move
(so F never increases), until no device can improve alone -- the fixed point of sequential best
responses. The plan is then scored with the exact objective (R at the realised deepest cut, never
worse than the enumerated L_c since D grows with the cut), and the best L_c wins.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .problem import Problem
from .rounding import max_excluding

__all__ = ["cut_step", "cut_descent", "own_best_cuts", "latency_terms", "uniform_feasible"]

log = logging.getLogger(__name__)


def latency_terms(problem: Problem, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """(A, G, S, U, V) per device and cut column for batch sizes ``b``; U, V already divided by I."""
    bb = b[:, None]
    return (bb * problem.a, bb * problem.g, bb * problem.s, problem.up / problem.interval,
            problem.down / problem.interval)


class _CutModel:
    """Per-(device, cut) terms of the cut step for fixed original batch sizes ``b``."""

    def __init__(self, problem: Problem, b: np.ndarray, clip_batch: bool) -> None:
        self.p = problem
        self.bc = np.minimum(b[:, None], problem.ub).astype(float) if clip_batch else np.repeat(
            b[:, None].astype(float), problem.num_cuts, axis=1)
        self.fits = problem.ub >= (1 if clip_batch else b[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            # m / b per (device, cut): inf where the cut holds no sample (masked by ``fits``)
            self.inv = np.where(self.bc > 0, problem.variance_mult / np.where(self.bc > 0, self.bc, 1.0), np.inf)
        self.maxed = (self.bc * problem.a, self.bc * problem.g, problem.up / problem.interval,
                      problem.down / problem.interval)
        self.S = self.bc * problem.s
        self.rows = np.arange(problem.num_devices)

    def value(self, j: np.ndarray, margin0: float) -> float:
        """F_L of cut columns ``j`` (margin0 = eps - D(L))."""
        r = self.rows
        lat = sum(float(np.max(X[r, j])) for X in self.maxed) + float(np.sum(self.S[r, j]))
        margin = margin0 - self.p.k * float(np.sum(self.inv[r, j]))
        return self.p.scale * lat / margin if margin > 0 else math.inf

    def moves(self, j: np.ndarray, margin0: float, mask: np.ndarray) -> np.ndarray:
        """(N, C): F_L after device i alone moves to cut c (inf where masked or infeasible)."""
        r = self.rows
        s_cur = self.S[r, j]
        lat = float(np.sum(s_cur)) - s_cur[:, None] + self.S
        for X in self.maxed:
            lat = lat + np.maximum(max_excluding(X[r, j])[:, None], X)
        inv_cur = self.inv[r, j]
        margin = margin0 - self.p.k * (float(np.sum(inv_cur)) - inv_cur[:, None] + self.inv)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(mask & (margin > 0), self.p.scale * lat / margin, np.inf)

    def descend(self, j: np.ndarray, margin0: float, mask: np.ndarray, max_moves: int) -> np.ndarray:
        """Best-response descent on F_L from ``j``."""
        j = j.copy()
        total = self.value(j, margin0)
        for _ in range(max_moves):
            cand = self.moves(j, margin0, mask)
            best = np.argmin(cand, axis=1)
            new = cand[self.rows, best]
            improving = new < total * (1 - 1e-12)
            if not improving.any():
                break
            i = int(np.argmin(new))
            joint = np.where(improving, best, j)
            joint_total = self.value(joint, margin0)
            if joint_total < new[i]:
                j, total = joint, joint_total
            else:
                j[i] = best[i]
                total = self.value(j, margin0)
        return j


def own_best_cuts(problem: Problem, b: np.ndarray | None = None) -> np.ndarray:
    """Each device's cut that minimises its own latency (batch ``b``, default 1) within memory."""
    b = np.ones(problem.num_devices) if b is None else np.asarray(b, dtype=float)
    A, G, S, U, V = latency_terms(problem, b)
    own = np.where(problem.ub >= b[:, None], A + G + S + U + V, np.inf)
    return np.argmin(own, axis=1).astype(np.int64)


def cut_step(problem: Problem, b: np.ndarray, j: np.ndarray, *, clip_batch: bool = True) -> tuple[
        np.ndarray, np.ndarray, float]:
    """Best cut columns for batch sizes ``b`` (clipped to memory if ``clip_batch``) from ``j``.

    Returns (b, j, F); keeps the input when no deepest cut does better.
    """
    n, c = problem.a.shape
    model = _CutModel(problem, b, clip_batch)
    own = sum(model.maxed) + model.S
    best_b, best_j, best = b, j, problem.objective_idx(b, j)
    for ell in range(c):
        margin0 = problem.epsilon - float(problem.drift[ell])
        mask = model.fits & (np.arange(c)[None, :] <= ell)
        if not mask.any(axis=1).all():
            continue  # some device cannot train at any cut this shallow
        start = np.minimum(j, ell)
        bad = ~mask[model.rows, start]
        if bad.any():
            start = np.where(bad, np.argmin(np.where(mask, own, np.inf), axis=1), start)
        jj = model.descend(start, margin0, mask, max_moves=4 * n + 50)
        bb = model.bc[model.rows, jj]
        val = problem.objective_idx(bb, jj)
        if val < best:
            best_b, best_j, best = bb, jj, val
    return best_b, best_j, best


def cut_descent(problem: Problem, b: np.ndarray, starts: list[np.ndarray], max_iters: int) -> tuple[
        np.ndarray, float, list[tuple[str, float]], int]:
    """The ``cut-only`` computation: repeated cut steps at fixed ``b`` from each start, best kept.

    Returns (cut columns, F, trace, cut steps run).
    """
    best_j, best, trace, steps = starts[0], math.inf, [], 0
    for j in starts:
        val = problem.objective_idx(b, j)
        for _ in range(max_iters):
            steps += 1
            _, j_new, new = cut_step(problem, b, j, clip_batch=False)
            trace.append(("cut", new))
            improved = new < val * (1 - 1e-12) if math.isfinite(val) else math.isfinite(new)
            j, val = j_new, new
            if not improved:
                break
        if val < best:
            best_j, best = j, val
    return best_j, best, trace, steps


def uniform_feasible(problem: Problem, col: int, b: np.ndarray | None = None) -> np.ndarray:
    """Cut column ``col`` for every device, or, where memory forbids it, the nearest one that fits."""
    b = np.ones(problem.num_devices) if b is None else b
    fits = problem.ub >= b[:, None]
    dist = np.abs(np.arange(problem.num_cuts)[None, :] - col) + 0.5 * (np.arange(problem.num_cuts)[None, :] > col)
    return np.argmin(np.where(fits, dist, math.inf), axis=1).astype(np.int64)
