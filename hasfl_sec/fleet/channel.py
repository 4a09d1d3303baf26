"""Channel models: the link rates each round of training actually sees (docs/hasfl.md section 7).

HASFL plans from fixed rates r_i^U, r_i^D. Under fading the realised rates change from round to
round, so the simulated clock uses the realised rates, and a plan may be re-solved on the current
estimates (``channel.reoptimize_every``; :meth:`hasfl_sec.runs.setup.Setup.replan`).

* ``static`` -- every round sees the fleet's rates.
* ``rayleigh`` -- Rayleigh block fading around each device's mean gain: every ``coherence_rounds``
  rounds a power gain |h|^2 ~ Exp(1) is drawn per device (one draw for both directions, i.e. a
  reciprocal channel -- our choice), and the rate is W log2(1 + SNR_i |h|^2), where SNR_i is the
  mean-gain SNR implied by the fleet's rate, 2^(r_i / W) - 1, and W the link bandwidth
  (FleetSpec defaults: 100 MHz up, 200 MHz down). Draws come from a generator keyed by the seed and
  the block index, so a resumed run sees the same channel as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..registry import Registry
from ..seeding import numpy_rng
from .devices import Fleet
from .generate import FleetSpec

__all__ = ["CHANNELS", "ChannelModel", "StaticChannel", "RayleighChannel", "make_channel"]


class ChannelModel:
    """Base class: ``fleet_at(t)`` is the fleet with the rates realised in round t (1-based)."""

    name = "static"

    def __init__(self, fleet: Fleet, *, seed: int = 0, coherence_rounds: int = 1) -> None:
        self.fleet = fleet

    def fleet_at(self, t: int) -> Fleet:
        """The fleet as round ``t`` sees it."""
        return self.fleet


CHANNELS: Registry[Callable[..., ChannelModel]] = Registry("channel model", "channel.model")


@CHANNELS.register("static", help="fixed rates: every round sees the fleet's mean rates")
class StaticChannel(ChannelModel):
    """Fixed rates."""


@CHANNELS.register("rayleigh", help="Rayleigh block fading around each device's mean gain, redrawn every block")
class RayleighChannel(ChannelModel):
    """Rayleigh block fading; see the module docstring for the model."""

    name = "rayleigh"

    def __init__(self, fleet: Fleet, *, seed: int, coherence_rounds: int = 1,
                 uplink_bandwidth_hz: float = FleetSpec.uplink_bandwidth_hz,
                 downlink_bandwidth_hz: float = FleetSpec.downlink_bandwidth_hz) -> None:
        super().__init__(fleet, seed=seed, coherence_rounds=coherence_rounds)
        self.seed = seed
        self.coherence = max(1, int(coherence_rounds))
        self.w_up, self.w_down = float(uplink_bandwidth_hz), float(downlink_bandwidth_hz)
        self.snr_up = np.exp2(fleet.uplink_bps / self.w_up) - 1.0
        self.snr_down = np.exp2(fleet.downlink_bps / self.w_down) - 1.0
        self._cache: dict[int, Fleet] = {}

    def fleet_at(self, t: int) -> Fleet:
        block = (t - 1) // self.coherence
        if block not in self._cache:
            if len(self._cache) > 64:  # rounds are visited in order; keep memory flat
                self._cache.clear()
            h2 = numpy_rng(self.seed, "fading", block).exponential(1.0, size=self.fleet.num_devices)
            up = self.w_up * np.log2(1.0 + self.snr_up * h2)
            down = self.w_down * np.log2(1.0 + self.snr_down * h2)
            # A deep fade can push a rate to ~0; floor it at 1 bit/s so latencies stay finite.
            devices = tuple(dataclasses.replace(d, uplink_bps=float(max(u, 1.0)), downlink_bps=float(max(v, 1.0)))
                            for d, u, v in zip(self.fleet.devices, up, down))
            self._cache[block] = dataclasses.replace(self.fleet, devices=devices)
        return self._cache[block]


def make_channel(name: str, fleet: Fleet, *, seed: int, coherence_rounds: int = 1) -> ChannelModel:
    """The channel model ``name`` over ``fleet``."""
    return CHANNELS.get(name)(fleet, seed=seed, coherence_rounds=coherence_rounds)
