"""The defense registries: every defense family registers its class here on import (``defense.use``),
and every detector a device can run against a malicious server (``--detectors``)."""

from __future__ import annotations

from ..registry import Registry
from .base import Defense

__all__ = ["DEFENSES", "DETECTORS"]

DEFENSES: Registry[type[Defense]] = Registry("defense", "defense.use")

#: Detectors: device-side monitors of the server's replies (:mod:`hasfl_sec.sfl.parties`).
DETECTORS: Registry[type] = Registry("detector", "--detectors")
