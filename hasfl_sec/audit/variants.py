"""Which attacks an audit runs, with which parameters, as which rows of the table.

* Parameters: an attack's ``Params`` defaults, then a named preset (:data:`PRESETS`; ``fast`` for
  a quick evaluation), then the audit's explicit ``attack_params``.
* Variants: against a defended run, an attack that can adapt (``Params.adaptive``) runs unaware
  (``<attack>``, as published) and adaptive (``<attack>+adaptive``: knows the defense and its
  parameters, not the victims' draws; docs/privacy.md section 5, feature 8, after the attacker-aware
  evaluations of ResSFL, Li et al. CVPR 2022, and Titcombe et al. ICLR-W 2021), as
  ``AuditConfig.adaptive`` selects. Without a defense, or where knowing it changes nothing the
  attack computes (:meth:`~hasfl_sec.attacks.base.Attack.adapts_to`), one plain row stands for both.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from ..attacks.base import Attack
from ..attacks.registry import ATTACKS
from .config import AuditConfig, AuditEnv

__all__ = ["ADAPTIVE_SUFFIX", "Variant", "build_attack", "plan_variants"]

logger = logging.getLogger("hasfl_sec.audit")


#: The suffix naming an attack's adaptive rows.
ADAPTIVE_SUFFIX = "+adaptive"


def build_attack(name: str, audit: AuditConfig, env: AuditEnv | None = None, *,
                 adaptive: bool | None = None) -> Attack:
    """The attack ``name`` with the audit's parameter overrides (preset, then ``attack_params``).

    ``adaptive`` sets ``Params.adaptive`` of an attack that has it (ignored otherwise). An attack
    whose ``Params`` size its auxiliary data (``auxiliary_samples``) is capped at what the task
    holds out (with a warning): the threat model then records the smaller number.
    """
    cls = ATTACKS.get(name)
    values = audit.params_for(name)
    if adaptive is not None and any(f.name == "adaptive" for f in dataclasses.fields(cls.Params)):
        values["adaptive"] = adaptive
    attack = cls.from_dict(values)
    wanted = getattr(attack.params, "auxiliary_samples", None)
    if env is not None and wanted is not None and wanted > len(env.auxiliary):
        logger.warning("%s: %d auxiliary samples wanted, the held-out split has %d; using %d",
                       name, wanted, len(env.auxiliary), len(env.auxiliary))
        attack = type(attack)(dataclasses.replace(attack.params, auxiliary_samples=len(env.auxiliary)))
    return attack


@dataclass(frozen=True)
class Variant:
    """One set of rows: attack ``attack`` run with ``adaptive`` (None: it has no such flag), named ``row``."""

    row: str
    attack: str
    adaptive: bool | None


def plan_variants(audit: AuditConfig, env: AuditEnv) -> tuple[list[Variant], dict[str, str]]:
    """The attack variants to run against ``env``'s defense (see the module docstring), and a note
    per adaptive-capable attack whose adaptive variant would repeat the unaware one."""
    defense = env.attacker_copy(0)
    variants, notes = [], {}
    for name in audit.attack_names():
        attack = build_attack(name, audit, env)
        if not hasattr(attack.params, "adaptive"):
            variants.append(Variant(name, name, None))
            continue
        if defense is None or audit.adaptive == "off" or not attack.adapts_to(defense):
            if defense is not None and audit.adaptive != "off":
                notes[name] = f"knowing {env.defense} changes nothing {name} computes: its row stands for both"
            variants.append(Variant(name, name, False))
            continue
        if audit.adaptive == "auto":
            variants.append(Variant(name, name, False))
        variants.append(Variant(name + ADAPTIVE_SUFFIX, name, True))
    return variants, notes
