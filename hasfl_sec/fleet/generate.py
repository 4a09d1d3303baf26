"""Generated fleets: a :class:`FleetSpec` of distributions, heterogeneity levels and named presets.

:func:`generate_fleet` draws a :class:`~hasfl_sec.fleet.Fleet` from a :class:`FleetSpec` at a
heterogeneity level (the :data:`HETEROGENEITY` registry); :data:`FLEETS` holds named presets.

Generated fleets follow the simulation settings of the HASFL group's later paper (Wei & Chen,
docs/hasfl.md section 5). Our own choices, not from that source, are labelled "(our choice)":

* server transmit power 40 dBm (docs/hasfl.md gives none) (our choice);
* device memory uniform in [4, 8] GiB, Jetson-Orin-Nano-class devices (our choice);
* every device gets the whole uplink / downlink band, i.e. a TDMA-like per-device rate r_i as in
  AdaptSFL, not a band shared by FDMA (our choice, consistent with AdaptSFL's per-device r_i);
* the channel gain is the device's *average* gain; no small-scale (Rayleigh) fading is drawn, so
  a fleet is static (our choice);
* heterogeneity levels shrink every sampled range toward its geometric midpoint in log space by a
  factor: none 0, low 0.25, medium 0.5, high 1 (the full ranges) (our choice). Transmit power is
  shrunk in watts (= linearly in dBm) and, like the paper's ranges, sampled uniformly in dBm.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import check
from ..registry import Registry
from ..seeding import numpy_rng
from .devices import GIB, Device, Fleet, dbm_number, dbm_to_watts, positive_number

__all__ = ["FleetSpec", "HETEROGENEITY", "DEFAULT_HETEROGENEITY", "FLEETS", "generate_fleet"]

log = logging.getLogger(__name__)

HETEROGENEITY: Registry[float] = Registry("heterogeneity level", "fleet.heterogeneity")
HETEROGENEITY.register("none", help="identical devices at the geometric midpoint of every range")(0.0)
HETEROGENEITY.register("low", help="ranges shrunk to 1/4 of their log-width around the midpoint")(0.25)
HETEROGENEITY.register("medium", help="ranges shrunk to 1/2 of their log-width around the midpoint")(0.5)
HETEROGENEITY.register("high", help="the full ranges of the HASFL group's simulations (default)")(1.0)
DEFAULT_HETEROGENEITY = "high"

Range = tuple[float, float]


@dataclass(frozen=True)
class FleetSpec:
    """Distributions a generated fleet is drawn from (docs/hasfl.md section 5, Wei & Chen settings).

    Ranges are (low, high), sampled uniformly. Device FLOP/s = FLOPs/cycle x clock.
    ``server_power_dbm`` and ``device_memory_bytes`` are our choices (see the module docstring).
    """

    num_devices: int = 20
    device_flops_per_cycle: Range = (0.2e4, 3e4)
    device_clock_hz: Range = (50e6, 625e6)
    server_flops_per_cycle: float = 3e4
    server_clock_hz: float = 3.135e9
    uplink_bandwidth_hz: float = 100e6
    downlink_bandwidth_hz: float = 200e6
    device_power_dbm: Range = (20.0, 33.0)
    server_power_dbm: float = 40.0
    channel_gain: Range = (0.1e-6, 1e-6)
    noise_psd: float = 3.98e-21
    device_memory_bytes: Range = field(default=(4 * GIB, 8 * GIB))

    def __post_init__(self) -> None:
        check(isinstance(self.num_devices, int) and not isinstance(self.num_devices, bool)
              and self.num_devices >= 1, "fleet.num_devices", self.num_devices, "an integer >= 1")
        for name in ("device_flops_per_cycle", "device_clock_hz", "channel_gain", "device_memory_bytes"):
            lo, hi = getattr(self, name)
            check(math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi, f"fleet.spec.{name}",
                  (lo, hi), "a range (low, high) with 0 < low <= high")
        lo, hi = self.device_power_dbm
        check(math.isfinite(lo) and math.isfinite(hi) and lo <= hi, "fleet.spec.device_power_dbm", (lo, hi),
              "a range (low, high) in dBm with low <= high")
        for name in ("server_flops_per_cycle", "server_clock_hz", "uplink_bandwidth_hz",
                     "downlink_bandwidth_hz", "noise_psd"):
            positive_number(getattr(self, name), f"fleet.spec.{name}")
        dbm_number(self.server_power_dbm, "fleet.spec.server_power_dbm")

    @property
    def server_flops(self) -> float:
        """f_s = server FLOPs/cycle x server clock."""
        return self.server_flops_per_cycle * self.server_clock_hz


def _shrink(rng_: Range, factor: float) -> Range:
    """Shrink (lo, hi) toward its geometric midpoint in log space by ``factor`` (0 = the midpoint)."""
    lo, hi = float(rng_[0]), float(rng_[1])
    mid = math.sqrt(lo * hi)
    return mid * (lo / mid) ** factor, mid * (hi / mid) ** factor


def _shrink_db(rng_: Range, factor: float) -> Range:
    """Same as :func:`_shrink` for a range in dB: log space of watts is linear in dBm."""
    lo, hi = float(rng_[0]), float(rng_[1])
    mid = (lo + hi) / 2.0
    return mid + factor * (lo - mid), mid + factor * (hi - mid)


def generate_fleet(
    spec: FleetSpec | None = None,
    *,
    num_devices: int | None = None,
    heterogeneity: str = DEFAULT_HETEROGENEITY,
    seed: int = 0,
) -> Fleet:
    """Draw a fleet from ``spec`` (default :class:`FleetSpec`) at a heterogeneity level.

    ``num_devices`` overrides ``spec.num_devices``. The same arguments always give the same fleet
    (stream ``numpy_rng(seed, "fleet")``); the draws are made in a fixed order, so levels that use
    the same seed differ only by how far each device sits from the midpoint.
    """
    spec = spec or FleetSpec()
    n = spec.num_devices if num_devices is None else num_devices
    check(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1,
          "fleet.num_devices", n, "an integer >= 1")
    n = int(n)
    factor = HETEROGENEITY.get(heterogeneity)
    rng = numpy_rng(seed, "fleet")

    def draw(r: Range) -> np.ndarray:
        return rng.uniform(r[0], r[1], size=n)

    per_cycle = draw(_shrink(spec.device_flops_per_cycle, factor))
    clock = draw(_shrink(spec.device_clock_hz, factor))
    power_dbm = draw(_shrink_db(spec.device_power_dbm, factor))
    gain = draw(_shrink(spec.channel_gain, factor))
    memory = draw(_shrink(spec.device_memory_bytes, factor))

    w_up, w_down, n0 = spec.uplink_bandwidth_hz, spec.downlink_bandwidth_hz, spec.noise_psd
    p_up = 10.0 ** ((power_dbm - 30.0) / 10.0)
    uplink = w_up * np.log2(1.0 + p_up * gain / (w_up * n0))
    downlink = w_down * np.log2(1.0 + dbm_to_watts(spec.server_power_dbm) * gain / (w_down * n0))
    flops = per_cycle * clock
    devices = tuple(
        Device(flops=float(flops[i]), uplink_bps=float(uplink[i]), downlink_bps=float(downlink[i]),
               memory_bytes=float(memory[i]), tx_power_dbm=float(power_dbm[i]), channel_gain=float(gain[i]),
               name=f"device{i}")
        for i in range(n)
    )
    fleet = Fleet(devices=devices, server_flops=spec.server_flops, name=f"{heterogeneity}-{n}")
    log.debug("generated fleet %s (seed %d): flops %.3g..%.3g FLOP/s, uplink %.3g..%.3g bit/s",
              fleet.name, seed, flops.min(), flops.max(), uplink.min(), uplink.max())
    return fleet


FleetFactory = Callable[[int, int], Fleet]
FLEETS: Registry[FleetFactory] = Registry("fleet", "fleet.name")


def _preset(name: str, level: str, help: str) -> None:
    def make(num_devices: int = 20, seed: int = 0) -> Fleet:
        fleet = generate_fleet(FleetSpec(), num_devices=num_devices, heterogeneity=level, seed=seed)
        return Fleet(devices=fleet.devices, server_flops=fleet.server_flops, name=f"{name}-{fleet.num_devices}")

    make.__name__ = f"fleet_{name.replace('-', '_')}"
    make.__doc__ = help
    FLEETS.register(name, help=help)(make)


_preset("paper-default", "high",
        "Wei & Chen simulation ranges (docs/hasfl.md s.5), full heterogeneity; 20 devices by default")
_preset("homogeneous", "none", "every device at the midpoint of the paper-default ranges")
_preset("mild", "low", "paper-default ranges shrunk to 1/4 of their log-width")
_preset("medium", "medium", "paper-default ranges shrunk to 1/2 of their log-width")
