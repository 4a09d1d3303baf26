"""Plans: the per-device batch size b_i and cut c_i that a run trains under.

A :class:`Plan` is the interface between whatever chooses (b, c) -- a config, a heuristic, or the
HASFL optimizer -- and the trainer and latency model that use it. Strategies that make plans are
registered in :data:`STRATEGIES`, so ``--strategy NAME`` reaches any of them the same way.

Every optimizer planner also has a privacy-constrained variant, ``<planner>-private``
(``hasfl-private`` ...): it plans under the ``privacy`` section's per-device leakage budgets
(:mod:`hasfl_sec.optimizer.privacy`), and its plan carries each device's smashed-data noise
(``noise_sigma``), which :meth:`hasfl_sec.runs.setup.Setup.defenses` turns into a noise defense.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..config import ExperimentConfig, PlanConfig
from ..errors import ConfigError
from ..fleet import Fleet
from ..models import ModelProfile, SplitModel
from ..optimizer import PLANNERS, PlannerParams, Problem
from ..registry import Registry
from ..sfl.plan import Plan, check_memory
from .bound import BoundConstants
from .privacy import check_private_config, constrained_problem, privacy_inputs

__all__ = ["PlanContext", "STRATEGIES", "PRIVATE_STRATEGIES", "make_plan", "build_problem", "planner_params"]

logger = logging.getLogger(__name__)


@dataclass
class PlanContext:
    """What a strategy may use to make a plan.

    ``bound()`` returns the convergence-bound constants and ``problem()`` the optimizer's problem;
    both are computed on first use only (the warm-up that estimates the bound trains for a few
    rounds), so strategies that do not need them cost nothing. For a privacy-constrained strategy
    ``problem()`` is the constrained problem and ``privacy()`` the leakage profile and noise cost
    it was built from (measured on ``dataset`` on first use, see :mod:`hasfl_sec.planning.privacy`).
    """

    config: ExperimentConfig
    fleet: Fleet
    model: SplitModel
    profile: ModelProfile
    bound_fn: Callable[[], "BoundConstants"]
    _bound: "BoundConstants | None" = None
    _problem: Any = None
    dataset: Any = None
    device: Any = "cpu"
    _privacy: Any = None

    def bound(self) -> "BoundConstants":
        """The bound constants (estimated or loaded once)."""
        if self._bound is None:
            self._bound = self.bound_fn()
        return self._bound

    def bound_needed(self) -> bool:
        """Whether the configured strategy plans from the bound."""
        return self.config.plan.strategy in BOUND_STRATEGIES

    def set_bound(self, bound: "BoundConstants") -> None:
        """Use ``bound`` instead of estimating (a resumed run reuses the constants it planned with)."""
        self._bound = bound
        self._problem = None

    def on_fleet(self, fleet: Fleet) -> "PlanContext":
        """This context on ``fleet`` (rates observed during training): same bound and privacy
        inputs, the optimizer problem rebuilt on first use."""
        return dataclasses.replace(self, fleet=fleet, _problem=None)

    def private(self) -> bool:
        """Whether the configured strategy plans under the ``privacy`` budgets."""
        return self.config.plan.strategy in PRIVATE_STRATEGIES

    def privacy(self) -> Any:
        """The :class:`~hasfl_sec.privacy.PrivacyInputs` (profiled once, on first use)."""
        if self._privacy is None:
            if self.dataset is None:
                raise ConfigError("plan.strategy", self.config.plan.strategy, "a strategy without privacy budgets",
                                  "this plan context has no data set to profile leakage on")
            self._privacy = privacy_inputs(self.config, self.model, self.dataset, self.device)
        return self._privacy

    def problem(self) -> Any:
        """The :class:`~hasfl_sec.optimizer.Problem` of this fleet, model, bound and target
        (privacy-constrained for a ``-private`` strategy)."""
        if self._problem is None:
            problem = build_problem(self.config, self.fleet, self.profile, self.bound())
            if self.private():
                problem = constrained_problem(self.config, problem, self.privacy())
            self._problem = problem
        return self._problem


StrategyFn = Callable[[PlanContext], Plan]
STRATEGIES: Registry[StrategyFn] = Registry("strategy", "plan.strategy")


def _per_device(field_name: str, value: Any, n: int) -> list[Any]:
    """Broadcast one value to n devices; a list must already have n entries."""
    if isinstance(value, list):
        if len(value) != n:
            raise ConfigError(field_name, value, f"a single value or a list of {n} values (one per device)")
        return list(value)
    return [value] * n


@STRATEGIES.register("fixed", help="batch sizes and cuts exactly as configured (uniform or per-device lists)")
def fixed_plan(ctx: PlanContext) -> Plan:
    """Conventional configuration: one value for all devices, or one per device."""
    cfg, n = ctx.config.plan, ctx.fleet.num_devices
    sizes = _per_device("plan.batch_size", cfg.batch_size, n)
    cuts = [ctx.model.resolve_cut(c, "plan.cut") for c in _per_device("plan.cut", cfg.cut, n)]
    return Plan(tuple(sizes), tuple(cuts), strategy="fixed")


@STRATEGIES.register("tiered", help="faster devices take deeper cuts from plan.candidate_cuts (a heuristic, not HASFL)")
def tiered_plan(ctx: PlanContext) -> Plan:
    """Rank devices by compute and split them into equal tiers, one per candidate cut.

    The slowest tier gets the shallowest candidate cut, the fastest the deepest. A simple
    heterogeneous baseline that needs no bound estimate.
    """
    cfg, n = ctx.config.plan, ctx.fleet.num_devices
    if cfg.cut != PlanConfig().cut:
        raise ConfigError("plan.cut", cfg.cut, "the default for strategy tiered",
                          "tiered draws cuts from plan.candidate_cuts; plan.cut needs strategy fixed, sfl or bs-only")
    candidates = sorted({ctx.model.resolve_cut(c, "plan.candidate_cuts") for c in cfg.candidate_cuts})
    order = np.argsort(ctx.fleet.flops, kind="stable")
    cuts = [0] * n
    for rank, device in enumerate(order):
        cuts[int(device)] = candidates[rank * len(candidates) // n]
    sizes = _per_device("plan.batch_size", cfg.batch_size, n)
    return Plan(tuple(sizes), tuple(cuts), strategy="tiered")


def planner_params(config: ExperimentConfig, model: SplitModel) -> Any:
    """The optimizer's :class:`~hasfl_sec.optimizer.PlannerParams` from a config.

    The baselines' uniform batch size and fixed cut are ``plan.batch_size`` and ``plan.cut``.
    """
    p, o = config.plan, config.optimizer
    if isinstance(p.batch_size, list) or isinstance(p.cut, list):
        raise ConfigError("plan.batch_size" if isinstance(p.batch_size, list) else "plan.cut",
                          p.batch_size if isinstance(p.batch_size, list) else p.cut,
                          f"a single value for strategy {p.strategy} (per-device lists need strategy fixed)")
    return PlannerParams(b_max=o.b_max, b_uniform=int(p.batch_size), cut=model.resolve_cut(p.cut, "plan.cut"),
                         seed=config.seed, max_iters=o.max_iters, tol=o.tol)


def build_problem(config: ExperimentConfig, fleet: Fleet, profile: ModelProfile, bound: "BoundConstants") -> Any:
    """The optimizer problem. Epsilon: the calibrated one for ``optimizer.target_accuracy``, else
    ``target_ratio`` x ||g(w^0)||^2, else (1 + floor_slack) x the bound's floor."""
    o = config.optimizer
    if o.target_accuracy is None and bound.epsilon_calibrated is not None:
        # the literal bound was asked for: drop the calibration a bound file may carry
        bound = dataclasses.replace(bound, variance_scale=1.0, drift_scale=1.0, epsilon_calibrated=None)
    if o.target_accuracy is not None:
        if bound.epsilon_calibrated is None:
            raise ConfigError("optimizer.bound_file", o.bound_file, "calibrated constants for target_accuracy",
                              "set optimizer.target_accuracy=null to use the literal bound")
        return Problem.from_setup(fleet, profile, bound, epsilon=bound.epsilon_calibrated, b_max=o.b_max)
    if o.target_ratio is not None:
        return Problem.from_setup(fleet, profile, bound, epsilon=bound.epsilon(o.target_ratio), b_max=o.b_max)
    # The floor (variance at the largest feasible batches + the smallest drift) is a property of
    # the problem; build it once with an epsilon every plan reaches, to read the floor off.
    loose = Problem.from_setup(fleet, profile, bound, epsilon=1e300, b_max=o.b_max)
    return dataclasses.replace(loose, epsilon=(1.0 + o.floor_slack) * loose.variance_drift_floor())


def _planner_strategy(name: str, label: str) -> StrategyFn:
    """The strategy ``label`` running optimizer planner ``name`` on the context's problem."""
    def make(ctx: PlanContext) -> Plan:

        if ctx.private():
            check_private_config(ctx.config)  # before the warm-up and the profiling spend any time
        solution = PLANNERS.get(name)(ctx.problem(), planner_params(ctx.config, ctx.model))
        logger.info("plan %s: predicted %.4g rounds x %.4g s = %.4g s to target (solved in %.3f s)", label,
                    solution.rounds, solution.round_latency_s, solution.time_to_target_s, solution.solve_time_s)
        if solution.noise_sigma is not None:
            logger.info("plan %s: noise per device %s (x RMS %s), predicted %s %s under budgets %s", label,
                        [round(s, 4) for s in solution.noise_sigma],
                        [round(s, 3) for s in solution.relative_sigma or ()], solution.leakage_metric,
                        [round(v, 3) for v in solution.leakage or ()], list(solution.budget or ()))
        return dataclasses.replace(solution.to_plan(), strategy=label)

    make.__name__ = f"{label.replace('-', '_')}_plan"
    return make


BOUND_STRATEGIES: set[str] = set()  # strategies that plan from the convergence bound
PRIVATE_STRATEGIES: set[str] = set()  # ... under the privacy section's leakage budgets

for _name, _help in (
    ("hasfl", "the HASFL optimizer: per-device batch size and cut minimising predicted time to target"),
    ("sfl", "conventional SFL: uniform plan.batch_size and one plan.cut for all devices"),
    ("bs-only", "HASFL's batch-size step only, cut fixed at plan.cut"),
    ("cut-only", "HASFL's cut step only, uniform plan.batch_size (AdaptSFL-like)"),
    ("random", "seeded random batch sizes and cuts within memory"),
    ("oracle", "exhaustive search over all plans (small fleets only)"),
):
    STRATEGIES.register(_name, help=_help)(_planner_strategy(_name, _name))
    BOUND_STRATEGIES.add(_name)
    _private = f"{_name}-private"
    STRATEGIES.register(_private, help=f"{_name} under per-device leakage budgets (privacy.*), noise per device")(
        _planner_strategy(_name, _private))
    BOUND_STRATEGIES.add(_private)
    PRIVATE_STRATEGIES.add(_private)


def make_plan(ctx: PlanContext) -> Plan:
    """Make the plan ``plan.strategy`` names and check it against the fleet's memory."""
    plan = STRATEGIES.get(ctx.config.plan.strategy)(ctx)
    if plan.num_devices != ctx.fleet.num_devices:
        raise ConfigError("plan", plan.num_devices, f"a plan for {ctx.fleet.num_devices} devices")
    check_memory(plan, ctx.fleet, ctx.profile)
    return plan


