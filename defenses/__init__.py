"""Defenses against cut-layer leakage (installed as ``hasfl_sec.defenses``).

Each defense family lives in its own file and registers itself in :data:`DEFENSES`
(:mod:`hasfl_sec.defenses.registry`); importing this package registers the built-in ones. The
protocol every defense follows is :class:`~hasfl_sec.defenses.base.Defense`. Detectors a device
runs against a malicious server (SplitGuard, SplitOut) register in :data:`DETECTORS`.
"""

from . import compress, dpsgd, noise, nopeek, splitguard, splitout  # noqa: F401
from .base import Defense, DefenseContext, DefenseStack
from .build import build_defenses, check_defenses, describe_defenses, run_defense_label
from .registry import DEFENSES, DETECTORS

__all__ = ["DEFENSES", "DETECTORS", "Defense", "DefenseContext", "DefenseStack", "build_defenses", "check_defenses",
           "describe_defenses", "run_defense_label"]
