"""Devices and fleets: the system state of the latency model, with validation and link-rate physics.

A :class:`Device` holds one edge device's FLOP/s f_i, uplink/downlink rates r_i^U, r_i^D (bit/s)
and memory; a :class:`Fleet` holds the devices and the edge server's FLOP/s f_s. Both validate on
construction and raise a one-line :class:`~hasfl_sec.errors.ConfigError` naming the bad field.
:func:`shannon_rate` and :func:`dbm_to_watts` turn transmit power and channel gain into rates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..errors import ConfigError, check

__all__ = ["Device", "Fleet", "GIB", "POSITIVE_FIELDS", "shannon_rate", "dbm_to_watts", "positive_number", "dbm_number",
           "fleet_classes"]

GIB = float(2**30)
POSITIVE_FIELDS = ("flops", "uplink_bps", "downlink_bps", "memory_bytes")


def dbm_to_watts(dbm: float) -> float:
    """Power in watts of ``dbm`` (dBm = 10 log10(P / 1 mW))."""
    return 10.0 ** ((float(dbm) - 30.0) / 10.0)


def shannon_rate(bandwidth_hz: float, power_w: float, gain: float, noise_psd_w_per_hz: float) -> float:
    """Shannon capacity W log2(1 + p h / (W N0)) in bit/s (docs/hasfl.md section 2.1)."""
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


def positive_number(value: Any, field_name: str) -> float:
    """``value`` as a finite float > 0, or a ConfigError naming ``field_name`` (fleet files and specs)."""
    valid = "a finite number > 0"
    x = _number(value, field_name, valid)
    check(math.isfinite(x) and x > 0, field_name, value, valid)
    return x


def dbm_number(value: Any, field_name: str) -> float:
    """``value`` as a finite power in dBm, or a ConfigError naming ``field_name``."""
    x = _number(value, field_name, "a finite power in dBm")
    check(math.isfinite(x), field_name, value, "a finite power in dBm")
    return x


def _check_device(dev: "Device", prefix: str) -> None:
    """Raise :class:`ConfigError` naming ``prefix.<attr>`` for the first bad field of ``dev``."""
    for attr in POSITIVE_FIELDS:
        positive_number(getattr(dev, attr), f"{prefix}.{attr}")
    if dev.tx_power_dbm is not None:
        dbm_number(dev.tx_power_dbm, f"{prefix}.tx_power_dbm")
    if dev.channel_gain is not None:
        positive_number(dev.channel_gain, f"{prefix}.channel_gain")
    check(isinstance(dev.name, str), f"{prefix}.name", dev.name, "a string")
    check(isinstance(dev.group, str), f"{prefix}.group", dev.group, "a string")


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
        group: the device and link class it was drawn from (``phone-mid/lte``, docs/fleets.md);
            reports group devices by it. Empty for devices that belong to no class.
    """

    flops: float
    uplink_bps: float
    downlink_bps: float
    memory_bytes: float
    tx_power_dbm: float | None = None
    channel_gain: float | None = None
    name: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        _check_device(self, "device")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; optional fields that are unset are left out."""
        out: dict[str, Any] = {"name": self.name} if self.name else {}
        if self.group:
            out["group"] = self.group
        out.update({k: float(getattr(self, k)) for k in POSITIVE_FIELDS})
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
        positive_number(self.server_flops, "fleet.server_flops")

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
        """Plain dict in the fleet-file schema; ``fleet_from_dict(f.to_dict()) == f``."""
        return {"name": self.name, "server_flops": float(self.server_flops),
                "devices": [d.to_dict() for d in self.devices]}

    def to_frame(self) -> pd.DataFrame:
        """One row per device: name, group, flops, uplink_bps, downlink_bps, memory_bytes, tx_power_dbm,
        channel_gain."""
        cols = ("name", "group") + POSITIVE_FIELDS + ("tx_power_dbm", "channel_gain")
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


def fleet_classes(fleet: "Fleet") -> list[str]:
    """Each device's class: the device class and link it was drawn from when the fleet says
    (``Device.group``, docs/fleets.md), else its compute tertile (``slow``/``medium``/``fast``)."""
    from ..report.tables import device_classes

    groups = [str(getattr(d, "group", "") or "") for d in fleet.devices]
    return groups if all(groups) else device_classes(fleet.flops)
