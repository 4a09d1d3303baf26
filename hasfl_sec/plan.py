"""Plans: the per-device batch size b_i and cut c_i that a run trains under.

A :class:`Plan` is the interface between whatever chooses (b, c) -- a config, a heuristic, or the
HASFL optimizer -- and the trainer and latency model that use it. Strategies that make plans are
registered in :data:`STRATEGIES`, so ``--strategy NAME`` reaches any of them the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from .config import PlanConfig
from .errors import ConfigError
from .fleet import Fleet
from .models import ModelProfile, SplitModel
from .registry import Registry

__all__ = ["Plan", "STRATEGIES", "make_plan", "check_memory", "device_memory_bytes"]


@dataclass(frozen=True)
class Plan:
    """Per-device batch sizes and cuts, plus what the strategy predicted (if anything).

    Attributes:
        batch_sizes: b_i >= 1 for each device.
        cuts: c_i for each device; device i runs blocks ``[0, c_i)`` of the model.
        strategy: the name of the strategy that made the plan.
        predicted: optional figures the strategy predicts (rounds, latency); free-form floats.
    """

    batch_sizes: tuple[int, ...]
    cuts: tuple[int, ...]
    strategy: str = "fixed"
    predicted: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.batch_sizes) != len(self.cuts):
            raise ConfigError("plan.cut", list(self.cuts), f"{len(self.batch_sizes)} values, one per device")
        for b in self.batch_sizes:
            if int(b) != b or b < 1:
                raise ConfigError("plan.batch_size", list(self.batch_sizes), "integers >= 1")

    @property
    def num_devices(self) -> int:
        """N, the number of devices the plan covers."""
        return len(self.batch_sizes)

    @property
    def deepest_cut(self) -> int:
        """L_c = max_i c_i: layers below it are aggregated every I rounds only."""
        return max(self.cuts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)

    def to_json(self) -> str:
        """The plan as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Plan":
        """Inverse of :meth:`to_dict`."""
        return cls(
            batch_sizes=tuple(int(b) for b in values["batch_sizes"]),
            cuts=tuple(int(c) for c in values["cuts"]),
            strategy=str(values.get("strategy", "fixed")),
            predicted={k: float(v) for k, v in values.get("predicted", {}).items()},
        )


StrategyFn = Callable[[PlanConfig, Fleet, SplitModel, ModelProfile], Plan]
STRATEGIES: Registry[StrategyFn] = Registry("strategy", "plan.strategy")


def _per_device(field_name: str, value: Any, n: int) -> list[Any]:
    """Broadcast one value to n devices; a list must already have n entries."""
    if isinstance(value, list):
        if len(value) != n:
            raise ConfigError(field_name, value, f"a single value or a list of {n} values (one per device)")
        return list(value)
    return [value] * n


@STRATEGIES.register("fixed", help="batch sizes and cuts exactly as configured (uniform or per-device lists)")
def fixed_plan(cfg: PlanConfig, fleet: Fleet, model: SplitModel, profile: ModelProfile) -> Plan:
    """Conventional configuration: one value for all devices, or one per device."""
    n = fleet.num_devices
    sizes = _per_device("plan.batch_size", cfg.batch_size, n)
    cuts = [model.resolve_cut(c, "plan.cut") for c in _per_device("plan.cut", cfg.cut, n)]
    return Plan(tuple(sizes), tuple(cuts), strategy="fixed")


@STRATEGIES.register("tiered", help="faster devices take deeper cuts from plan.candidate_cuts (a heuristic, not HASFL)")
def tiered_plan(cfg: PlanConfig, fleet: Fleet, model: SplitModel, profile: ModelProfile) -> Plan:
    """Rank devices by compute and split them into equal tiers, one per candidate cut.

    The slowest tier gets the shallowest candidate cut, the fastest the deepest. This is a simple,
    documented heterogeneous baseline for the trainer; the HASFL optimizer replaces it.
    """
    n = fleet.num_devices
    candidates = sorted({model.resolve_cut(c, "plan.candidate_cuts") for c in cfg.candidate_cuts})
    order = np.argsort(fleet.flops, kind="stable")
    cuts = [0] * n
    for rank, device in enumerate(order):
        cuts[int(device)] = candidates[rank * len(candidates) // n]
    sizes = _per_device("plan.batch_size", cfg.batch_size, n)
    return Plan(tuple(sizes), tuple(cuts), strategy="tiered")


def make_plan(cfg: PlanConfig, fleet: Fleet, model: SplitModel, profile: ModelProfile) -> Plan:
    """Make the plan ``cfg.strategy`` names and check it against the fleet's memory."""
    plan = STRATEGIES.get(cfg.strategy)(cfg, fleet, model, profile)
    if plan.num_devices != fleet.num_devices:
        raise ConfigError("plan", plan.num_devices, f"a plan for {fleet.num_devices} devices")
    check_memory(plan, fleet, profile)
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
            per_sample = need / b
            fit = int((have - profile.cut(c).client_param_bytes * 3) // per_sample)
            raise ConfigError(
                f"plan.batch_size[{i}]",
                b,
                f"at most {max(fit, 0)} at cut {c} ({have / 2**30:.2f} GiB on device {i})",
                "the client part does not fit the device's memory",
            )

