"""The HASFL optimizer: per-device batch size and cut that minimise the predicted time to target.

Build a :class:`Problem` (numpy arrays only; the solver never touches torch), then run a planner
from :data:`PLANNERS` (``hasfl``, ``sfl``, ``bs-only``, ``cut-only``, ``random``, ``oracle``)::

    problem = Problem.from_setup(fleet, profile, bound, epsilon=bound.epsilon(0.05), b_max=64)
    solution = PLANNERS.get("hasfl")(problem, PlannerParams())
    plan = solution.to_plan()

See :mod:`.batch` (batch-size step, Dinkelbach on the continuous relaxation), :mod:`.cuts` (cut
step, best responses per deepest cut) and :mod:`.solver` (the block-coordinate descent).
:func:`constrain` (:mod:`.privacy`) turns a problem into its privacy-constrained version
(per-device leakage budgets, smashed-data noise as extra gradient variance), which every planner
solves unchanged.
"""

from __future__ import annotations

from typing import Any, Sequence

from .baselines import plan_bs_only, plan_cut_only, plan_random, plan_sfl
from .batch import BatchTerms, RelaxedBatch, batch_step, batch_terms, solve_relaxed
from .cuts import cut_step
from .oracle import plan_oracle, search_space_size
from .privacy import PrivacyTerms, constrain
from .problem import Problem, RoundTime
from .rounding import round_batch
from .solution import PLANNERS, PlannerFn, PlannerParams, Solution, make_solution
from .solver import solve_hasfl

__all__ = [
    "Problem",
    "RoundTime",
    "Solution",
    "PlannerParams",
    "PlannerFn",
    "PLANNERS",
    "plan",
    "make_solution",
    "solve_hasfl",
    "plan_sfl",
    "plan_bs_only",
    "plan_cut_only",
    "plan_random",
    "plan_oracle",
    "search_space_size",
    "BatchTerms",
    "RelaxedBatch",
    "batch_terms",
    "solve_relaxed",
    "round_batch",
    "batch_step",
    "cut_step",
    "constrain",
    "PrivacyTerms",
]


def plan(name: str, fleet: Any, profile: Any, bound: Any, *, epsilon: float,
         params: PlannerParams | None = None, cuts: Sequence[int] | None = None) -> Solution:
    """Build the problem of a setup and run planner ``name`` on it (b_max from ``params``)."""
    params = params or PlannerParams()
    planner = PLANNERS.get(name)  # unknown names fail before any work is done
    problem = Problem.from_setup(fleet, profile, bound, epsilon=epsilon, b_max=params.b_max, cuts=cuts)
    return planner(problem, params)
