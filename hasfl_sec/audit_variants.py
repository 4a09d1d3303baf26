"""Which attacks an audit runs, with which parameters, as which rows of the table.

* Parameters: an attack's ``Params`` defaults, then a named preset (:data:`PRESETS`; ``fast`` for
  a quick evaluation), then the audit's explicit ``attack_params``.
* Variants: against a defended run, an attack that can adapt (``Params.adaptive``) runs unaware
  (``<attack>``, as published) and adaptive (``<attack>+adaptive``: knows the defense and its
  parameters, not the victims' draws; PRIVACY.md section 5, feature 8, after the attacker-aware
  evaluations of ResSFL, Li et al. CVPR 2022, and Titcombe et al. ICLR-W 2021), as
  ``AuditConfig.adaptive`` selects. Without a defense, or where knowing it changes nothing the
  attack computes (:meth:`~hasfl_sec.attacks.base.Attack.adapts_to`), one plain row stands for both.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .attacks import ATTACKS
from .attacks.base import Attack

if TYPE_CHECKING:  # the audit imports this module; types only
    from .audit import AuditConfig, AuditEnv

__all__ = ["ADAPTIVE_MODES", "ADAPTIVE_SUFFIX", "PRESETS", "Variant", "build_attack", "plan_variants"]

logger = logging.getLogger("hasfl_sec.audit")

#: ``AuditConfig.adaptive``: adaptive variants only against a defense (auto), never, or instead
#: of the unaware ones.
ADAPTIVE_MODES = ("auto", "off", "only")

#: Named sets of attack-parameter overrides (``AuditConfig.preset``); explicit ``attack_params``
#: win. ``fast`` cuts the optimisation and training steps of the costly attacks for a quick
#: evaluation. Measured on the default run (hecnn on 16x16 digits, 60 rounds, cuts 1-4, 8 images,
#: 2 threads), mean SSIM at cuts 1/2/3/4, full -> fast, and attack seconds for the four cuts:
#: rmle 0.997/0.987/0.928/0.478 -> 0.994/0.973/0.868/0.468 (about 8x faster);
#: inverse-network 0.995/0.991/0.991/0.941 -> 0.991/0.979/0.982/0.909 (width 32 -> 16 and
#: 1500 -> 500 steps: about 15x faster); unsplit 0.990/0.769/0.465/0.089 -> 0.987/0.775/0.442/0.024
#: (27 s -> 11 s); gradient-inversion 0.06-0.17 either way (45 s -> 30 s).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {},
    "fast": {"rmle": {"steps": 500}, "inverse-network": {"steps": 500, "width": 16},
             "unsplit": {"steps": 800, "restarts": 4, "probe_steps": 150},
             "gradient-inversion": {"steps": 150}, "label-cluster": {"n_init": 3}},
}

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
