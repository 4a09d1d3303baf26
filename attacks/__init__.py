"""Attacks that hook the cut layer (installed as ``hasfl_sec.attacks``).

Each attack family lives in its own file and registers itself in :data:`ATTACKS`. Attacks see
only the :mod:`hasfl_sec.protocol` records their threat model grants.
"""

from ..registry import Registry

ATTACKS: Registry[type] = Registry("attack", "attack.name")

__all__ = ["ATTACKS"]

# Built-in attacks register themselves on import.
from . import feature_inversion, gradient_inversion, inverse_network, label_inference, unsplit  # noqa: E402,F401
