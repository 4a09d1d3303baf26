"""The HASFL planner: block-coordinate descent over batch sizes and cuts (docs/hasfl.md 4.2).

From each start (b0, c0) the solver alternates the batch-size step (:mod:`.batch`, exact
continuous optimum + integer rounding) and the cut step (:mod:`.cuts`, enumeration of the deepest
cut + best-response descent). Both steps keep the current block when they cannot improve it, so F
never increases; a start stops when an iteration improves F by less than ``tol`` (relative) or
after ``max_iters`` iterations. Block-coordinate descent finds a fixed point, not necessarily the
optimum, so the solver runs several cheap starts and keeps the best:

* batch step first from every uniform cut (each device at that cut, or the nearest cut its memory
  allows), b0 = the conventional uniform batch (``b_uniform`` clipped to memory);
* batch step first from each device's own fastest cut at b = 1;
* batch step first from, for every deepest cut L, each device at its largest batch over the cuts
  <= L (feasible whenever any plan with that L is; uniform deep starts often are not, and no
  single-device move leaves an infeasible plan);
* cut step first from every device at its largest possible batch (the cut step, clipping batches
  to memory, then chooses per deepest cut);
* the ``cut-only`` baseline's plan (uniform batch, cuts by repeated cut steps).

These starts contain the ``sfl``, ``bs-only`` and ``cut-only`` baselines' own computations, so
HASFL is never worse than them. A run that reaches a state another run already visited (same b,
c and next step) is stopped: the rest of its path is known. The winner is finally polished with a
larger neighbourhood (:func:`.joint.cut_batch_step`: one device changes cut and every batch size
is re-optimised), descending again after each improvement.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .batch import batch_step
from .cuts import cut_descent, cut_step, own_best_cuts, uniform_feasible
from .joint import cut_batch_step, joint_step
from .problem import Problem
from .solution import PLANNERS, PlannerParams, Solution, make_solution

__all__ = ["solve_hasfl", "uniform_batch", "fixed_cut_column", "cut_only_starts", "start_columns",
           "max_batch_starts"]

log = logging.getLogger(__name__)


def fixed_cut_column(problem: Problem, params: PlannerParams) -> int:
    """Column of the configured fixed cut (``params.cut``; default the shallowest allowed cut)."""
    if params.cut is None:
        return 0
    if params.cut not in problem.cuts:
        raise ConfigError("optimizer.cut", params.cut, problem.cuts, "the fixed cut must be an allowed cut")
    return problem.cuts.index(params.cut)


def uniform_batch(problem: Problem, j: np.ndarray, b_uniform: int) -> np.ndarray:
    """One batch size for every device: ``b_uniform`` clipped to b_max and every device's memory at ``j``."""
    cap = int(np.min(problem.ub[np.arange(problem.num_devices), j]))
    return np.full(problem.num_devices, float(max(1, min(b_uniform, cap))))


def cut_only_starts(problem: Problem, params: PlannerParams) -> tuple[np.ndarray, list[np.ndarray]]:
    """The uniform batch of ``cut-only`` and its starting cuts (deepest uniform, own fastest)."""
    # The largest uniform batch every device can hold at *some* cut, so no device is shut out.
    cap = int(np.min(np.max(problem.ub, axis=1)))
    b = np.full(problem.num_devices, float(max(1, min(params.b_uniform, cap))))
    return b, [uniform_feasible(problem, problem.num_cuts - 1, b), own_best_cuts(problem, b)]


def start_columns(problem: Problem, params: PlannerParams) -> list[int]:
    """Uniform-cut start columns: all, or ``params.starts`` evenly spaced plus the fixed cut."""
    c = problem.num_cuts
    if params.starts is None or params.starts >= c:
        return list(range(c))
    cols = {int(round(x)) for x in np.linspace(0, c - 1, params.starts)}
    return sorted(cols | {fixed_cut_column(problem, params)})


@dataclass
class _Run:
    """One block-coordinate descent run."""

    label: str
    b: np.ndarray
    j: np.ndarray
    value: float
    iterations: int = 0
    trace: list[tuple[str, float]] = field(default_factory=list)


def _batch_then_keep_cuts(problem: Problem, b: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    nb, val = batch_step(problem, b, j)
    return nb, j, val


# The steps of the descent, by name: (problem, b, j) -> (b, j, F).
_STEPS = {"batch": _batch_then_keep_cuts, "cut": cut_step, "joint": joint_step}


def max_batch_starts(problem: Problem) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """For every deepest cut L: each device at its largest batch among the cuts <= L (the
    deepest such cut on ties, so L tends to be used); with variance multipliers, at the cut <= L
    with the smallest m / b_max-cap term. Returns (L column, b, j) for every L whose
    plan meets the target.

    Deep uniform starts are often infeasible when memory is tight (shallow devices cannot hold
    big batches there), and no single-device move leaves an infeasible plan; these starts are
    feasible whenever any plan with that deepest cut is, and the best of them is the plan
    ``Problem`` checks the target with.
    """
    rows = np.arange(problem.num_devices)
    # Each device's smallest variance term m / ub (with m = 1: its largest cap, the same ordering).
    with np.errstate(divide="ignore", invalid="ignore"):
        key = np.where(problem.ub > 0, problem.variance_mult / problem.ub, np.inf)
    out = []
    for ell in range(problem.num_cuts):
        # argmin over the reversed columns = the deepest column with the smallest term.
        j = (ell - np.argmin(key[:, ell::-1], axis=1)).astype(np.int64)
        b = problem.ub[rows, j].astype(float)
        if math.isfinite(problem.objective_idx(b, j)):
            out.append((ell, b, j))
    return out


def _descend(problem: Problem, run: _Run, order: tuple[str, ...], params: PlannerParams,
             seen: set[tuple[bytes, bytes, str]]) -> _Run:
    """Alternate the two steps of ``order`` from ``run``'s state until converged."""
    run.trace.append((f"{run.label}/start", run.value))
    for it in range(1, params.max_iters + 1):
        prev = run.value
        for name in order:
            run.b, run.j, run.value = _STEPS[name](problem, run.b, run.j)
            run.trace.append((f"{run.label}/{name}", run.value))
        run.iterations = it
        key = (run.b.tobytes(), run.j.tobytes(), order[0])
        if key in seen:
            break  # another run passed through this state: its continuation is already known
        seen.add(key)
        if math.isfinite(prev) and not prev - run.value > params.tol * prev:
            break
        if not math.isfinite(run.value) and not math.isfinite(prev) and it > 1:
            break  # neither step found a feasible plan twice in a row
    return run


@PLANNERS.register("hasfl", help="HASFL: per-device batch size and cut by block-coordinate descent (multi-start)")
def solve_hasfl(problem: Problem, params: PlannerParams | None = None) -> Solution:
    """Minimise the predicted time to target over per-device batch sizes and cuts."""
    params = params or PlannerParams()
    started = time.perf_counter()
    n = problem.num_devices
    runs: list[tuple[_Run, tuple[str, ...]]] = []
    for col in start_columns(problem, params):
        j0 = uniform_feasible(problem, col)
        b0 = uniform_batch(problem, j0, params.b_uniform)
        runs.append((_Run(f"uniform-cut{problem.cuts[col]}", b0, j0, problem.objective_idx(b0, j0)),
                     ("batch", "cut", "joint")))
    j0 = own_best_cuts(problem)
    b0 = uniform_batch(problem, j0, params.b_uniform)
    runs.append((_Run("own-best", b0, j0, problem.objective_idx(b0, j0)), ("batch", "cut", "joint")))
    for ell, b0, j0 in max_batch_starts(problem):
        runs.append((_Run(f"max-batch{problem.cuts[ell]}", b0, j0, problem.objective_idx(b0, j0)),
                     ("batch", "cut", "joint")))
    # Cut step first, every device at its largest possible batch: the cut step (with batch
    # clipping) then trades memory against latency per deepest cut from uniform projections.
    b0 = problem.ub.max(axis=1).astype(float)
    j0 = uniform_feasible(problem, problem.num_cuts - 1)
    runs.append((_Run("caps-cut-first", b0, j0, problem.objective_idx(b0, j0)), ("cut", "batch", "joint")))
    # The cut-only baseline's result, as a start, so HASFL is never worse than it.
    b_u, cut_starts = cut_only_starts(problem, params)
    j0, val, _, _ = cut_descent(problem, b_u, cut_starts, params.max_iters)
    runs.append((_Run("cut-only", b_u, j0, val), ("batch", "cut", "joint")))

    seen: set[tuple[bytes, bytes, str]] = set()
    best: _Run | None = None
    total_iters = 0
    for run, order in runs:
        run = _descend(problem, run, order, params, seen)
        total_iters += run.iterations
        log.debug("hasfl start %s: F = %.6g after %d iterations", run.label, run.value, run.iterations)
        if best is None or run.value < best.value:
            best = run
    assert best is not None  # there is always at least one start
    # Polish the winner with the larger neighbourhood (one device's cut changes, every batch
    # size re-optimised), descending again from each improvement.
    for polish in range(1, params.max_iters + 1):
        nb, nj, val = cut_batch_step(problem, best.b, best.j)
        if not val < best.value * (1 - 1e-12):
            break
        run = _Run(f"polish{polish}", nb, nj, val, trace=best.trace + [(f"polish{polish}/cut+batch", val)])
        best = _descend(problem, run, ("batch", "cut", "joint"), params, seen)
        total_iters += best.iterations
    if not math.isfinite(best.value):
        # Unreachable in exact arithmetic: a max-batch start is feasible whenever Problem's
        # target check passes. Kept so a rounding corner case still fails with a clear message.
        raise ConfigError("optimizer.target", problem.epsilon, "a target some plan can reach",
                          "no start of the solver found a feasible plan; use a looser target")
    sol = make_solution(problem, "hasfl", best.b, best.j, started=started, iterations=best.iterations,
                        trace=best.trace)
    log.info("hasfl: N=%d, C=%d, F=%.6g s (R=%.4g, round %.4g s) from start %s; %d runs, %d iterations, %.3f s",
             n, problem.num_cuts, sol.time_to_target_s, sol.rounds, sol.round_latency_s, best.label,
             len(runs), total_iters, sol.solve_time_s)
    return sol
