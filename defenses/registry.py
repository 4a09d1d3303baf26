"""The defense registry: every defense family registers its class here on import (``defense.use``)."""

from __future__ import annotations

from ..registry import Registry
from .base import Defense

__all__ = ["DEFENSES"]

DEFENSES: Registry[type[Defense]] = Registry("defense", "defense.use")
