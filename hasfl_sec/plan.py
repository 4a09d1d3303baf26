"""Plans: the per-device batch size b_i and cut c_i that a run trains under.

A :class:`Plan` is the interface between whatever chooses (b, c) -- a config, a heuristic, or the
HASFL optimizer -- and the trainer and latency model that use it. Strategies that make plans are
registered in :data:`STRATEGIES`, so ``--strategy NAME`` reaches any of them the same way.

Every optimizer planner also has a privacy-constrained variant, ``<planner>-private``
(``hasfl-private`` ...): it plans under the ``privacy`` section's per-device leakage budgets
(:mod:`hasfl_sec.optimizer.privacy`), and its plan carries each device's smashed-data noise
(``noise_sigma``), which :meth:`hasfl_sec.api.Setup.defenses` turns into a noise defense.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .config import ExperimentConfig, PlanConfig
from .errors import ConfigError
from .fleet import Fleet
from .models import ModelProfile, SplitModel
from .registry import Registry

if TYPE_CHECKING:
    from .bound import BoundConstants

__all__ = ["Plan", "PlanContext", "STRATEGIES", "PRIVATE_STRATEGIES", "make_plan", "check_memory",
           "device_memory_bytes", "build_problem", "planner_params"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """Per-device batch sizes and cuts, plus what the strategy predicted (if anything).

    Attributes:
        batch_sizes: b_i >= 1 for each device.
        cuts: c_i for each device; device i runs blocks ``[0, c_i)`` of the model.
        strategy: the name of the strategy that made the plan.
        predicted: optional figures the strategy predicts (rounds, latency); free-form floats.
        noise_sigma: per device, the std of the Gaussian noise added to its smashed data
            (activation units), or None for no planned noise (privacy-constrained strategies).
        privacy: what the privacy-constrained strategy predicted: ``metric``, per-device
            ``budget``, ``leakage`` and ``relative_sigma`` (noise x the cut's smashed-data RMS).
    """

    batch_sizes: tuple[int, ...]
    cuts: tuple[int, ...]
    strategy: str = "fixed"
    predicted: dict[str, float] = field(default_factory=dict)
    noise_sigma: tuple[float, ...] | None = None
    privacy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.batch_sizes) != len(self.cuts):
            raise ConfigError("plan.cut", list(self.cuts), f"{len(self.batch_sizes)} values, one per device")
        for b in self.batch_sizes:
            if int(b) != b or b < 1:
                raise ConfigError("plan.batch_size", list(self.batch_sizes), "integers >= 1")
        if self.noise_sigma is not None:
            sig = tuple(float(s) for s in self.noise_sigma)
            if len(sig) != len(self.cuts) or not all(np.isfinite(s) and s >= 0 for s in sig):
                raise ConfigError("plan.noise_sigma", list(sig),
                                  f"{len(self.cuts)} finite numbers >= 0, one per device")
            object.__setattr__(self, "noise_sigma", sig)

    @property
    def noisy(self) -> bool:
        """Whether some device adds noise to its smashed data."""
        return self.noise_sigma is not None and any(s > 0 for s in self.noise_sigma)

    @property
    def num_devices(self) -> int:
        """N, the number of devices the plan covers."""
        return len(self.batch_sizes)

    @property
    def deepest_cut(self) -> int:
        """L_c = max_i c_i: layers below it are aggregated every I rounds only."""
        return max(self.cuts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the noise fields only when the plan has noise, so older readers and
        older plan.json files stay as they were)."""
        out = asdict(self)
        if self.noise_sigma is None:
            del out["noise_sigma"]
        if not self.privacy:
            del out["privacy"]
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Plan":
        """Inverse of :meth:`to_dict`; plan.json files written before the noise fields load unchanged."""
        noise = values.get("noise_sigma")
        return cls(
            batch_sizes=tuple(int(b) for b in values["batch_sizes"]),
            cuts=tuple(int(c) for c in values["cuts"]),
            strategy=str(values.get("strategy", "fixed")),
            predicted={k: float(v) for k, v in values.get("predicted", {}).items()},
            noise_sigma=None if noise is None else tuple(float(s) for s in noise),
            privacy=dict(values.get("privacy") or {}),
        )


@dataclass
class PlanContext:
    """What a strategy may use to make a plan.

    ``bound()`` returns the convergence-bound constants and ``problem()`` the optimizer's problem;
    both are computed on first use only (the warm-up that estimates the bound trains for a few
    rounds), so strategies that do not need them cost nothing. For a privacy-constrained strategy
    ``problem()`` is the constrained problem and ``privacy()`` the leakage profile and noise cost
    it was built from (measured on ``dataset`` on first use, see :mod:`hasfl_sec.privacy.measure`).
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

    def private(self) -> bool:
        """Whether the configured strategy plans under the ``privacy`` budgets."""
        return self.config.plan.strategy in PRIVATE_STRATEGIES

    def privacy(self) -> Any:
        """The :class:`~hasfl_sec.privacy.PrivacyInputs` (profiled once, on first use)."""
        if self._privacy is None:
            from .privacy import privacy_inputs

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
                from .privacy import constrained_problem

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
    from .optimizer import PlannerParams

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
    from .optimizer import Problem

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
        from .optimizer import PLANNERS

        if ctx.private():
            from .privacy import check_private_config

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


def device_memory_bytes(batch_size: int, cut: int, profile: ModelProfile, optimizer_copies: int = 2) -> float:
    """Training memory of the client part: parameters (+ gradient and optimizer copies) + activations."""
    cp = profile.cut(cut)
    return cp.client_param_bytes * (1 + optimizer_copies) + batch_size * (cp.client_activation_bytes + cp.smashed_bytes)


def check_memory(plan: Plan, fleet: Fleet, profile: ModelProfile) -> None:
    """Refuse a plan whose client part does not fit a device's memory."""
    for i, (b, c) in enumerate(zip(plan.batch_sizes, plan.cuts)):
        need = device_memory_bytes(b, c, profile)
        have = fleet.devices[i].memory_bytes
        if need > have:
            fixed = device_memory_bytes(0, c, profile)  # parameters, gradients, optimizer copies
            fit = int((have - fixed) // (device_memory_bytes(1, c, profile) - fixed))
            raise ConfigError(
                f"plan.batch_size[{i}]",
                b,
                f"at most {max(fit, 0)} at cut {c} ({have / 2**30:.2f} GiB on device {i})",
                "the client part does not fit the device's memory",
            )

