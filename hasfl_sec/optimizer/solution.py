"""What every planner returns (:class:`Solution`), its parameters and the planner registry.

Planners are functions ``(Problem, PlannerParams | None) -> Solution`` registered in
:data:`PLANNERS` under the names a config's ``plan.strategy`` uses (``hasfl``, ``sfl``,
``bs-only``, ``cut-only``, ``random``, ``oracle``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import check
from ..registry import Registry
from ..sfl.plan import Plan
from .problem import Problem

__all__ = ["Solution", "PlannerParams", "PLANNERS", "PlannerFn", "make_solution"]


@dataclass(frozen=True)
class PlannerParams:
    """Settings of the planners (the ``optimizer`` section of a config).

    Attributes:
        b_max: largest batch size (used when a problem is built from a setup).
        b_uniform: the uniform batch size of ``sfl`` and ``cut-only`` (clipped to memory / b_max).
        cut: the fixed cut of ``sfl`` and ``bs-only``; None = the shallowest allowed cut.
        seed: seed of the ``random`` baseline.
        max_iters: outer block-coordinate iterations of HASFL (per start).
        tol: HASFL stops a start when one iteration improves F by less than this fraction.
        starts: number of uniform-cut starts of HASFL; None = one per allowed cut.
        random_tries: draws the ``random`` baseline makes before giving up on feasibility.
        oracle_limit: largest number of plans the ``oracle`` enumerates.
    """

    b_max: int = 64
    b_uniform: int = 16
    cut: int | None = None
    seed: int = 0
    max_iters: int = 50
    tol: float = 1e-4
    starts: int | None = None
    random_tries: int = 100
    oracle_limit: float = 5e7

    def __post_init__(self) -> None:
        def is_int(v: Any, low: int) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low

        check(is_int(self.b_max, 1), "optimizer.b_max", self.b_max, "an integer >= 1")
        check(is_int(self.b_uniform, 1), "optimizer.b_uniform", self.b_uniform, "an integer >= 1")
        check(self.cut is None or is_int(self.cut, 1), "optimizer.cut", self.cut, "null or a cut index >= 1")
        check(is_int(self.seed, 0), "optimizer.seed", self.seed, "an integer >= 0")
        check(is_int(self.max_iters, 1), "optimizer.max_iters", self.max_iters, "an integer >= 1")
        check(isinstance(self.tol, (int, float)) and 0 <= self.tol < 1, "optimizer.tol", self.tol, "a number in [0, 1)")
        check(self.starts is None or is_int(self.starts, 1), "optimizer.starts", self.starts, "null or an integer >= 1")
        check(is_int(self.random_tries, 1), "optimizer.random_tries", self.random_tries, "an integer >= 1")
        check(isinstance(self.oracle_limit, (int, float)) and self.oracle_limit >= 1, "optimizer.oracle_limit",
              self.oracle_limit, "a number >= 1")


@dataclass(frozen=True)
class Solution:
    """A plan and what the problem predicts for it.

    Attributes:
        strategy: the planner that made it.
        batch_sizes, cuts: b_i and cut c_i (cut values, not column indices) per device.
        rounds: predicted R(b, L_c) (inf when the plan cannot reach the target).
        split_round_s: T_S, seconds per round of split training.
        aggregation_s: T_A, seconds per client-side aggregation.
        interval: I.
        time_to_target_s: F(b, c) = R (T_S + T_A / I).
        iterations: outer iterations the planner ran (0 for one-shot baselines).
        trace: (step name, F after the step) in order, for the run that won.
        solve_time_s: wall-clock time of the planner.
        noise_sigma: per device, the std of the Gaussian noise on its smashed data (activation
            units), for a privacy-constrained problem; None otherwise.
        relative_sigma: the same noise as a fraction of the cut's smashed-data RMS.
        leakage: per device, the predicted leakage at its cut and noise (``leakage_metric``).
        leakage_metric: the metric the budgets were stated in.
        budget: per device, its leakage budget.
    """

    strategy: str
    batch_sizes: tuple[int, ...]
    cuts: tuple[int, ...]
    rounds: float
    split_round_s: float
    aggregation_s: float
    interval: int
    time_to_target_s: float
    iterations: int = 0
    trace: tuple[tuple[str, float], ...] = ()
    solve_time_s: float = 0.0
    noise_sigma: tuple[float, ...] | None = None
    relative_sigma: tuple[float, ...] | None = None
    leakage: tuple[float, ...] | None = None
    leakage_metric: str | None = None
    budget: tuple[float, ...] | None = None

    @property
    def round_latency_s(self) -> float:
        """T_S + T_A / I."""
        return self.split_round_s + self.aggregation_s / self.interval

    @property
    def feasible(self) -> bool:
        """Whether the plan reaches the target in finitely many rounds."""
        return math.isfinite(self.time_to_target_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (infinite figures stay floats; json writes them as Infinity)."""
        out = asdict(self)
        out["trace"] = [list(t) for t in self.trace]
        out["round_latency_s"] = self.round_latency_s
        return out

    def to_plan(self) -> Any:
        """The :class:`~hasfl_sec.sfl.plan.Plan` of this solution, with the predictions attached."""
        predicted = {"rounds": self.rounds, "split_round_s": self.split_round_s,
                     "aggregation_s": self.aggregation_s, "time_to_target_s": self.time_to_target_s}
        if self.noise_sigma is None:
            return Plan(self.batch_sizes, self.cuts, strategy=self.strategy, predicted=predicted)
        privacy = {"metric": self.leakage_metric, "budget": list(self.budget or ()),
                   "leakage": list(self.leakage or ()), "relative_sigma": list(self.relative_sigma or ())}
        return Plan(self.batch_sizes, self.cuts, strategy=self.strategy, predicted=predicted,
                    noise_sigma=self.noise_sigma, privacy=privacy)


def make_solution(problem: Problem, strategy: str, b: np.ndarray, j: np.ndarray, *, started: float,
                  iterations: int = 0, trace: Sequence[tuple[str, float]] = ()) -> Solution:
    """Evaluate integer batch sizes ``b`` and cut indices ``j`` into a :class:`Solution`."""
    b = np.asarray(b, dtype=np.float64)
    j = np.asarray(j, dtype=np.int64)
    rt = problem.round_time_idx(b, j)
    rounds = problem.rounds_idx(b, j)
    noise: dict[str, Any] = {}
    if problem.privacy is not None:
        sigma, rel, leak = problem.privacy.at(j)
        as_tuple = lambda x: tuple(float(v) for v in x)  # noqa: E731
        noise = dict(noise_sigma=as_tuple(sigma), relative_sigma=as_tuple(rel), leakage=as_tuple(leak),
                     leakage_metric=problem.privacy.metric, budget=as_tuple(problem.privacy.budget))
    return Solution(
        strategy=strategy,
        batch_sizes=tuple(int(x) for x in b),
        cuts=tuple(int(problem.cuts[x]) for x in j),
        rounds=rounds,
        split_round_s=rt.split_round_s,
        aggregation_s=rt.aggregation_s,
        interval=problem.interval,
        time_to_target_s=problem.objective_idx(b, j),
        iterations=int(iterations),
        trace=tuple((str(name), float(v)) for name, v in trace),
        solve_time_s=time.perf_counter() - started,
        **noise,
    )


PlannerFn = Callable[[Problem, "PlannerParams | None"], Solution]
PLANNERS: Registry[PlannerFn] = Registry("strategy", "plan.strategy")
