"""Attacks that hook the cut layer (installed as ``hasfl_sec.attacks``).

Each attack family lives in its own file and registers itself in :data:`ATTACKS`
(:mod:`hasfl_sec.attacks.registry`; active ones, a malicious party's behaviour during training, in
:data:`ACTIVE_ATTACKS`); importing this package registers the built-in ones. Attacks
see only the :mod:`hasfl_sec.sfl.protocol` records their threat model grants.
"""

from . import (  # noqa: F401
    feature_inversion,
    fsha,
    gradient_inversion,
    inverse_network,
    label_inference,
    text_gradient_inversion,
    text_inversion,
    text_inverter,
    unsplit,
)
from .registry import ACTIVE_ATTACKS, ATTACKS

__all__ = ["ATTACKS", "ACTIVE_ATTACKS"]
