"""Fleet files: reading a fleet from YAML/JSON/TOML and parsing its entries.

A fleet file lists the edge server's FLOP/s and the devices; a device gives its rates directly or
physically (transmit power and channel gain, turned into rates with
:func:`~hasfl_sec.fleet.shannon_rate`). Unknown keys and bad values are refused with a one-line
:class:`~hasfl_sec.errors.ConfigError` naming the entry (``fleet.devices[3].flops``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError, check
from ..fileio import read_structured
from .compose import compose_fleet, groups_from_entries, server_from_entry
from .devices import POSITIVE_FIELDS, Device, Fleet, dbm_number, dbm_to_watts, positive_number, shannon_rate
from .generate import FLEETS, FleetSpec

__all__ = ["load_fleet", "fleet_from_dict"]

log = logging.getLogger(__name__)

_DEVICE_KEYS = POSITIVE_FIELDS + ("name", "group", "tx_power_dbm", "channel_gain")
_PHYSICAL_KEYS = ("uplink_bandwidth_hz", "downlink_bandwidth_hz", "server_power_dbm", "noise_psd")
_FLEET_KEYS = ("name", "server_flops", "server", "devices", "compose", "seed") + _PHYSICAL_KEYS


def fleet_from_dict(data: Mapping[str, Any], *, default_name: str = "custom", seed: int | None = None) -> Fleet:
    """Build a fleet from the fleet-file schema (see :func:`load_fleet`); unknown keys refused.

    ``seed`` draws a ``compose:`` list that gives no ``seed`` of its own (default 0).
    ``fleet_from_dict(fleet.to_dict()) == fleet``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("fleet", data, "a mapping with server_flops and devices")
    for key in data:
        if key not in _FLEET_KEYS:
            raise ConfigError(f"fleet.{key}", data[key], "a known key: " + ", ".join(_FLEET_KEYS),
                              "unknown fleet-file key")
    composed = _composed(data, seed)
    if composed is None:
        check("server_flops" in data, "fleet.server_flops", None, "a finite number > 0", "missing")
    devices_raw = [] if data.get("devices") is None else data["devices"]
    check(isinstance(devices_raw, (list, tuple)), "fleet.devices", devices_raw, "a list of device entries")
    check(len(devices_raw) >= 1 or composed is not None, "fleet.num_devices", 0,
          "at least 1 device (devices, or compose)")
    spec = FleetSpec()
    phys = {key: getattr(spec, key) for key in _PHYSICAL_KEYS}  # defaults for physical entries
    for key in _PHYSICAL_KEYS:
        if key in data:
            phys[key] = (dbm_number if key == "server_power_dbm" else positive_number)(data[key], f"fleet.{key}")
    offset = composed.num_devices if composed is not None else 0
    devices = [_device_from_dict(entry, offset + i, phys) for i, entry in enumerate(devices_raw)]
    name = data.get("name", default_name)
    check(isinstance(name, str), "fleet.name", name, "a string")
    if composed is not None:
        return Fleet(devices=composed.devices + tuple(devices), server_flops=composed.server_flops, name=name)
    return Fleet(devices=tuple(devices), server_flops=positive_number(data["server_flops"], "fleet.server_flops"),
               name=name)


def _composed(data: Mapping[str, Any], default_seed: int | None) -> Fleet | None:
    """The devices a ``compose:`` list draws (docs/fleets.md), with the file's server; None without one.

    The file's ``seed`` wins; without one the caller's (a run passes its fleet seed, so a composed
    file varies with it as a preset does), else 0.
    """
    if data.get("compose") is None:
        check("server" not in data and "seed" not in data, "fleet.compose", None,
              "a compose list when fleet.server or fleet.seed is given", "missing")
        return None
    seed = data.get("seed", 0 if default_seed is None else default_seed)
    check(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "fleet.seed", seed, "an integer >= 0")
    return compose_fleet(groups_from_entries(data["compose"]), server_from_entry(data), seed=seed)


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
    values: dict[str, Any] = {k: positive_number(entry[k], f"{prefix}.{k}") for k in POSITIVE_FIELDS if k in entry}
    power = None if entry.get("tx_power_dbm") is None else dbm_number(entry["tx_power_dbm"], f"{prefix}.tx_power_dbm")
    gain = (None if entry.get("channel_gain") is None
            else positive_number(entry["channel_gain"], f"{prefix}.channel_gain"))
    if "uplink_bps" not in values:
        check(power is not None and gain is not None, f"{prefix}.uplink_bps", None,
              "a rate in bit/s > 0, or tx_power_dbm and channel_gain to compute it", "missing")
        values["uplink_bps"] = shannon_rate(phys["uplink_bandwidth_hz"], dbm_to_watts(power), gain, phys["noise_psd"])
    if "downlink_bps" not in values:
        check(gain is not None, f"{prefix}.downlink_bps", None,
              "a rate in bit/s > 0, or channel_gain to compute it", "missing")
        values["downlink_bps"] = shannon_rate(phys["downlink_bandwidth_hz"], dbm_to_watts(phys["server_power_dbm"]),
                                              gain, phys["noise_psd"])
    name, group = entry.get("name", ""), entry.get("group", "")
    check(isinstance(name, str), f"{prefix}.name", name, "a string")
    check(isinstance(group, str), f"{prefix}.group", group, "a string")
    try:
        return Device(tx_power_dbm=power, channel_gain=gain, name=name, group=group, **values)
    except ConfigError as exc:  # re-label "device.x" with the index
        raise ConfigError(exc.field.replace("device", prefix, 1), exc.value, exc.valid) from None


def load_fleet(path: str | Path, *, seed: int | None = None) -> Fleet:
    """Read a fleet file (YAML ``.yaml``/``.yml``, JSON ``.json`` or TOML ``.toml``).

    Schema::

        name: my-lab                 # optional, defaults to the file's stem
        server_flops: 9.4e13         # FLOP/s
        devices:
          - {flops: 1e12, uplink_bps: 2e8, downlink_bps: 4e8, memory_bytes: 4.3e9, name: jetson-1}
          - {flops: 5e11, memory_bytes: 8e9, tx_power_dbm: 23, channel_gain: 5e-7}   # physical

    or composed from device and link classes (docs/fleets.md; ``hasfl-sec list device-classes``)::

        name: lab
        server: edge-gpu             # a server class (or server_flops)
        seed: 0                      # the draw within the classes' ranges (default: ``seed``, else 0)
        compose:
          - {device: phone-mid, link: lte, count: 6}
          - {device: raspberry-pi, link: wifi, count: 4}

    Listed ``devices`` follow the composed ones. A ``compose:`` list without ``seed`` is drawn at
    ``seed`` (a run passes its fleet seed, ``fleet.seed`` or the run's seed, as for a preset), or
    at 0 when none is given.

    A physical entry gets its rates from :func:`~hasfl_sec.fleet.shannon_rate` with the optional
    top-level ``uplink_bandwidth_hz``, ``downlink_bandwidth_hz``, ``server_power_dbm`` and
    ``noise_psd`` (defaults: the :class:`~hasfl_sec.fleet.FleetSpec` values). Explicit rates win
    over physical ones.
    """
    path = Path(path)
    if not path.is_file():  # the value may have been meant as a preset name: list them too
        raise ConfigError("fleet.file", str(path), "a preset (" + ", ".join(FLEETS.names())
                          + ") or an existing .yaml, .yml, .toml or .json fleet file")
    data = read_structured(path, "fleet.file")
    if data is None:
        raise ConfigError("fleet.file", str(path), "a fleet file with server_flops and devices", "file is empty")
    fleet = fleet_from_dict(data, default_name=path.stem, seed=seed)
    log.debug("loaded fleet %s (%d devices) from %s", fleet.name, fleet.num_devices, path)
    return fleet
