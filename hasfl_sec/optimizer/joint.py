"""Joint single-device moves: a device changes its batch size *and* its cut at once.

Block-coordinate descent can stall where a device would gain from a deeper/shallower cut only
together with a different batch size (the cut step sees the old b_i, the batch step the old
cut). This step evaluates, for every device i, every (cut, batch) pair with the other devices
fixed -- an (N, C, b_max) array -- exactly: the four maxima by top-2 bookkeeping, the deepest
cut by top-2 on the cut indices (R uses the realised max), the sums by subtraction. Like the cut
step it takes all devices' best moves at once when that is better than the single best move,
and otherwise the single best move, until no device can improve alone. O(N C b_max) per move.

:func:`cut_batch_step` is the larger neighbourhood the solver polishes its winner with: the most
promising single-device cut changes, each followed by a full batch step (all b re-optimised).
"""

from __future__ import annotations

import logging

import numpy as np

from .batch import batch_step
from .problem import Problem
from .rounding import max_excluding

__all__ = ["joint_step", "cut_batch_step"]

log = logging.getLogger(__name__)

# Bound on the (N, C, b_max) candidate arrays: larger problems are scored device block by block.
_MAX_CELLS = 1 << 21
# Joint moves per call: the same plan as uncapped on the solver-cost benchmark at N = 100, 3x faster.
_MAX_JOINT_MOVES = 64


def _candidates(problem: Problem, b: np.ndarray, j: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """F of every (cut, batch) choice of each device in ``dev``, others fixed: (len(dev), C, b_max)."""
    p = problem
    rows = np.arange(p.num_devices)
    bgrid = np.arange(1, p.b_max + 1, dtype=np.float64)[None, None, :]
    terms = []
    for coef, scaled in ((p.a, True), (p.g, True), (p.up, False), (p.down, False)):
        cur = coef[rows, j] * (b if scaled else 1.0)
        ex = max_excluding(cur)[dev][:, None, None]
        new = coef[dev][:, :, None] * (bgrid if scaled else 1.0)
        terms.append(np.maximum(ex, new))
    s_cur = p.s[rows, j] * b
    s_rest = (float(np.sum(s_cur)) - s_cur[dev])[:, None, None]
    lat = terms[0] + terms[1] + s_rest + p.s[dev][:, :, None] * bgrid + (terms[2] + terms[3]) / p.interval
    deepest = np.maximum(max_excluding(j.astype(np.float64))[dev][:, None], np.arange(p.num_cuts)[None, :])
    inv_cur = p.variance_mult[rows, j] / b
    inv_rest = (float(np.sum(inv_cur)) - inv_cur[dev])[:, None, None]
    margin = (p.epsilon - p.drift[deepest.astype(np.int64)][:, :, None]
              - p.k * (inv_rest + p.variance_mult[dev][:, :, None] / bgrid))
    ok = (margin > 0) & (bgrid <= p.ub[dev][:, :, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, p.scale * lat / margin, np.inf)


def _best_moves(problem: Problem, b: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per device: best cut column, best batch and the F of that single move."""
    n, c, bm = problem.num_devices, problem.num_cuts, problem.b_max
    step = max(1, _MAX_CELLS // (c * bm))
    best_j = np.empty(n, dtype=np.int64)
    best_b = np.empty(n)
    best_v = np.empty(n)
    for start in range(0, n, step):
        dev = np.arange(start, min(n, start + step))
        cand = _candidates(problem, b, j, dev).reshape(len(dev), -1)
        flat = np.argmin(cand, axis=1)
        best_v[dev] = cand[np.arange(len(dev)), flat]
        best_j[dev], bi = np.divmod(flat, bm)
        best_b[dev] = bi + 1.0
    return best_j, best_b, best_v


def joint_step(problem: Problem, b: np.ndarray, j: np.ndarray, *, max_moves: int | None = None) -> tuple[
        np.ndarray, np.ndarray, float]:
    """Descend with joint (b_i, c_i) moves from (``b``, ``j``); returns (b, j, F)."""
    b, j = b.astype(np.float64).copy(), j.astype(np.int64).copy()
    cur = problem.objective_idx(b, j)
    # Each move costs O(N C b_max); when moves are taken one device at a time a large fleet would
    # need O(N) of them, so the count is capped (the BCD loop and the polish continue from here).
    max_moves = min(4 * problem.num_devices + 50, _MAX_JOINT_MOVES) if max_moves is None else max_moves
    for _ in range(max_moves):
        nj, nb, nv = _best_moves(problem, b, j)
        improving = nv < cur * (1 - 1e-12)
        if not improving.any():
            break
        i = int(np.argmin(nv))
        single = float(nv[i])
        all_b, all_j = np.where(improving, nb, b), np.where(improving, nj, j)
        all_v = problem.objective_idx(all_b, all_j)
        if all_v < single:
            b, j, cur = all_b, all_j, all_v
        else:
            b[i], j[i] = nb[i], nj[i]
            cur = problem.objective_idx(b, j)
    return b, j, cur


def cut_batch_step(problem: Problem, b: np.ndarray, j: np.ndarray, *, candidates: int | None = None) -> tuple[
        np.ndarray, np.ndarray, float]:
    """Try the most promising single-device cut changes with *all* batch sizes re-optimised.

    A device's move to another cut can pay only once the other devices' batch sizes adapt too,
    which neither the joint step (others fixed) nor the cut step (b fixed) sees. The candidates
    are ranked by their joint-move value (others fixed); the best ``candidates`` of them (default
    2C) get a full batch step. Returns the best plan found, or the input when none improves.
    """
    cur = problem.objective_idx(b, j)
    n, c, bm = problem.num_devices, problem.num_cuts, problem.b_max
    k = 2 * c if candidates is None else candidates
    step = max(1, _MAX_CELLS // (c * bm))
    per_cut = np.empty((n, c))
    best_b = np.empty((n, c))
    for start in range(0, n, step):
        dev = np.arange(start, min(n, start + step))
        cand = _candidates(problem, b, j, dev)
        per_cut[dev] = np.min(cand, axis=2)
        best_b[dev] = np.argmin(cand, axis=2) + 1.0
    per_cut[np.arange(n), j] = np.inf  # only real cut changes
    per_cut[problem.ub < 1] = np.nan  # cuts the device cannot hold at all: never tried
    order = np.argsort(per_cut, axis=None, kind="stable")[:k]
    order = order[~np.isnan(per_cut.ravel()[order])]
    best = (b, j, cur)
    for flat in order:
        i, col = divmod(int(flat), c)
        nj = j.copy()
        nj[i] = col
        nb = b.copy()
        nb[i] = best_b[i, col]
        nb, val = batch_step(problem, nb, nj)
        if val < best[2] * (1 - 1e-12):
            best = (nb, nj, val)
    return best
