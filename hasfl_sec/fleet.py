"""Edge-device fleets: compute, link rates and memory of every device plus the edge server.

A :class:`Fleet` is the system state the latency model (HASFL.md section 2) and the planners work
from: device FLOP/s f_i, uplink/downlink rates r_i^U, r_i^D (bit/s), memory, and the server's
FLOP/s f_s. Fleets are built three ways:

* by hand (``Fleet(devices=(Device(...), ...), server_flops=...)``);
* generated from a :class:`FleetSpec` with a heterogeneity level (:func:`generate_fleet`);
* read from a YAML/JSON/TOML file (:func:`load_fleet`), rates given directly or physically
  (transmit power and channel gain, turned into rates with :func:`shannon_rate`).

Generated fleets follow the simulation settings of the HASFL group's later paper (Wei & Chen,
HASFL.md section 5). Our own choices, not from that source, are labelled "(our choice)":

* server transmit power 40 dBm (HASFL.md gives none) (our choice);
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

import json
import logging
import math
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import yaml

from .errors import ConfigError, check
from .registry import Registry
from .seeding import numpy_rng

__all__ = [
    "Device",
    "Fleet",
    "FleetSpec",
    "HETEROGENEITY",
    "FLEETS",
    "GIB",
    "shannon_rate",
    "dbm_to_watts",
    "generate_fleet",
    "load_fleet",
]

log = logging.getLogger(__name__)

GIB = float(2**30)
_POSITIVE = ("flops", "uplink_bps", "downlink_bps", "memory_bytes")
_DEVICE_KEYS = _POSITIVE + ("name", "tx_power_dbm", "channel_gain")
_PHYSICAL_KEYS = ("uplink_bandwidth_hz", "downlink_bandwidth_hz", "server_power_dbm", "noise_psd")
_FLEET_KEYS = ("name", "server_flops", "devices") + _PHYSICAL_KEYS


def dbm_to_watts(dbm: float) -> float:
    """Power in watts of ``dbm`` (dBm = 10 log10(P / 1 mW))."""
    return 10.0 ** ((float(dbm) - 30.0) / 10.0)


def shannon_rate(bandwidth_hz: float, power_w: float, gain: float, noise_psd_w_per_hz: float) -> float:
    """Shannon capacity W log2(1 + p h / (W N0)) in bit/s (HASFL.md section 2.1)."""
    snr = power_w * gain / (bandwidth_hz * noise_psd_w_per_hz)
    return float(bandwidth_hz * np.log2(1.0 + snr))


def _number(value: Any, field_name: str, valid: str) -> float:
    """``value`` as a float; numeric strings (YAML 1.1 reads ``1e9`` as text) are accepted."""
    if isinstance(value, bool):
        raise ConfigError(field_name, value, valid)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ConfigError(field_name, value, valid) from None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(field_name, value, valid) from None


def _positive(value: Any, field_name: str) -> float:
    valid = "a finite number > 0"
    x = _number(value, field_name, valid)
    check(math.isfinite(x) and x > 0, field_name, value, valid)
    return x


def _dbm(value: Any, field_name: str) -> float:
    x = _number(value, field_name, "a finite power in dBm")
    check(math.isfinite(x), field_name, value, "a finite power in dBm")
    return x


def _check_device(dev: "Device", prefix: str) -> None:
    """Raise :class:`ConfigError` naming ``prefix.<attr>`` for the first bad field of ``dev``."""
    for attr in _POSITIVE:
        _positive(getattr(dev, attr), f"{prefix}.{attr}")
    if dev.tx_power_dbm is not None:
        _dbm(dev.tx_power_dbm, f"{prefix}.tx_power_dbm")
    if dev.channel_gain is not None:
        _positive(dev.channel_gain, f"{prefix}.channel_gain")
    check(isinstance(dev.name, str), f"{prefix}.name", dev.name, "a string")


@dataclass(frozen=True)
class Device:
    """One edge device.

    Args:
        flops: compute capability f_i in FLOP/s.
        uplink_bps: uplink rate r_i^U in bit/s.
        downlink_bps: downlink rate r_i^D in bit/s.
        memory_bytes: memory available for training, in bytes.
        tx_power_dbm: transmit power (descriptive; used only to derive the uplink rate).
        channel_gain: average channel gain (descriptive; used only to derive the rates).
        name: a label.
    """

    flops: float
    uplink_bps: float
    downlink_bps: float
    memory_bytes: float
    tx_power_dbm: float | None = None
    channel_gain: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        _check_device(self, "device")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; optional fields that are unset are left out."""
        out: dict[str, Any] = {"name": self.name} if self.name else {}
        out.update({k: float(getattr(self, k)) for k in _POSITIVE})
        for key in ("tx_power_dbm", "channel_gain"):
            if getattr(self, key) is not None:
                out[key] = float(getattr(self, key))
        return out


@dataclass(frozen=True)
class Fleet:
    """The edge devices and the edge server's compute.

    Args:
        devices: the devices (a list is accepted and stored as a tuple).
        server_flops: edge-server compute capability f_s in FLOP/s.
        name: a label.
    """

    devices: tuple[Device, ...]
    server_flops: float
    name: str = "custom"

    def __post_init__(self) -> None:
        devices = tuple(self.devices)
        object.__setattr__(self, "devices", devices)
        check(len(devices) >= 1, "fleet.num_devices", len(devices), "at least 1 device")
        for i, dev in enumerate(devices):
            check(isinstance(dev, Device), f"fleet.devices[{i}]", dev, "a Device")
            _check_device(dev, f"fleet.devices[{i}]")
        _positive(self.server_flops, "fleet.server_flops")

    @property
    def num_devices(self) -> int:
        """N, the number of devices."""
        return len(self.devices)

    def _column(self, attr: str) -> np.ndarray:
        arr = np.fromiter((getattr(d, attr) for d in self.devices), dtype=float, count=len(self.devices))
        arr.setflags(write=False)
        return arr

    @cached_property
    def flops(self) -> np.ndarray:
        """f_i for every device, FLOP/s (read-only array)."""
        return self._column("flops")

    @cached_property
    def uplink_bps(self) -> np.ndarray:
        """r_i^U for every device, bit/s (read-only array)."""
        return self._column("uplink_bps")

    @cached_property
    def downlink_bps(self) -> np.ndarray:
        """r_i^D for every device, bit/s (read-only array)."""
        return self._column("downlink_bps")

    @cached_property
    def memory_bytes(self) -> np.ndarray:
        """Memory of every device, bytes (read-only array)."""
        return self._column("memory_bytes")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the fleet-file schema; ``Fleet.from_dict(f.to_dict()) == f``."""
        return {"name": self.name, "server_flops": float(self.server_flops),
                "devices": [d.to_dict() for d in self.devices]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, default_name: str = "custom") -> "Fleet":
        """Build a fleet from the fleet-file schema (see :func:`load_fleet`); unknown keys refused."""
        if not isinstance(data, Mapping):
            raise ConfigError("fleet", data, "a mapping with server_flops and devices")
        for key in data:
            if key not in _FLEET_KEYS:
                raise ConfigError(f"fleet.{key}", data[key], "a known key: " + ", ".join(_FLEET_KEYS),
                                  "unknown fleet-file key")
        check("server_flops" in data, "fleet.server_flops", None, "a finite number > 0", "missing")
        devices_raw = [] if data.get("devices") is None else data["devices"]
        check(isinstance(devices_raw, (list, tuple)), "fleet.devices", devices_raw, "a list of device entries")
        check(len(devices_raw) >= 1, "fleet.num_devices", 0, "at least 1 device")
        spec = FleetSpec()
        phys = {key: getattr(spec, key) for key in _PHYSICAL_KEYS}  # defaults for physical entries
        for key in _PHYSICAL_KEYS:
            if key in data:
                phys[key] = (_dbm if key == "server_power_dbm" else _positive)(data[key], f"fleet.{key}")
        devices = [_device_from_dict(entry, i, phys) for i, entry in enumerate(devices_raw)]
        name = data.get("name", default_name)
        check(isinstance(name, str), "fleet.name", name, "a string")
        return cls(devices=tuple(devices), server_flops=_positive(data["server_flops"], "fleet.server_flops"),
                   name=name)

    def to_frame(self) -> pd.DataFrame:
        """One row per device: name, flops, uplink_bps, downlink_bps, memory_bytes, tx_power_dbm, channel_gain."""
        cols = ("name",) + _POSITIVE + ("tx_power_dbm", "channel_gain")
        frame = pd.DataFrame({c: [getattr(d, c) for d in self.devices] for c in cols})
        frame.index.name = "device"
        return frame

    def save(self, path: str | Path) -> Path:
        """Write the fleet as YAML (``.yaml``/``.yml``) or JSON (``.json``); returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        elif suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        else:
            raise ConfigError("fleet.file", str(path), "a path ending in .yaml, .yml or .json")
        return path


def _device_from_dict(entry: Any, i: int, phys: Mapping[str, float]) -> Device:
    prefix = f"fleet.devices[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(prefix, entry, "a mapping with flops, uplink_bps, downlink_bps, memory_bytes")
    for key in entry:
        if key not in _DEVICE_KEYS:
            raise ConfigError(f"{prefix}.{key}", entry[key], "a known key: " + ", ".join(_DEVICE_KEYS),
                              "unknown fleet-file key")
    for key in ("flops", "memory_bytes"):
        check(key in entry, f"{prefix}.{key}", None, "a finite number > 0", "missing")
    values: dict[str, Any] = {k: _positive(entry[k], f"{prefix}.{k}") for k in _POSITIVE if k in entry}
    power = None if entry.get("tx_power_dbm") is None else _dbm(entry["tx_power_dbm"], f"{prefix}.tx_power_dbm")
    gain = None if entry.get("channel_gain") is None else _positive(entry["channel_gain"], f"{prefix}.channel_gain")
    if "uplink_bps" not in values:
        check(power is not None and gain is not None, f"{prefix}.uplink_bps", None,
              "a rate in bit/s > 0, or tx_power_dbm and channel_gain to compute it", "missing")
        values["uplink_bps"] = shannon_rate(phys["uplink_bandwidth_hz"], dbm_to_watts(power), gain, phys["noise_psd"])
    if "downlink_bps" not in values:
        check(gain is not None, f"{prefix}.downlink_bps", None,
              "a rate in bit/s > 0, or channel_gain to compute it", "missing")
        values["downlink_bps"] = shannon_rate(phys["downlink_bandwidth_hz"], dbm_to_watts(phys["server_power_dbm"]),
                                              gain, phys["noise_psd"])
    name = entry.get("name", "")
    check(isinstance(name, str), f"{prefix}.name", name, "a string")
    try:
        return Device(tx_power_dbm=power, channel_gain=gain, name=name, **values)
    except ConfigError as exc:  # re-label "device.x" with the index
        raise ConfigError(exc.field.replace("device", prefix, 1), exc.value, exc.valid) from None


def load_fleet(path: str | Path) -> Fleet:
    """Read a fleet file (YAML ``.yaml``/``.yml``, JSON ``.json`` or TOML ``.toml``).

    Schema::

        name: my-lab                 # optional, defaults to the file's stem
        server_flops: 9.4e13         # FLOP/s
        devices:
          - {flops: 1e12, uplink_bps: 2e8, downlink_bps: 4e8, memory_bytes: 4.3e9, name: jetson-1}
          - {flops: 5e11, memory_bytes: 8e9, tx_power_dbm: 23, channel_gain: 5e-7}   # physical

    A physical entry gets its rates from :func:`shannon_rate` with the optional top-level
    ``uplink_bandwidth_hz``, ``downlink_bandwidth_hz``, ``server_power_dbm`` and ``noise_psd``
    (defaults: the :class:`FleetSpec` values). Explicit rates win over physical ones.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("fleet.file", str(path), "an existing YAML/JSON/TOML file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(path.read_text())
        elif suffix == ".json":
            data = json.loads(path.read_text())
        elif suffix == ".toml":
            data = tomllib.loads(path.read_text())
        else:
            raise ConfigError("fleet.file", str(path), "a file ending in .yaml, .yml, .json or .toml")
    except (yaml.YAMLError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ConfigError("fleet.file", str(path), "a well-formed YAML/JSON/TOML file", first) from None
    if data is None:
        raise ConfigError("fleet.file", str(path), "a fleet file with server_flops and devices", "file is empty")
    fleet = Fleet.from_dict(data, default_name=path.stem)
    log.debug("loaded fleet %s (%d devices) from %s", fleet.name, fleet.num_devices, path)
    return fleet


HETEROGENEITY: Registry[float] = Registry("heterogeneity level", "fleet.heterogeneity")
HETEROGENEITY.register("none", help="identical devices at the geometric midpoint of every range")(0.0)
HETEROGENEITY.register("low", help="ranges shrunk to 1/4 of their log-width around the midpoint")(0.25)
HETEROGENEITY.register("medium", help="ranges shrunk to 1/2 of their log-width around the midpoint")(0.5)
HETEROGENEITY.register("high", help="the full ranges of the HASFL group's simulations (default)")(1.0)
DEFAULT_HETEROGENEITY = "high"

Range = tuple[float, float]


@dataclass(frozen=True)
class FleetSpec:
    """Distributions a generated fleet is drawn from (HASFL.md section 5, Wei & Chen settings).

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
            _positive(getattr(self, name), f"fleet.spec.{name}")
        _dbm(self.server_power_dbm, "fleet.spec.server_power_dbm")

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
        "Wei & Chen simulation ranges (HASFL.md s.5), full heterogeneity; 20 devices by default")
_preset("homogeneous", "none", "every device at the midpoint of the paper-default ranges")
_preset("mild", "low", "paper-default ranges shrunk to 1/4 of their log-width")
_preset("medium", "medium", "paper-default ranges shrunk to 1/2 of their log-width")
