"""The attack registry: every attack family registers its classes here on import (``--attacks NAME``)."""

from __future__ import annotations

from ..registry import Registry

__all__ = ["ATTACKS"]

ATTACKS: Registry[type] = Registry("attack", "attack.name")
