"""Defenses against cut-layer leakage (installed as ``hasfl_sec.defenses``).

Each defense family lives in its own file and registers itself in :data:`DEFENSES`; the protocol
every defense follows is :class:`~hasfl_sec.defenses.base.Defense`.
"""

from ..registry import Registry
from .base import Defense, DefenseContext, DefenseStack

DEFENSES: Registry[type[Defense]] = Registry("defense", "defense.use")

# Built-in defenses register themselves on import.
from . import compress, dpsgd, nopeek, noise  # noqa: E402,F401
from .build import build_defenses, check_defenses, describe_defenses, run_defense_label  # noqa: E402

__all__ = ["DEFENSES", "Defense", "DefenseContext", "DefenseStack", "build_defenses", "check_defenses",
           "describe_defenses", "run_defense_label"]
