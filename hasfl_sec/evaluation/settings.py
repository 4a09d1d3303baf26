"""What ``hasfl-sec eval`` runs: the arms (plans, privacy budgets, defense settings) and the audit.

An *arm* is one training run plus its audit, repeated for every training seed (one *cell* per arm
and seed, :mod:`~hasfl_sec.evaluation.cells`). The default evaluation has four kinds:

* ``plan`` arms -- one per audited strategy (``hasfl`` and the ``sfl`` baseline);
* ``baseline`` arms -- the paper's other benchmarks (``bs-only``, ``cut-only``, ``random``): trained
  for the time-to-target comparison, not audited unless ``full``;
* ``private`` arms -- the privacy-constrained planner (``hasfl-private``) at each leakage budget;
* ``defense`` arms -- the ``sfl`` plan (uniform batch, the config's ``plan.cut``: the default cut)
  trained under one defense setting each. The undefended reference is the ``sfl`` plan arm;
* ``active`` arms -- a malicious edge server (:class:`ActiveEval`, docs/privacy.md section 7): the
  ``hasfl`` plan trained with the server hijacking one device per cut and device class (FSHA),
  every device running the detectors (and, with ``--full``, under each defense setting too); and
  the same plan with an honest server and the same detectors, for their false alarms. An attacked
  training is a different training, so these arms are trained anew, not audited.

The default grid is trimmed so that three seeds fit in ten minutes on two cores; ``full``
(``hasfl-sec eval --full``) is :func:`full_settings`: every defense at two strengths, three budgets,
audited baselines and the audit's full attack settings.

Settings are plain dataclasses, read from a YAML/JSON/TOML file (``--eval-config``) with the same
type checks as the experiment config, and saved into ``eval.json`` so a report can be reproduced.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..audit.active import HijackSettings
from ..audit.config import AuditConfig
from ..defenses.params import check_param
from ..defenses.registry import DEFENSES
from ..errors import ConfigError, check
from ..fileio import check_folder_name, read_structured
from ..planning.strategies import STRATEGIES
from ..typed import build_dataclass

#: The report name of an evaluation that is given none (see :attr:`EvalSettings.name`).
DEFAULT_NAME = "default"

__all__ = ["DEFAULT_NAME", "DefenseSweep", "ActiveEval", "ACTIVE_DEVICES", "EvalSettings", "Arm", "load_settings",
           "settings_from_mapping", "check_sweep", "default_sweeps", "full_sweeps", "full_settings", "ARM_KINDS"]

#: The kinds of arm, in the order they run; only ``baseline`` arms may go unaudited.
ARM_KINDS = ("plan", "baseline", "private", "defense", "active")


@dataclass
class DefenseSweep:
    """One defense swept over one parameter, the others at ``fixed`` values.

    Example: ``DefenseSweep("noise", "sigma", [0.1, 0.5, 1.0])`` trains three arms with
    ``defense.use=[noise]`` and ``defense.noise.sigma`` at each value.
    """

    defense: str
    param: str
    values: list[Union[int, float]]  # ints stay ints: quantize's bits must be an integer
    fixed: dict[str, Any] = field(default_factory=dict)


def default_sweeps() -> list[DefenseSweep]:
    """The default defense grid: one setting of each defense family but DP-SGD (whose per-sample
    gradients make its arm about five times as slow as the others; ``full`` adds it).

    Noise is in activation units (the default model's smashed data at cut 2 has an RMS of about
    0.5-1 after GroupNorm+ReLU), NoPeek's dCor weight (its loss is in [0, 1], the cross-entropy
    starts near 2.3), the kept fraction of top-k and the bits of quantization.
    """
    return [
        DefenseSweep("noise", "sigma", [1.0]),
        DefenseSweep("nopeek", "weight", [2.0]),
        DefenseSweep("topk", "ratio", [0.1]),
        DefenseSweep("quantize", "bits", [2]),
    ]


def full_sweeps() -> list[DefenseSweep]:
    """The full defense grid (``--full``): a moderate and a strong setting of each family, and
    DP-SGD at a claimed epsilon of 8."""
    return [
        DefenseSweep("noise", "sigma", [1.0, 4.0]),
        DefenseSweep("nopeek", "weight", [2.0, 10.0]),
        DefenseSweep("dpsgd", "target_epsilon", [8.0], {"max_grad_norm": 1.0}),
        DefenseSweep("topk", "ratio", [0.1, 0.02]),
        DefenseSweep("quantize", "bits", [2, 1]),
    ]


#: How :attr:`ActiveEval.devices` names the hijacked devices (besides a list of device ids).
ACTIVE_DEVICES = ("representatives", "all")


@dataclass
class ActiveEval:
    """The malicious edge server of an evaluation: its arms (see the module doc) and their settings.

    Attributes:
        attack: the active attack (``hasfl-sec list active-attacks``); null: no attacked arms.
        strategy: the planner whose plan is attacked (its cuts and batch sizes are the optimizer's).
        devices: the hijacked devices: ``representatives`` (one per cut and device class of the plan;
            the server trains the task honestly on the others), ``all``, or a list of device ids.
        defenses: also attack the plan under every defense setting of ``eval.defenses`` (off by
            default: each is a training of its own; ``--full`` turns it on).
        detectors: what every device runs against its server (``hasfl-sec list detectors``).
        honest: add the plan with an honest server and the same detectors: their false alarms.
        attack_params, detector_params: per attack / detector, overrides of its Params.
        measure_every: score the attacker's reconstructions every this many rounds (and at the last
            round, and when a detector fires), on ``images`` images of the device's batch.
    """

    attack: Optional[str] = "fsha"
    strategy: str = "hasfl"
    devices: Union[str, list[int]] = "representatives"
    defenses: bool = False
    detectors: list[str] = field(default_factory=lambda: ["splitguard", "splitout"])
    honest: bool = True
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    measure_every: int = 10
    images: int = 32

    def hijack(self, attack: str | None) -> HijackSettings:
        """The training-time settings of an arm with ``attack`` (None: the honest-server arm)."""
        params = dict(self.attack_params.get(attack, {})) if attack is not None else {}
        if attack is not None and isinstance(self.devices, list):
            params["devices"] = list(self.devices)
        return HijackSettings(attack, params, list(self.detectors),
                              {k: dict(v) for k, v in self.detector_params.items()}, self.measure_every, self.images)

    @property
    def arms(self) -> bool:
        """Whether these settings add any arm."""
        return self.attack is not None or (self.honest and bool(self.detectors))

    def validate(self) -> "ActiveEval":
        """Names, device choices and every attack and detector parameter (errors name ``eval.active.*``)."""
        check(self.strategy in STRATEGIES.names(), "eval.active.strategy", self.strategy, STRATEGIES.names())
        if isinstance(self.devices, str):
            check(self.devices in ACTIVE_DEVICES, "eval.active.devices", self.devices,
                  "representatives, all, or a list of device ids")
        else:
            check(len(self.devices) >= 1 and len(set(self.devices)) == len(self.devices)
                  and all(d >= 0 for d in self.devices), "eval.active.devices", self.devices,
                  "representatives, all, or a list of distinct device ids >= 0")
        for name, values in self.attack_params.items():
            check(name == self.attack, f"eval.active.attack_params.{name}", values,
                  f"parameters of eval.active.attack ({self.attack})")
            check("devices" not in values, f"eval.active.attack_params.{name}.devices", values.get("devices"),
                  "no value here", "the hijacked devices are eval.active.devices")
        if self.arms:
            self.hijack(self.attack).validate("eval.active.", "eval.active.attack_params.",
                                              detector_prefix="eval.active.detector_params.")
        return self


@dataclass
class EvalSettings:
    """Options of one evaluation (everything but the experiment config itself).

    Attributes:
        name: the report's name; output goes to ``reports/<name>`` unless ``--out`` is given.
            ``None`` (the default): ``reports/default``, or ``reports/default-2``, ``-3``, ... if
            that exists, so a default evaluation never replaces an earlier one.
        strategies: unconstrained planners to compare (``hasfl-sec list strategies``).
        budgets: leakage budgets of the privacy-constrained planner, one arm each, in the unit of
            ``privacy.metric`` of the experiment config (default ``dfil_psnr``: the best PSNR, in
            dB, any unbiased reconstruction can reach). Empty: no private arms.
        defenses: defense sweeps at the default cut (empty: no defense arms).
        attacks: attacks of every audit; ``images`` victim images per audited device.
        preset: the audit's attack settings (``fast``: fewer optimisation steps and a narrower
            inverse network, so the default evaluation fits in about ten minutes on two cores;
            ``full``: the audit's defaults).
        attack_params: per attack, overrides of its Params (win over the preset).
        seeds: training seeds; every arm runs once per seed (model initialisation, train/test
            split, partition, sampling and every defense's and attack's randomness), and every
            figure is a mean with a 95% interval over them (:mod:`hasfl_sec.stats`).
        fleet_per_seed: draw the fleet again for every seed (a generated fleet, a preset, or a
            fleet file's ``compose:`` list without its own ``seed``; listed devices never change).
            False (default): one fleet, drawn from ``fleet.seed`` or else the config's ``seed``, for
            every seed: the question is about *these* devices.
        baselines: planners trained for the time-to-target comparison with ``hasfl`` (the
            paper's benchmarks); audited only when ``audit_baselines``.
        audit_baselines: audit the baseline arms too.
        time_budget_s: the simulated time at which every plan's accuracy is compared; None: the
            shortest simulated training time of any finished plan arm and seed, so every arm is
            measured within its own training.
        attack_seeds: attack seeds of every audit (each re-runs every attack from a fresh start).
        active: the malicious edge server's arms (:class:`ActiveEval`; ``attack: null`` and
            ``honest: false`` for none).

    Every audit attacks one device per distinct (cut, noise) of a plan: devices that share both
    send the same kind of smashed data from the same aggregated model.
    """

    name: Optional[str] = None
    strategies: list[str] = field(default_factory=lambda: ["hasfl", "sfl"])
    baselines: list[str] = field(default_factory=lambda: ["bs-only", "cut-only", "random"])
    audit_baselines: bool = False
    budgets: list[float] = field(default_factory=lambda: [20.0, 12.0])
    defenses: list[DefenseSweep] = field(default_factory=default_sweeps)
    attacks: list[str] = field(default_factory=lambda: ["rmle", "inverse-network", "label-direction"])
    images: int = 16
    preset: str = "fast"
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    fleet_per_seed: bool = False
    time_budget_s: Optional[float] = None
    attack_seeds: list[int] = field(default_factory=lambda: [0])
    active: ActiveEval = field(default_factory=ActiveEval)

    def validate(self) -> "EvalSettings":
        """Check names and ranges; returns self."""
        if self.name is not None:
            check_folder_name("eval.name", self.name)
        for field_, names in (("eval.strategies", self.strategies), ("eval.baselines", self.baselines)):
            for s in names:
                check(s in STRATEGIES.names(), field_, s, STRATEGIES.names())
        both = sorted(set(self.strategies) & set(self.baselines))
        check(not both, "eval.baselines", self.baselines, "strategies not also in eval.strategies",
              f"{', '.join(both)} would be trained twice")
        for b in self.budgets:
            check(isinstance(b, (int, float)) and math.isfinite(b), "eval.budgets", self.budgets, "finite numbers")
        for sweep in self.defenses:
            check_sweep(sweep)
        # the audit every arm gets: attacks, images, attack seeds, preset and every attack parameter
        # (before any cell trains; the cells' own check would come only after an arm has trained)
        self.audit_config().validate("eval.", "eval.attack_params.", {"seeds": "eval.attack_seeds"})
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "eval.seeds", self.seeds,
              "at least one seed, none repeated")
        check(all(0 <= s < 2**31 for s in self.seeds), "eval.seeds", self.seeds, "integers in [0, 2^31)")
        self.active.validate()
        check(bool(self.strategies or self.baselines or self.budgets or self.defenses), "eval.strategies",
              self.strategies, "at least one plan to train (strategies, baselines, budgets or defenses)",
              "the report is built around the trained plans")
        check(self.time_budget_s is None or (math.isfinite(self.time_budget_s) and self.time_budget_s > 0),
              "eval.time_budget_s", self.time_budget_s, "a finite number > 0, or null")
        return self

    def audit_config(self) -> AuditConfig:
        """The audit of every audited arm (its devices are chosen per arm): these settings'
        attacks, images, attack seeds, preset and attack parameters."""
        params = {k: dict(v) if isinstance(v, Mapping) else v for k, v in self.attack_params.items()}
        return AuditConfig(attacks=list(self.attacks), images=self.images, seeds=list(self.attack_seeds),
                           preset=self.preset, attack_params=params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (saved in ``eval.json``)."""
        return asdict(self)


def check_sweep(sweep: DefenseSweep) -> None:
    """A defense sweep's names, and each of its values and fixed parameters typed and in the range
    the defense's ``Params`` declare; errors name ``eval.defenses.<defense>[.values|.fixed.<param>]``.
    How the parameters combine (DP-SGD's noise and epsilon) is checked with every arm's config,
    also before any cell trains."""
    check(sweep.defense in DEFENSES, "eval.defenses", sweep.defense, DEFENSES.names())
    where = f"eval.defenses.{sweep.defense}"
    params = DEFENSES.get(sweep.defense).Params
    names = [f.name for f in dataclasses.fields(params)]
    for p in [sweep.param, *sweep.fixed]:
        check(p in names, where, p, f"a parameter of {sweep.defense}: " + ", ".join(sorted(names)))
    check(len(sweep.values) >= 1, f"{where}.values", sweep.values, "at least one value")
    for value in sweep.values:
        check_param(params, sweep.param, value, f"{where}.values")
    for key, value in sweep.fixed.items():
        check_param(params, key, value, f"{where}.fixed.{key}")


def full_settings() -> dict[str, Any]:
    """What ``--full`` changes in the defaults: the full defense grid, three budgets, audited
    baselines, the audit's full attack settings, and the malicious server attacking every defense
    setting (about an hour and a half on two cores with 3 seeds)."""
    return {"defenses": [asdict(d) for d in full_sweeps()], "budgets": [30.0, 20.0, 12.0],
            "audit_baselines": True, "preset": "full", "active": {"defenses": True}}


def load_settings(path: str | Path | None = None, full: bool = False, text: bool = False,
                  **changes: Any) -> EvalSettings:
    """Default settings (:func:`full_settings` with ``full``), updated from a YAML/JSON/TOML file
    and then from keyword ``changes``. ``text``: the data are text, so the audits' default attacks
    are :data:`TEXT_AUDIT_ATTACKS` (and parameters of those attacks are accepted)."""
    values: dict[str, Any] = full_settings() if full else {}
    if text:
        values["attacks"] = list(TEXT_AUDIT_ATTACKS)
    if path is not None:
        loaded = read_structured(path, "--eval-config") or {}
        if not isinstance(loaded, dict):
            raise ConfigError("--eval-config", str(path), "a mapping of eval settings")
        if isinstance(values.get("active"), dict) and isinstance(loaded.get("active"), dict):
            loaded = {**loaded, "active": {**values["active"], **loaded["active"]}}  # --full's, then the file's
        values.update(loaded)
    values.update({k: v for k, v in changes.items() if v is not None})
    return settings_from_mapping(values)


def settings_from_mapping(values: dict[str, Any], field: str = "eval") -> EvalSettings:
    """Settings from a mapping (defaults for what it leaves out), type- and range-checked; errors
    name ``field`` (``grid.eval`` for a sweep's grid file)."""
    values = dict(values)
    if "defenses" in values and isinstance(values["defenses"], list):
        values["defenses"] = [d if isinstance(d, dict) else asdict(d) for d in values["defenses"]]
    return build_dataclass(EvalSettings, values, field).validate()


@dataclass
class Arm:
    """One training run of the evaluation and what it stands for.

    Attributes:
        name: unique, the ``plan`` column of every table (its cells' run folders are
            ``runs/<name>.seed<seed>``).
        kind: one of :data:`ARM_KINDS`.
        overrides: ``--set`` strings applied to the base experiment config.
        strategy: the planner; budget: the leakage budget (private arms).
        defense, param, strength: the defense setting (defense arms, and active arms under one).
        active: an active arm's :class:`~hasfl_sec.audit.active.HijackSettings` as a mapping, and
            under ``choose`` how its hijacked devices are picked from the plan (:data:`ACTIVE_DEVICES`,
            or ``list`` when the settings name them).
    """

    name: str
    kind: str
    overrides: list[str]
    strategy: str
    budget: float = math.nan
    defense: str = "none"
    param: str = ""
    strength: float = math.nan
    audited: bool = True
    active: dict[str, Any] = field(default_factory=dict)

    def hijack(self) -> HijackSettings:
        """An active arm's training-time settings."""
        values = {k: v for k, v in self.active.items() if k != "choose"}
        return HijackSettings(**values)

    @property
    def setting(self) -> str:
        """``sigma=0.5`` for a defense arm, empty otherwise."""
        return f"{self.param}={self.strength:g}" if self.param else ""


def _yaml_value(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _defense_overrides(sweep: DefenseSweep, value: Union[int, float]) -> list[str]:
    """The ``--set`` strings of one defense setting (the plan's strategy aside)."""
    fixed = [f"defense.{sweep.defense}.{k}={_yaml_value(v)}" for k, v in sweep.fixed.items()]
    return [f"defense.use=[{sweep.defense}]", *fixed, f"defense.{sweep.defense}.{sweep.param}={value}"]


def _active_arms(settings: EvalSettings) -> list[Arm]:
    """The malicious edge server's arms: the attacked plan undefended and under each defense
    setting, then the plan with an honest server and the detectors."""
    active = settings.active
    strategy = active.strategy
    choose = "list" if isinstance(active.devices, list) else active.devices
    plan = [f"plan.strategy={strategy}"]
    arms = []
    if active.attack is not None:
        hijack = {**asdict(active.hijack(active.attack)), "choose": choose}
        arms.append(Arm(f"{active.attack}-{strategy}", "active", plan, strategy, audited=False, active=hijack))
        for sweep in settings.defenses if active.defenses else []:
            for v in sweep.values:
                arms.append(Arm(f"{active.attack}-{strategy}-{sweep.defense}-{sweep.param}={v:g}", "active",
                                [*plan, *_defense_overrides(sweep, v)], strategy, defense=sweep.defense,
                                param=sweep.param, strength=float(v), audited=False, active=hijack))
    if active.honest and active.detectors:
        arms.append(Arm(f"honest-{strategy}", "active", plan, strategy, audited=False,
                        active={**asdict(active.hijack(None)), "choose": "none"}))
    return arms


#: Attacks of a text task's audits when the settings name image attacks only (the defaults).
TEXT_AUDIT_ATTACKS = ["text-inversion", "text-inverter"]


def for_text(settings: EvalSettings) -> tuple[EvalSettings, list[str]]:
    """The settings of an evaluation whose data are text, and what was changed and why.

    Left out: privacy-constrained plans (their noise is priced with the dFIL bound, a bound on
    reconstructing real-valued inputs, which token ids are not) and the malicious-server arms (FSHA
    decodes images). Image attacks are replaced by the text attacks when no text attack was named.
    """
    from ..attacks.registry import ATTACKS

    notes, changes = [], {}
    if settings.budgets:
        changes["budgets"] = []
        notes.append(f"privacy-constrained plans (budgets {', '.join(f'{b:g}' for b in settings.budgets)}) are left "
                     "out: their noise is priced with the dFIL bound, which holds for real-valued inputs, not tokens")
    if settings.active.attack is not None or settings.active.honest:
        changes["active"] = dataclasses.replace(settings.active, attack=None, honest=False)
        notes.append("the malicious-server arms are left out: FSHA's decoder and critic reconstruct images")
    if not any(a in ATTACKS and ATTACKS.get(a).modality == "text" for a in settings.attacks):
        changes["attacks"] = list(TEXT_AUDIT_ATTACKS)
        notes.append(f"the audits run the text attacks {', '.join(TEXT_AUDIT_ATTACKS)} in place of "
                     f"{', '.join(settings.attacks)}")
    return dataclasses.replace(settings, **changes), notes


def build_arms(settings: EvalSettings) -> list[Arm]:
    """Every arm of an evaluation, in the order they run."""
    arms = [Arm(s, "plan", [f"plan.strategy={s}"], s) for s in settings.strategies]
    arms += [Arm(s, "baseline", [f"plan.strategy={s}"], s, audited=settings.audit_baselines)
             for s in settings.baselines]
    for b in settings.budgets:
        arms.append(Arm(f"private-{b:g}", "private", ["plan.strategy=hasfl-private", f"privacy.budget={b}"],
                        "hasfl-private", budget=float(b)))
    for sweep in settings.defenses:
        for v in sweep.values:
            arms.append(Arm(f"{sweep.defense}-{sweep.param}={v:g}", "defense",
                            ["plan.strategy=sfl", *_defense_overrides(sweep, v)],
                            "sfl", defense=sweep.defense, param=sweep.param, strength=float(v)))
    if settings.defenses and "sfl" not in settings.strategies:
        arms.insert(len(settings.strategies), Arm("sfl", "plan", ["plan.strategy=sfl"], "sfl"))
    arms += _active_arms(settings)
    seen: dict[str, Arm] = {}
    for arm in arms:  # an arm's name is its run folder and its row: two arms may not share one
        if arm.name in seen:
            field = {"plan": "eval.strategies", "baseline": "eval.baselines", "private": "eval.budgets",
                     "active": "eval.active.strategy"}.get(arm.kind, f"eval.defenses.{arm.defense}")
            raise ConfigError(field, arm.name, "settings that give every arm its own name",
                              "two values give the same name (a repeated value, or values equal to 6 significant "
                              "digits)")
        seen[arm.name] = arm
    return arms
