"""The simulated clock: seconds per round from the latency model, at the rates the channel realises.

Training is real computation; its time axis is the latency model's (docs/design.md section 5)."""

from __future__ import annotations

from ..fleet.channel import ChannelModel
from ..models import ModelProfile
from .latency import CutCosts, RoundLatency, round_latency
from .plan import Plan

__all__ = ["SimClock", "plan_costs"]


def plan_costs(profile: ModelProfile, plan: Plan) -> list[CutCosts]:
    """Per-device latency inputs for ``plan``: the profile of each device's cut, in bits."""
    out = []
    for c in plan.cuts:
        p = profile.cut(c)
        out.append(
            CutCosts(
                client_fwd_flops=p.client_fwd_flops,
                client_bwd_flops=p.client_bwd_flops,
                server_fwd_flops=p.server_fwd_flops,
                server_bwd_flops=p.server_bwd_flops,
                smashed_bits=8.0 * p.smashed_bytes,
                client_model_bits=8.0 * p.client_param_bytes,
            )
        )
    return out


class SimClock:
    """Simulated seconds of round t: the latency model (docs/hasfl.md 2.2) at the rates the channel
    realises in round t, for the plan in effect; T_A is added when t % I == 0."""

    def __init__(self, profile: ModelProfile, channel: ChannelModel, interval: int) -> None:
        self.profile = profile
        self.channel = channel
        self.interval = interval

    def latency(self, t: int, plan: Plan) -> RoundLatency:
        """The latency of round ``t`` under ``plan``."""
        return round_latency(self.channel.fleet_at(t), plan.batch_sizes, plan_costs(self.profile, plan))

    def __call__(self, t: int, plan: Plan) -> float:
        lat = self.latency(t, plan)
        return lat.split_round + (lat.aggregation if t % self.interval == 0 else 0.0)
