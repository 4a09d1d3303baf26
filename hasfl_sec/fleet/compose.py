"""Fleets composed from device and link classes: presets and ``compose:`` fleet files (docs/fleets.md).

A fleet is a list of groups -- (device class, link class, count) -- and an edge-server class. Each
device takes its FLOP/s, memory, uplink and downlink log-uniformly from its classes' ranges
(:mod:`~hasfl_sec.fleet.classes`), with the stream ``numpy_rng(seed, "fleet", "compose")`` drawn in a
fixed order, so the same groups and seed give the same fleet. A preset gives shares instead of
counts; :func:`apportion` turns them into counts for any number of devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, check
from ..seeding import numpy_rng
from .classes import DEVICE_CLASSES, LINK_CLASSES, SERVER_CLASSES
from .devices import Device, Fleet, positive_number
from .generate import FLEETS

__all__ = ["Group", "apportion", "compose_fleet", "groups_from_entries", "MIXED_PRESETS"]


@dataclass(frozen=True)
class Group:
    """``count`` devices of ``device`` class over ``link`` class."""

    device: str
    link: str
    count: int

    @property
    def label(self) -> str:
        """``device/link``: the devices' class in reports."""
        return f"{self.device}/{self.link}"


def apportion(shares: Sequence[float], n: int) -> list[int]:
    """Counts for ``n`` devices in proportion to ``shares`` by largest remainder (ties to the
    earlier share); when ``n`` allows, every share gets at least one device."""
    w = np.asarray(shares, dtype=float) / float(np.sum(shares))
    k = len(w)
    floor_one = n >= k
    base = np.ones(k, dtype=int) if floor_one else np.zeros(k, dtype=int)
    quota = w * (n - base.sum())
    counts = base + np.floor(quota).astype(int)
    remainder = quota - np.floor(quota)
    for i in sorted(range(k), key=lambda i: (-remainder[i], i))[: n - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> np.ndarray:
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    return np.exp(rng.uniform(lo, hi, size=size))


def compose_fleet(groups: Sequence[Group], server: str | float, *, seed: int = 0, name: str = "composed") -> Fleet:
    """The fleet of ``groups`` with the server class ``server`` (or its FLOP/s), drawn at ``seed``."""
    rng = numpy_rng(seed, "fleet", "compose")
    devices = []
    for group in groups:
        dc, lc = DEVICE_CLASSES.get(group.device), LINK_CLASSES.get(group.link)
        draws = [_log_uniform(rng, r, group.count) for r in (dc.flops, dc.memory_bytes, lc.uplink_bps,
                                                             lc.downlink_bps)]
        for k in range(group.count):
            devices.append(Device(flops=float(draws[0][k]), memory_bytes=float(draws[1][k]),
                                  uplink_bps=float(draws[2][k]), downlink_bps=float(draws[3][k]),
                                  name=f"{group.device}-{len(devices)}", group=group.label))
    flops = SERVER_CLASSES.get(server).flops if isinstance(server, str) else float(server)
    return Fleet(devices=tuple(devices), server_flops=flops, name=name)


def _count(value: Any, field: str) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
    check(ok, field, value, "an integer >= 1")
    return int(value)


def groups_from_entries(entries: Any) -> list[Group]:
    """The ``compose:`` list of a fleet file as groups; one-line errors name the entry's field."""
    check(isinstance(entries, list) and len(entries) >= 1, "fleet.compose", entries,
          "a non-empty list of {device, link, count} entries")
    groups = []
    for i, entry in enumerate(entries):
        field = f"fleet.compose[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(field, entry, "a mapping with device, link and count")
        unknown = sorted(set(entry) - {"device", "link", "count"})
        check(not unknown, f"{field}.{unknown[0] if unknown else ''}", unknown, "device, link and count only")
        for key, registry in (("device", DEVICE_CLASSES), ("link", LINK_CLASSES)):
            check(entry.get(key) in registry, f"{field}.{key}", entry.get(key), registry.names())
        groups.append(Group(str(entry["device"]), str(entry["link"]), _count(entry.get("count"), f"{field}.count")))
    return groups


def server_from_entry(data: Mapping[str, Any]) -> str | float:
    """A composed fleet's server: ``server`` (a class name) or ``server_flops`` (a number)."""
    if "server" in data:
        check(data["server"] in SERVER_CLASSES, "fleet.server", data["server"], SERVER_CLASSES.names())
        check("server_flops" not in data, "fleet.server_flops", data.get("server_flops"),
              "absent when fleet.server names a server class")
        return str(data["server"])
    check("server_flops" in data, "fleet.server", None, "a server class " + ", ".join(SERVER_CLASSES.names())
          + ", or server_flops", "missing")
    return positive_number(data["server_flops"], "fleet.server_flops")


#: Mixed presets: name -> (server class, ((device, link, share), ...), what it stands for).
MIXED_PRESETS: dict[str, tuple[str, tuple[tuple[str, str, float], ...], str]] = {
    "edge-mix": ("edge-gpu", (("raspberry-pi", "wifi", 0.2), ("phone-low", "lte", 0.2), ("phone-mid", "lte", 0.2),
                              ("phone-high", "5g", 0.15), ("jetson", "wifi", 0.15), ("laptop", "wifi", 0.1)),
                 "boards, phones, Jetsons and laptops over Wi-Fi, LTE and 5G, one T4-class edge server"),
    "phones-mixed": ("edge-gpu", (("phone-low", "lte", 0.3), ("phone-mid", "lte", 0.2), ("phone-mid", "wifi", 0.2),
                                  ("phone-high", "5g", 0.15), ("phone-high", "wifi", 0.15)),
                     "low, mid and high-end phones over LTE, 5G and Wi-Fi, one T4-class edge server"),
    "iot-boards": ("edge-cpu", (("mcu", "ble", 0.25), ("mcu", "nb-iot", 0.15), ("raspberry-pi", "wifi", 0.35),
                                ("raspberry-pi", "lte", 0.25)),
                   "microcontrollers over BLE and NB-IoT and Raspberry Pis over Wi-Fi and LTE, a CPU edge server"),
    "phones-lte": ("edge-gpu", (("phone-mid", "lte", 1.0),), "mid-range phones over LTE (one class)"),
    "pis-wifi": ("edge-cpu", (("raspberry-pi", "wifi", 1.0),), "Raspberry Pis over Wi-Fi (one class)"),
}


def _register(name: str) -> None:
    server, parts, what = MIXED_PRESETS[name]
    shares = ", ".join(f"{d}/{lk} {s:.0%}" for d, lk, s in parts)

    def make(num_devices: int = 20, seed: int = 0) -> Fleet:
        check(isinstance(num_devices, (int, np.integer)) and num_devices >= 1, "fleet.num_devices", num_devices,
              "an integer >= 1")
        counts = apportion([s for _, _, s in parts], int(num_devices))
        groups = [Group(d, lk, c) for (d, lk, _), c in zip(parts, counts) if c > 0]
        return compose_fleet(groups, server, seed=seed, name=f"{name}-{num_devices}")

    make.__name__ = f"fleet_{name.replace('-', '_')}"
    FLEETS.register(name, help=f"{what}: {shares}; server {server} (classes and sources: hasfl-sec list "
                               "device-classes / link-classes / server-classes, docs/fleets.md)")(make)


for _name in MIXED_PRESETS:
    _register(_name)
