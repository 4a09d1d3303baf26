"""What one round of split training produces (:class:`RoundRecord`, a row of ``rounds.csv``) and the
clock that times it (:data:`Clock`, simulated seconds of round t under the plan in effect)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .plan import Plan

__all__ = ["RoundRecord", "Clock"]


Clock = Callable[[int, Plan], float]  # simulated seconds of round t under the plan in effect


@dataclass
class RoundRecord:
    """What one round produced. ``test_*`` are NaN on rounds without evaluation."""

    round: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    sim_time_s: float
    wall_time_s: float
    aggregated: bool
    device_losses: list[float]

    def row(self) -> dict[str, Any]:
        """The ``rounds.csv`` row (device losses go to ``metrics.csv``)."""
        return {k: v for k, v in vars(self).items() if k != "device_losses"}
