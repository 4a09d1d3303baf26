"""Defenses against cut-layer leakage (installed as ``hasfl_sec.defenses``).

Each defense family lives in its own file and registers itself in :data:`DEFENSES`
(:mod:`hasfl_sec.defenses.registry`); importing this package registers the built-in ones. The
protocol every defense follows is :class:`~hasfl_sec.defenses.base.Defense`.
"""

from . import compress, dpsgd, noise, nopeek  # noqa: F401
from .base import Defense, DefenseContext, DefenseStack
from .build import build_defenses, check_defenses, describe_defenses, run_defense_label
from .registry import DEFENSES

__all__ = ["DEFENSES", "Defense", "DefenseContext", "DefenseStack", "build_defenses", "check_defenses",
           "describe_defenses", "run_defense_label"]
