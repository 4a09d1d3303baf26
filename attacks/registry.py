"""The attack registries: every attack family registers its classes here on import (``--attacks NAME``)."""

from __future__ import annotations

from ..registry import Registry

__all__ = ["ATTACKS", "ACTIVE_ATTACKS"]

#: Passive attacks: they read what crosses the cut (the audit runs them on recorded exchanges).
ATTACKS: Registry[type] = Registry("attack", "attack.name")

#: Active attacks: a malicious party's behaviour during training (:mod:`hasfl_sec.sfl.parties`).
ACTIVE_ATTACKS: Registry[type] = Registry("active attack", "attack.active")
