"""Edge-device fleets: compute, link rates and memory of every device plus the edge server.

A :class:`Fleet` is the system state the latency model (docs/hasfl.md section 2) and the planners work
from: device FLOP/s f_i, uplink/downlink rates r_i^U, r_i^D (bit/s), memory, and the server's
FLOP/s f_s. Fleets are built three ways:

* by hand (``Fleet(devices=(Device(...), ...), server_flops=...)``);
* generated from a :class:`FleetSpec` with a heterogeneity level (:func:`generate_fleet`);
* read from a YAML/JSON/TOML file (:func:`load_fleet`), rates given directly or physically
  (transmit power and channel gain, turned into rates with :func:`shannon_rate`).

* composed from documented device, link and server classes (:mod:`.classes`, :mod:`.compose`,
  docs/fleets.md): the presets ``edge-mix``, ``phones-mixed``, ``iot-boards``, ... or a fleet
  file's ``compose:`` list.

Modules: :mod:`.devices` (devices, fleets, validation, rate physics), :mod:`.generate` (generated
fleets, heterogeneity levels, the paper's presets and our modelling choices), :mod:`.classes` and
:mod:`.compose` (real device classes), :mod:`.files` (fleet files).
"""

from __future__ import annotations

from .classes import DEVICE_CLASSES, LINK_CLASSES, SERVER_CLASSES
from .compose import Group, apportion, compose_fleet
from .devices import GIB, Device, Fleet, dbm_to_watts, fleet_classes, shannon_rate
from .files import fleet_from_dict, load_fleet
from .generate import DEFAULT_HETEROGENEITY, FLEETS, HETEROGENEITY, FleetSpec, generate_fleet

__all__ = [
    "DEVICE_CLASSES",
    "LINK_CLASSES",
    "SERVER_CLASSES",
    "Group",
    "apportion",
    "compose_fleet",
    "fleet_from_dict",
    "Device",
    "Fleet",
    "FleetSpec",
    "HETEROGENEITY",
    "DEFAULT_HETEROGENEITY",
    "FLEETS",
    "GIB",
    "shannon_rate",
    "dbm_to_watts",
    "fleet_classes",
    "generate_fleet",
    "load_fleet",
]
