"""The Python API behind ``hasfl-sec optimize``: a plan and what the bound predicts for it.

``optimize(config)`` prepares the run (data, model profile, fleet), estimates or loads the bound
constants, makes the plan of ``plan.strategy`` (``hasfl`` by default from the CLI) and evaluates it
with the latency model and Corollary 1: per-device stage latencies, predicted rounds, round latency
and time to target. Any strategy can be evaluated the same way, so plans compare side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..config import ExperimentConfig
from ..planning.bound import BoundConstants
from .setup import Setup, prepare

__all__ = ["OptimizeResult", "optimize"]


@dataclass
class OptimizeResult:
    """A plan with its predictions. ``devices`` is one row per device."""

    setup: Setup
    bound: BoundConstants
    epsilon: float
    rounds: float
    split_round_s: float
    aggregation_s: float
    round_latency_s: float
    time_to_target_s: float

    @property
    def devices(self) -> pd.DataFrame:
        """Per device: compute, links, b_i, c_i and the stage latencies of one round (seconds)."""
        s = self.setup
        st = s.latency.stages
        return pd.DataFrame({
            "device": range(s.fleet.num_devices),
            "gflops": s.fleet.flops / 1e9,
            "uplink_mbps": s.fleet.uplink_bps / 1e6,
            "batch_size": s.plan.batch_sizes,
            "cut": s.plan.cuts,
            "cut_after": [s.model.block_names[c - 1] for c in s.plan.cuts],
            "client_fwd_s": st.client_fwd, "uplink_s": st.uplink, "server_s": st.server,
            "downlink_s": st.downlink, "client_bwd_s": st.client_bwd,
        })

    def to_json_dict(self) -> dict[str, Any]:
        """The ``--format json`` object."""
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "strategy": self.setup.plan.strategy,
            "devices": [{"device": int(i), "batch_size": int(b), "cut": int(c)}
                        for i, (b, c) in enumerate(zip(self.setup.plan.batch_sizes, self.setup.plan.cuts))],
            "round_latency_s": num(self.round_latency_s),
            "split_round_s": num(self.split_round_s),
            "aggregation_s": num(self.aggregation_s),
            "rounds": num(self.rounds),
            "time_to_target_s": num(self.time_to_target_s),
            "epsilon": self.epsilon,
        }


def optimize(config: ExperimentConfig) -> OptimizeResult:
    """Make ``config``'s plan and predict its rounds, round latency and time to target."""
    setup = prepare(config)
    assert setup.context is not None
    problem = setup.context.problem()
    b, c = setup.plan.batch_sizes, setup.plan.cuts
    rt = problem.round_latency(b, c)
    return OptimizeResult(
        setup=setup, bound=setup.context.bound(), epsilon=problem.epsilon, rounds=problem.rounds(b, c),
        split_round_s=rt.split_round_s, aggregation_s=rt.aggregation_s, round_latency_s=rt.per_round_s,
        time_to_target_s=problem.time_to_target(b, c),
    )
