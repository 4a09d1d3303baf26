"""Plans: the per-device batch size b_i and cut c_i that a run trains under (the value).

A :class:`Plan` is the interface between whatever chooses (b, c) -- a config, a heuristic, or the
HASFL optimizer (:mod:`hasfl_sec.planning`) -- and the trainer and latency model that use it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:  # types only: the numpy-only optimizer imports Plan and must not load torch
    from ..fleet import Fleet
    from ..models import ModelProfile

__all__ = ["Plan", "device_memory_bytes", "check_memory"]


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
