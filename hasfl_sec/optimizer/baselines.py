"""Baseline planners HASFL is compared with (docs/hasfl.md section 5, benchmarks (i)-(iv)).

* ``sfl`` -- conventional SFL: one batch size (``b_uniform``) and one fixed cut (``cut``) for all.
* ``bs-only`` -- HASFL's batch-size step only, the cut fixed as in ``sfl``.
* ``cut-only`` -- HASFL's cut step only, with the uniform batch size (AdaptSFL-like).
* ``random`` -- seeded random b_i and cuts within memory (resampled when the bound is missed).

A baseline that cannot reach the target returns a :class:`Solution` with infinite time (and logs a
warning): a comparison needs the row, not an exception.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from ..errors import ConfigError
from .batch import batch_step
from .cuts import cut_descent
from .problem import Problem
from .solution import PLANNERS, PlannerParams, Solution, make_solution
from .solver import cut_only_starts, fixed_cut_column, uniform_batch

__all__ = ["plan_sfl", "plan_bs_only", "plan_cut_only", "plan_random"]

log = logging.getLogger(__name__)

# Stream key of the random baseline, so its draws do not collide with other seeded streams.
_RANDOM_STREAM = 0x5F1A


def _fixed_cut(problem: Problem, params: PlannerParams) -> np.ndarray:
    """The fixed cut as a column per device; every device must fit a batch of 1 there."""
    col = fixed_cut_column(problem, params)
    short = np.flatnonzero(problem.ub[:, col] < 1)
    if len(short):
        i = int(short[0])
        if problem.privacy is not None and not problem.privacy.allowed[i, col]:
            raise ConfigError("optimizer.cut", problem.cuts[col],
                              "a cut at which every device meets its privacy.budget",
                              f"no noise in privacy.sigma_grid keeps device {i} within its budget at cut "
                              f"{problem.cuts[col]}; pick another fixed cut or raise privacy.budget")
        raise ConfigError("optimizer.cut", problem.cuts[col], "a cut at which every device fits a batch of 1",
                          f"device {i} cannot train at cut {problem.cuts[col]}; pick a shallower fixed cut")
    return np.full(problem.num_devices, col, dtype=np.int64)


def _warn_infeasible(sol: Solution) -> Solution:
    if not sol.feasible:
        log.warning("%s: the plan (b=%s, cuts=%s) cannot reach the target", sol.strategy,
                    list(sol.batch_sizes), list(sol.cuts))
    return sol


@PLANNERS.register("sfl", help="conventional SFL: uniform batch size b_uniform and one fixed cut")
def plan_sfl(problem: Problem, params: PlannerParams | None = None) -> Solution:
    """Uniform ``b_uniform`` (clipped to b_max and memory) at the fixed cut."""
    params = params or PlannerParams()
    started = time.perf_counter()
    j = _fixed_cut(problem, params)
    b = uniform_batch(problem, j, params.b_uniform)
    return _warn_infeasible(make_solution(problem, "sfl", b, j, started=started))


@PLANNERS.register("bs-only", help="HASFL's batch-size optimisation with the cut fixed")
def plan_bs_only(problem: Problem, params: PlannerParams | None = None) -> Solution:
    """Per-device batch sizes from HASFL's batch step, every device at the fixed cut."""
    params = params or PlannerParams()
    started = time.perf_counter()
    j = _fixed_cut(problem, params)
    b0 = uniform_batch(problem, j, params.b_uniform)
    b, val = batch_step(problem, b0, j)
    trace = [("start", problem.objective_idx(b0, j)), ("batch", val)]
    return _warn_infeasible(make_solution(problem, "bs-only", b, j, started=started, iterations=1, trace=trace))


@PLANNERS.register("cut-only", help="HASFL's cut optimisation with a uniform batch size (AdaptSFL-like)")
def plan_cut_only(problem: Problem, params: PlannerParams | None = None) -> Solution:
    """Per-device cuts from HASFL's cut step (repeated to a fixed point), uniform batch size."""
    params = params or PlannerParams()
    started = time.perf_counter()
    b, starts = cut_only_starts(problem, params)
    j, _, trace, steps = cut_descent(problem, b, starts, params.max_iters)
    return _warn_infeasible(make_solution(problem, "cut-only", b, j, started=started, iterations=steps,
                                          trace=trace))


@PLANNERS.register("random", help="seeded random batch sizes and cuts within memory")
def plan_random(problem: Problem, params: PlannerParams | None = None) -> Solution:
    """Random cuts among those that fit, then b_i uniform in [1, min(b_max, mcap_i)].

    Draws again (up to ``random_tries`` times) while the plan misses the bound; the last draw is
    returned, infinite, when none reaches it.
    """
    params = params or PlannerParams()
    started = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, _RANDOM_STREAM]))
    n = problem.num_devices
    rows = np.arange(n)
    fits = problem.ub >= 1
    b = j = None
    for tries in range(1, params.random_tries + 1):
        # Random key per (device, cut), -inf where the cut does not fit: argmax = a uniform fitting cut.
        keys = np.where(fits, rng.random(fits.shape), -np.inf)
        j = np.argmax(keys, axis=1).astype(np.int64)
        b = np.floor(rng.random(n) * problem.ub[rows, j]) + 1.0
        if math.isfinite(problem.objective_idx(b, j)):
            break
    sol = make_solution(problem, "random", b, j, started=started, iterations=tries)
    return _warn_infeasible(sol)
