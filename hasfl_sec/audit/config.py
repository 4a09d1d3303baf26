"""What an audit runs (attacks, images, seeds, preset, adaptive mode) and the environment it runs in.

:meth:`AuditConfig.validate` checks every setting where it enters -- the audit's options, an
evaluation's settings file -- before any work: names, types (with the experiment config's own
checker, :func:`hasfl_sec.typed.coerce`) and ranges, every attack parameter against what its
``Params`` declare (:mod:`hasfl_sec.defenses.params`).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ..attacks.registry import ATTACKS
from ..defenses.base import Defense
from ..defenses.params import MAX_SEED, Valid, check_value
from ..errors import MAX_COUNT, check, check_count
from ..metrics.dependence import DEPENDENCE
from ..typed import coerce

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

#: Attack seeds, like an evaluation's training seeds: distinct integers in [0, 2^31).
SEED_LIMIT = 2**31

#: What the dependence estimators' keyword arguments accept (their types come from the
#: estimators' own annotations, :mod:`hasfl_sec.metrics.dependence`); flags need no entry.
DEPENDENCE_VALID: dict[str, Valid] = {
    "k": Valid(1, MAX_COUNT),  # KSG's k-th neighbour, k >= 1 (Kraskov, Stoegbauer & Grassberger 2004)
    "project_to": Valid(1, MAX_COUNT),  # the dimension of the random projection
    "seed": Valid(0, MAX_SEED),
    "sigma_x": Valid(0.0, low_open=True),  # Gaussian kernel bandwidths (Gretton et al. 2005)
    "sigma_y": Valid(0.0, low_open=True),
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

    def validate(self, option: str = "", params_prefix: str = "attack_params.",
                 names: Mapping[str, str] | None = None) -> "AuditConfig":
        """Check every setting before any work; returns self (unchanged).

        Errors name ``<option><setting>`` -- ``option="--"`` names the command line's options
        (``--batch-size``), ``"eval."`` an evaluation's settings (``eval.images``) -- unless
        ``names`` maps the setting to another name (``{"seeds": "eval.attack_seeds"}``); attack
        parameters are named ``<params_prefix><attack>.<param>`` (``--attack-param rmle.steps``,
        ``eval.attack_params.rmle.steps``).

        Refused: a wrong type; an unknown or repeated attack; a parameter unknown, of the wrong
        type, out of its declared range, for an attack not run, or ``adaptive`` (the audit sets it
        per variant); counts out of range; repeated or negative seeds; an unknown preset or
        adaptive mode; cuts and devices of the wrong form; unknown dependence estimators or
        arguments; a dFIL reference noise <= 0."""
        name = _namer(option, names or {})
        hints = typing.get_type_hints(AuditConfig)
        for f in dataclasses.fields(self):  # types first: the checks below rely on them
            if f.name != "attack_params":  # typed per attack below, named by params_prefix
                coerce(name(f.name), getattr(self, f.name), hints[f.name])
        check(self.preset in PRESETS, name("preset"), self.preset, sorted(PRESETS))
        check(self.adaptive in ADAPTIVE_MODES, name("adaptive"), self.adaptive, ADAPTIVE_MODES)
        self._check_attacks(name("attacks"), params_prefix)
        check_count(name("images"), self.images)
        check_count(name("batch_size"), self.batch_size)
        check_count(name("grid_images"), self.grid_images, low=0)
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), name("seeds"), self.seeds,
              "at least one seed, none repeated")
        check(all(0 <= s < SEED_LIMIT for s in self.seeds), name("seeds"), self.seeds, "integers in [0, 2^31)")
        _check_targets(name("cuts"), self.cuts, ("plan", "all"), 1, "cut indices (>= 1)")
        _check_targets(name("devices"), self.devices, ("first", "all"), 0, "device ids (>= 0)")
        self._check_dependence(name("dependence"), name("dependence_params"))
        sigma = self.dfil_relative_sigma
        check(sigma is None or (math.isfinite(sigma) and sigma > 0), name("dfil_relative_sigma"), sigma,
              "a finite number > 0, or null for no dFIL bound")
        return self

    def _check_attacks(self, field_: str, prefix: str) -> None:
        """The attack names, and every attack parameter: the user's (of a registered attack being
        run, known, typed, in range, not ``adaptive``) and the preset's merged with them."""
        if self.attacks is not None:
            for attack in self.attacks:
                check(attack in ATTACKS.names(), field_, attack, ATTACKS.names())
            # none is allowed: the dependence estimates and the dFIL bound are still computed
            check(len(set(self.attacks)) == len(self.attacks), field_, self.attacks, "each attack at most once")
        where = prefix.rstrip(". ") or "attack_params"
        check(isinstance(self.attack_params, dict), where, self.attack_params, "a mapping ATTACK -> {PARAM: VALUE}")
        run = self.attack_names()
        for attack, values in self.attack_params.items():
            check(attack in ATTACKS.names(), f"{prefix}{attack}", values, "parameters of a registered attack: "
                  + ", ".join(ATTACKS.names()))
            given = ATTACKS.get(attack).check_params(values, prefix)
            check("adaptive" not in given, f"{prefix}{attack}.adaptive", given.get("adaptive"),
                  "parameters other than adaptive",
                  "the audit sets each variant's adaptive flag itself: hasfl-sec audit --adaptive auto|off|only")
            check(attack in run, f"{prefix}{attack}", values, "parameters of an attack being run: " + ", ".join(run),
                  f"add {attack} to {field_} or drop its parameters")
        for attack in run:  # the preset's values too, as the attack will get them
            ATTACKS.get(attack).check_params(self.params_for(attack), prefix)

    def _check_dependence(self, names_field: str, params_field: str) -> None:
        """Registered estimators, and keyword arguments each estimator takes, typed by its own
        annotations and in the ranges of :data:`DEPENDENCE_VALID`."""
        for estimator in self.dependence:
            check(estimator in DEPENDENCE, names_field, estimator, DEPENDENCE.names())
        for estimator, kwargs in self.dependence_params.items():
            check(estimator in DEPENDENCE, f"{params_field}.{estimator}", kwargs, "arguments of a registered "
                  "dependence estimator: " + ", ".join(DEPENDENCE.names()))
            fn = DEPENDENCE.get(estimator)
            known = list(inspect.signature(fn).parameters)[2:]  # after the two variables x, y
            hints = typing.get_type_hints(fn)
            for key, value in kwargs.items():
                where = f"{params_field}.{estimator}.{key}"
                check(key in known, where, value, f"a known argument of {estimator}: " + ", ".join(known))
                check_value(where, value, hints[key], DEPENDENCE_VALID.get(key, Valid()))

    def attack_names(self) -> list[str]:
        """The attacks to run, in registry order when not given."""
        return list(self.attacks) if self.attacks is not None else ATTACKS.names()

    def params_for(self, name: str) -> dict[str, Any]:
        """Attack ``name``'s parameter overrides: the preset's, then ``attack_params`` on top."""
        fields = {f.name for f in dataclasses.fields(ATTACKS.get(name).Params)}
        preset = {k: v for k, v in PRESETS.get(self.preset, {}).get(name, {}).items() if k in fields}
        return {**preset, **self.attack_params.get(name, {})}


def _namer(option: str, names: Mapping[str, str]) -> Callable[[str], str]:
    """How errors name a setting: ``names[setting]``, else ``option`` + the setting (dashed after ``--``)."""
    def name(setting: str) -> str:
        return names.get(setting) or option + (setting.replace("_", "-") if option == "--" else setting)
    return name


def _check_targets(field_: str, value: str | list[int], words: tuple[str, ...], low: int, what: str) -> None:
    """``value`` is one of ``words`` or a non-empty list of integers >= ``low`` (whether each
    exists -- a legal cut, a device of the run -- is checked once the model or run is known; a
    repeated one is harmless, they are taken as a set)."""
    valid = f"{' or '.join(words)}, or a non-empty list of {what}"
    if isinstance(value, str):
        check(value in words, field_, value, valid)
        return
    check(len(value) >= 1 and all(low <= v <= MAX_COUNT for v in value), field_, value, valid)


@dataclass
class AuditEnv:
    """What the runner knows about the task and hands to attacks as far as threat models allow.

    ``defense`` labels the run's defense in the table (``describe_defenses``, ``"none"``);
    ``attacker_defense`` builds, from a seed, the copy of it an adaptive attacker simulates. For a
    text task, ``secret_mask`` marks the planted secrets of the training sequences (the victims'
    data; the audit scores secret recovery with it, no attack sees it) and ``vocab`` decodes them.
    """

    run_id: str
    input_shape: tuple[int, ...]
    num_classes: int
    auxiliary: torch.Tensor
    auxiliary_labels: torch.Tensor
    fresh_client: Callable[[int], torch.nn.Module]
    client_optimizer: dict[str, float]
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    defense: str = "none"
    attacker_defense: Callable[[int], Defense] | None = None
    #: text tasks: the planted-secret mask of the training sequences ([n, T]) and the vocabulary
    secret_mask: torch.Tensor | None = None
    vocab: tuple[str, ...] | None = None

    def attacker_copy(self, seed: int) -> Defense | None:
        """The attacker's own copy of the run's defense, seeded from ``seed`` apart from the
        victims' (``build_defenses(..., label="attacker")``); None without a defense."""
        return None if self.attacker_defense is None or self.defense == "none" else self.attacker_defense(seed)
