"""What an audit runs (attacks, images, seeds, preset, adaptive mode) and the environment it runs in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..attacks.registry import ATTACKS
from ..defenses.base import Defense
from ..errors import check, check_count

__all__ = ["AuditConfig", "AuditEnv", "PRESETS", "ADAPTIVE_MODES"]


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


@dataclass
class AuditConfig:
    """What to audit.

    Attributes:
        attacks: registered attack names; None = every registered attack.
        cuts: ``"plan"`` (the cuts the run's plan used), ``"all"`` (every legal cut), or a list.
        devices: ``"first"`` (the first device at each planned cut), ``"all"``, or device ids.
        images: victim images per (device, cut); per-round attacks use exactly this many,
            per-period attacks whole periods until at least this many.
        seeds: attack seeds; each seed re-runs every attack from a fresh random start.
        batch_size: batch size of simulated devices (cuts outside the plan, bare models).
        attack_params: per attack, overrides of its ``Params`` (``{"rmle": {"steps": 500}}``).
        dependence: dependence estimators to report (names in ``metrics.DEPENDENCE``).
        dependence_params: their keyword arguments; KSG is only meaningful on low-dimensional
            projections (docs/privacy.md section 3b), hence ``project_to`` by default.
        dfil_relative_sigma: reference noise of the dFIL bound, relative to the smashed data's RMS.
        grid_images: originals and reconstructions kept per (device, cut, attack) for the figure.
        adaptive: one of :data:`ADAPTIVE_MODES`: against a defended run, ``auto`` runs every
            attack that can adapt twice (``<attack>`` unaware, ``<attack>+adaptive``), ``off``
            only unaware, ``only`` only adaptive; without a defense every attack runs once.
        preset: a key of :data:`PRESETS`, parameter overrides under ``attack_params``.
    """

    attacks: list[str] | None = None
    cuts: str | list[int] = "plan"
    devices: str | list[int] = "first"
    images: int = 64
    seeds: list[int] = field(default_factory=lambda: [0])
    batch_size: int = 16
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    dependence: list[str] = field(default_factory=lambda: ["dcor", "nhsic", "ksg"])
    dependence_params: dict[str, dict[str, Any]] = field(default_factory=lambda: {"ksg": {"project_to": 4}})
    dfil_relative_sigma: float | None = 0.1
    grid_images: int = 8
    adaptive: str = "auto"
    preset: str = "full"

    def validate(self, option: str = "", params_prefix: str = "attack_params.") -> "AuditConfig":
        """Check every setting before any work; returns self. Errors name ``<option><setting>``
        (``option="--"`` names the command line's options, ``--batch-size``) and
        ``<params_prefix><attack>.<param>`` for attack parameters.

        Every attack's parameters (the preset's, then ``attack_params``) are type- and
        range-checked (:meth:`~hasfl_sec.attacks.base.Attack.check_params`), also for attacks not
        run, so a typo is never silently ignored."""
        def name(setting: str) -> str:
            return option + (setting.replace("_", "-") if option == "--" else setting)

        for attack in self.attacks or ():
            check(attack in ATTACKS.names(), name("attacks"), attack, ATTACKS.names())
        check(self.preset in PRESETS, name("preset"), self.preset, sorted(PRESETS))
        check(self.adaptive in ADAPTIVE_MODES, name("adaptive"), self.adaptive, ADAPTIVE_MODES)
        for attack, values in self.attack_params.items():
            check(attack in ATTACKS.names(), f"{params_prefix}{attack}", values, "parameters of a registered attack: "
                  + ", ".join(ATTACKS.names()))
            ATTACKS.get(attack).check_params(values, params_prefix)
        check_count(name("images"), self.images)
        check_count(name("batch_size"), self.batch_size)
        check_count(name("grid_images"), self.grid_images, low=0)
        check(len(self.seeds) >= 1, name("seeds"), self.seeds, "at least one seed")
        return self

    def attack_names(self) -> list[str]:
        """The attacks to run, in registry order when not given."""
        return list(self.attacks) if self.attacks is not None else ATTACKS.names()

    def params_for(self, name: str) -> dict[str, Any]:
        """Attack ``name``'s parameter overrides: the preset's, then ``attack_params`` on top."""
        fields = {f.name for f in dataclasses.fields(ATTACKS.get(name).Params)}
        preset = {k: v for k, v in PRESETS.get(self.preset, {}).get(name, {}).items() if k in fields}
        return {**preset, **self.attack_params.get(name, {})}


@dataclass
class AuditEnv:
    """What the runner knows about the task and hands to attacks as far as threat models allow.

    ``defense`` labels the run's defense in the table (``describe_defenses``, ``"none"``);
    ``attacker_defense`` builds, from a seed, the copy of it an adaptive attacker simulates.
    """

    run_id: str
    input_shape: tuple[int, int, int]
    num_classes: int
    auxiliary: torch.Tensor
    auxiliary_labels: torch.Tensor
    fresh_client: Callable[[int], torch.nn.Module]
    client_optimizer: dict[str, float]
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    defense: str = "none"
    attacker_defense: Callable[[int], Defense] | None = None

    def attacker_copy(self, seed: int) -> Defense | None:
        """The attacker's own copy of the run's defense, seeded from ``seed`` apart from the
        victims' (``build_defenses(..., label="attacker")``); None without a defense."""
        return None if self.attacker_defense is None or self.defense == "none" else self.attacker_defense(seed)
