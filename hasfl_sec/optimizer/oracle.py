"""Exhaustive search over every (b, c) plan of a small problem -- the ground truth for tests.

The search space has (C b_max)^N plans. It is enumerated as C^N cut vectors, and for each cut
vector the whole batch grid [1, b_max]^N is scored in one vectorised numpy evaluation (in chunks
of at most ``_CHUNK`` rows). The terms that do not depend on the cuts (sum_i 1/b_i) are computed
once per chunk; with variance multipliers (a privacy-constrained problem) sum_i m[i, c_i] / b_i
depends on the cut vector and is accumulated with the other per-device columns. Problems above
``oracle_limit`` plans are refused.
"""

from __future__ import annotations

import itertools
import logging
import math
import time

import numpy as np

from ..errors import ConfigError
from .problem import Problem
from .solution import PLANNERS, PlannerParams, Solution, make_solution

__all__ = ["plan_oracle", "search_space_size"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 18  # batch vectors scored at once: bounds memory at a few tens of MB


def search_space_size(problem: Problem) -> float:
    """(C b_max)^N, the number of plans the oracle would score."""
    return float(problem.num_cuts * problem.b_max) ** problem.num_devices


def _batch_grid(n: int, b_max: int, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the lexicographic grid [1, b_max]^n, as floats (K, n)."""
    idx = np.arange(start, stop, dtype=np.int64)
    out = np.empty((len(idx), n))
    for i in range(n - 1, -1, -1):  # last device varies fastest
        idx, rem = np.divmod(idx, b_max)
        out[:, i] = rem + 1
    return out


@PLANNERS.register("oracle", help="exhaustive search over all plans (small problems only; the tests' ground truth)")
def plan_oracle(problem: Problem, params: PlannerParams | None = None) -> Solution:
    """The exact optimum of F over integer b in [1, b_max]^N and all allowed cuts."""
    params = params or PlannerParams()
    started = time.perf_counter()
    size = search_space_size(problem)
    if size > params.oracle_limit:
        raise ConfigError("optimizer.oracle_limit", params.oracle_limit, f"at least {size:.3g} plans for this problem",
                          f"(C b_max)^N = ({problem.num_cuts} x {problem.b_max})^{problem.num_devices} is too many to "
                          "enumerate; use fewer devices, cuts or a smaller b_max")
    n, c, bm = problem.num_devices, problem.num_cuts, problem.b_max
    rows = np.arange(n)
    best_val, best_b, best_j = math.inf, None, None
    total = bm**n
    for start in range(0, total, _CHUNK):
        grid = _batch_grid(n, bm, start, min(total, start + _CHUNK))
        # Everything that does not depend on the whole cut vector is computed once per chunk:
        # per (device, cut) columns b_i a_ij, b_i g_ij, b_i s_ij (inf past the memory cap, so an
        # over-memory plan scores inf with no mask), and 1/margin per deepest cut.
        # Layout (device, cut, plan) keeps every column contiguous for the inner loop.
        bt = grid.T[:, None, :]
        col_a = np.where(bt > problem.ub[:, :, None], np.inf, bt * problem.a[:, :, None])
        col_g = bt * problem.g[:, :, None]
        col_s = bt * problem.s[:, :, None]
        weighted = problem.noisy
        if weighted:
            col_inv = problem.variance_mult[:, :, None] / bt  # m[i, c] / b_i
        else:
            margin = problem.epsilon - problem.drift[:, None] - problem.k * np.sum(1.0 / grid, axis=1)[None, :]
            with np.errstate(divide="ignore"):
                inv_margin = np.where(margin > 0, problem.scale / margin, np.inf)
        for jt in itertools.product(range(c), repeat=n):
            j = np.asarray(jt, dtype=np.int64)
            const = (np.max(problem.up[rows, j]) + np.max(problem.down[rows, j])) / problem.interval
            t1, t2, ssum = col_a[0, jt[0]], col_g[0, jt[0]], col_s[0, jt[0]] + const
            inv = col_inv[0, jt[0]] if weighted else None
            for i in range(1, n):
                t1 = np.maximum(t1, col_a[i, jt[i]])
                t2 = np.maximum(t2, col_g[i, jt[i]])
                ssum = ssum + col_s[i, jt[i]]
                if weighted:
                    inv = inv + col_inv[i, jt[i]]
            if weighted:
                m = problem.epsilon - problem.drift[int(j.max())] - problem.k * inv
                with np.errstate(divide="ignore"):
                    val = (t1 + t2 + ssum) * np.where(m > 0, problem.scale / m, np.inf)
            else:
                val = (t1 + t2 + ssum) * inv_margin[int(j.max())]
            k = int(np.argmin(val))
            if val[k] < best_val:
                best_val, best_b, best_j = float(val[k]), grid[k].copy(), j
    if best_b is None:  # unreachable: Problem refuses targets no plan reaches
        raise ConfigError("optimizer.target", problem.epsilon, "a target some plan can reach")
    log.info("oracle: %d plans scored in %.2f s, F = %.6g", int(size), time.perf_counter() - started, best_val)
    return make_solution(problem, "oracle", best_b, best_j, started=started)
