"""Defenses against cut-layer leakage (installed as ``hasfl_sec.defenses``).

Each defense family lives in its own file and registers itself in :data:`DEFENSES`; the protocol
every defense follows is :class:`~hasfl_sec.defenses.base.Defense`.
"""

from ..registry import Registry
from .base import Defense, DefenseStack

DEFENSES: Registry[type[Defense]] = Registry("defense", "defenses")

__all__ = ["DEFENSES", "Defense", "DefenseStack"]

# Built-in defenses register themselves on import.
from . import noise  # noqa: E402,F401
