"""Turning the ``defense`` section of a config into defense objects.

The config section (:data:`hasfl_sec.config.DefenseConfig`) has ``use`` -- registered names in
the order they apply -- and one ``Params`` section per registered defense. This module does not
import the config module (the config imports the registry), so it takes the section duck-typed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError
from ..seeding import derive_seed
from .base import Defense, check_compatible
from .params import check_fields
from .registry import DEFENSES

__all__ = ["build_defenses", "check_defenses", "describe_defenses", "run_defense_label"]


def check_defenses(section: Any) -> None:
    """Refuse unknown or repeated names in ``defense.use``, combinations the defenses declare
    incompatible, any parameter outside the range its ``Params`` declares -- of every defense's
    section, used or not, so that a value set for a defense left out of ``use`` is not silently
    ignored -- and parameters of used ones that do not go together."""
    for name in DEFENSES.names():
        params = getattr(section, name, None)  # a defense registered after the config class has no section
        if params is not None:
            check_fields(params, f"defense.{name}.")
    seen: set[str] = set()
    for name in section.use:
        DEFENSES.get(name)  # unknown name: ConfigError listing the registered ones
        if name in seen:
            raise ConfigError("defense.use", section.use, "each defense at most once")
        seen.add(name)
    check_compatible([(name, DEFENSES.get(name)) for name in section.use])
    build_defenses(section, seed=0)  # used ones check how their parameters combine on construction


def build_defenses(section: Any, *, seed: int, label: str = "defense") -> list[Defense]:
    """The defenses ``section.use`` names, in order, each with its section's parameters.

    A ``seed`` field of a defense's Params is an offset: the seed actually used is derived from
    the run's ``seed``, ``label`` and the defense's name, so two runs with different seeds draw
    different noise and an attacker's simulation (another ``label``) never reuses the victim's.
    """
    out: list[Defense] = []
    for name in section.use:
        params = getattr(section, name)
        if any(f.name == "seed" for f in dataclasses.fields(params)):
            params = dataclasses.replace(params, seed=derive_seed(seed, label, name, params.seed))
        out.append(DEFENSES.get(name)(params))
    return out


def describe_defenses(section: Any) -> str:
    """A short label for tables: ``none`` or ``noise(sigma=0.5, clip=None)+topk(ratio=0.1)``."""
    if not section.use:
        return "none"
    parts = []
    for name in section.use:
        params = getattr(section, name)
        shown = ", ".join(f"{f.name}={getattr(params, f.name)}" for f in dataclasses.fields(params)
                          if f.name not in ("seed", "delta"))
        parts.append(f"{name}({shown})")
    return "+".join(parts)


def run_defense_label(section: Any, plan: Any) -> str:
    """What a run applied, for tables: the config's defenses and a privacy-constrained plan's
    per-device noise (``plan.noise_sigma``), e.g. ``plan-noise(sigma per device, 0.5, 0.5)``."""
    label = describe_defenses(section)
    sigma = getattr(plan, "noise_sigma", None)
    if not sigma or not any(s > 0 for s in sigma):
        return label
    shown = f"{sigma[0]:.3g} on every device" if len(set(sigma)) == 1 else ", ".join(f"{s:.3g}" for s in sigma)
    noise = f"plan-noise(sigma per device, {shown})"
    return noise if label == "none" else f"{label}+{noise}"
