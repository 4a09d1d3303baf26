"""Experiment configuration: plain dataclasses, loaded from YAML/TOML/JSON plus ``--set`` overrides.

The config is the single description of a run. It is validated before anything is created on
disk, so a mistake never leaves a half-written run directory behind. Every field has a default;
``ExperimentConfig()`` is the run that ``hasfl-sec train`` performs with no arguments.

Overrides use dotted paths (``train.rounds=50``, ``plan.cut=[1,2,3]``); values are parsed as YAML
scalars or lists and then type-checked against the field, so ``train.rounds=abc`` is refused with
a message naming the field, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .defenses.build import check_defenses
from .defenses.registry import DEFENSES
from .errors import ConfigError, check, check_count
from .fileio import read_structured
from .fleet import FLEETS, load_fleet
from .privacy.profile import LEAKAGE_METRICS, check_sigma_grid
from .typed import apply_overrides, build_dataclass, merge

#: The values of ``train.execution`` (the executions registered in :mod:`hasfl_sec.sfl.execution`).
EXECUTION_NAMES: tuple[str, ...] = ("batched", "per-device")

__all__ = ["EXECUTION_NAMES",
           "DataConfig", "ModelConfig", "FleetConfig", "PlanConfig", "TrainConfig", "TapConfig", "OptimizerConfig",
           "ChannelConfig", "DefenseConfig", "PrivacyConfig", "ExperimentConfig", "load_config", "config_from_dict"]

Cut = Union[int, str]


#: The most devices a fleet may have: more than any bundled data set has training samples (a
#: device needs at least one), and a generated fleet of ten million would take minutes to draw.
MAX_DEVICES = 100_000
#: The longest text sequence ``data.context`` accepts (attention costs grow with its square).
MAX_CONTEXT = 4096
#: The largest image side ``data.image_size`` accepts; whether the resized data set and the
#: model's activations fit in memory is checked on top (:func:`hasfl_sec.runs.setup.check_resources`).
MAX_IMAGE_SIZE = 4096


@dataclass
class DataConfig:
    """Which data, how big the images are, and how it is split across devices.

    ``partition`` is ``iid`` or ``dirichlet`` (Hsu et al. 2019, concentration ``alpha``; smaller is
    more skewed). ``image_size`` null keeps the dataset's natural size. ``context`` is the number
    of characters per sequence of a text dataset (``pydoc``, ``secrets``, ``pydoc-secrets``);
    images ignore it.
    """

    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = 16
    context: int = 64
    test_fraction: float = 0.2
    partition: str = "dirichlet"
    alpha: float = 0.5
    min_samples_per_device: int = 8


@dataclass
class ModelConfig:
    """The split-able model. ``width`` null uses the architecture's default width."""

    name: str = "hecnn"
    norm: str = "group"
    width: int | None = None
    dropout: float = 0.0


@dataclass
class FleetConfig:
    """The edge devices: generated with a heterogeneity level, or from ``file``.

    ``file`` is a fleet file (YAML/JSON/TOML) or the name of a preset (``hasfl-sec list fleets``),
    which is generated with ``num_devices`` devices. ``seed`` seeds the draw of a generated fleet,
    a preset or a fleet file's ``compose:`` list that gives no seed of its own (docs/fleets.md);
    null: the run's ``seed``. Fixing it keeps one fleet while the training seed varies.
    """

    num_devices: int = 20
    heterogeneity: str = "high"
    file: str | None = None
    seed: int | None = None


@dataclass
class PlanConfig:
    """Per-device batch size and cut.

    ``strategy`` names how the plan is made (``hasfl-sec list strategies``). ``fixed`` takes
    ``batch_size`` and ``cut`` as given: one value for every device or a list with one value per
    device. ``tiered`` ranks devices by compute and gives faster tiers deeper cuts drawn from
    ``candidate_cuts``. Cuts are block indices (cut c = first c blocks on the device) or block names.
    """

    strategy: str = "tiered"
    batch_size: Union[int, list[int]] = 16
    cut: Union[Cut, list[Cut]] = 2
    candidate_cuts: list[Cut] = field(default_factory=lambda: [1, 2, 3, 4])


@dataclass
class TrainConfig:
    """The HASFL training loop (docs/hasfl.md section 1.2).

    One round = one mini-batch step on every device. ``agg_interval`` is I: client-side and
    non-common server-side layers are averaged every I rounds; the common layers every round.
    ``agg_weighting`` is ``uniform`` (1/N, matching the paper's objective) or ``data`` (|D_i|).

    ``share_labels`` false is the label-private (U-shaped) variant: the classifier's last block
    runs on the devices, which compute the loss, so the edge server never receives labels (the
    tap records ``labels=None``). The devices' copies of that block are kept identical by
    averaging their gradients every round, exactly as the common part is, so the optimisation is
    numerically the same as with shared labels; only what the server observes changes. Label
    inference attacks then have to work from the cut-layer gradients.

    ``execution`` is how a round's arithmetic runs (:mod:`hasfl_sec.sfl.execution`): ``batched``
    (default) runs devices that share a cut and a batch size as one vectorized computation and
    falls back to ``per-device``, the reference, where it cannot run (DP-SGD, Poisson sampling,
    device-side dropout); both train the same model within float rounding.
    """

    rounds: int = 150
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    agg_interval: int = 5
    agg_weighting: str = "uniform"
    eval_every: int = 10
    eval_batch_size: int = 512
    checkpoint_every: int = 25
    share_labels: bool = True
    execution: str = "batched"


@dataclass
class TapConfig:
    """What the cut-layer tap keeps (the attack surface); off unless ``enabled``.

    ``rounds``/``devices`` null mean all; ``max_records`` bounds memory.
    """

    enabled: bool = False
    rounds: list[int] | None = None
    devices: list[int] | None = None
    max_records: int = 256
    keep_uploads: bool = True


@dataclass
class OptimizerConfig:
    """The HASFL optimizer (docs/hasfl.md sections 3-4) and the bound constants it works from.

    Constants come from a warm-up (``warmup_rounds`` rounds, ``probe_size`` probe samples) or from
    ``bound_file`` written by an earlier ``hasfl-sec optimize --save-bound``. With
    ``target_accuracy`` set (the default), the bound is then calibrated against short pilot
    trainings (at most ``pilot_rounds`` rounds each; :mod:`hasfl_sec.planning.calibrate`) and the target is
    "reach this test accuracy". With ``target_accuracy: null`` the literal Theorem 1 is used and
    the target epsilon (the averaged squared gradient norm of Corollary 1) is ``target_ratio``
    times the squared gradient norm at initialisation, or, when that is null, ``(1 + floor_slack)``
    times the smallest bound floor any plan can reach. ``beta_scale`` and ``drift_const`` (C of
    Theorem 1) scale the literal bound; batch sizes are integers in [1, b_max].
    """

    b_max: int = 64
    target_accuracy: float | None = 0.9
    pilot_rounds: int = 1000
    target_ratio: float | None = None
    floor_slack: float = 1.0
    warmup_rounds: int = 5
    probe_size: int = 256
    warmup_batch: int = 16
    beta_scale: float = 1.0
    drift_const: float = 4.0
    bound_file: str | None = None
    max_iters: int = 50
    tol: float = 1e-4


@dataclass
class ChannelConfig:
    """Link rates during training (does a plan go stale when channels fade? docs/hasfl.md section 7).

    ``model`` is ``static`` (the fleet's rates every round) or ``rayleigh`` (block fading around
    each device's mean gain, redrawn every ``coherence_rounds`` rounds). With
    ``reoptimize_every`` k > 0 (a multiple of ``train.agg_interval``) the plan is re-solved every k
    rounds on the rates observed in the round just finished; 0 keeps the first plan.
    """

    model: str = "static"
    coherence_rounds: int = 1
    reoptimize_every: int = 0


@dataclass
class PrivacyConfig:
    """Privacy-constrained planning (strategies ``hasfl-private``, ``sfl-private``, ...).

    Every device i gets a leakage ``budget`` (one number, or a list with one per device) on
    ``metric`` (higher = more leakage; registered in :data:`hasfl_sec.privacy.LEAKAGE_METRICS`):
    ``dfil_psnr`` (dB: no unbiased attacker's expected
    reconstruction beats this PSNR; Maeng et al., NeurIPS 2023), ``dfil``, or ``ssim`` / ``psnr``
    of the strongest audited attack. The planner picks each device's cut and its Gaussian
    smashed-data noise from ``sigma_grid`` (relative: x the cut's smashed-data RMS); the least
    noise meeting the budget is used, and it costs rounds through the bound's variance term
    (:mod:`hasfl_sec.privacy.noise_cost`).

    ``profile`` is ``dfil`` (predicted from the dFIL bound of a copy of the model trained centrally
    for ``profile_epochs`` epochs, on ``probe_images`` training images, dFIL reduced over them by
    ``reduction``: ``mean`` or ``max``) or the path of a measured leakage CSV (columns cut, value
    and optionally metric, sigma; e.g. an audit's leakage.csv). ``noise_pairs`` is the number of
    noise pairs per probe image with which the variance the noise adds is measured
    (:class:`hasfl_sec.privacy.NoiseCost`, on the run's initial and on the profiled model).
    """

    budget: Union[float, list[float]] = 20.0
    metric: str = "dfil_psnr"
    sigma_grid: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5,
                                                             2.0, 3.0, 5.0])
    profile: str = "dfil"
    profile_epochs: int = 5
    probe_images: int = 32
    reduction: str = "mean"
    noise_pairs: int = 2


def _check_privacy(p: PrivacyConfig) -> None:
    """Range checks of the privacy section (the budget's length is checked against the fleet later)."""
    LEAKAGE_METRICS.get(p.metric)
    budgets = p.budget if isinstance(p.budget, list) else [p.budget]
    check(len(budgets) >= 1 and all(math.isfinite(b) for b in budgets), "privacy.budget", p.budget,
          "a finite number, or a non-empty list of finite numbers (one per device)")
    check_sigma_grid(p.sigma_grid)
    check(bool(p.profile), "privacy.profile", p.profile, "dfil, or the path of a measured leakage CSV")
    check(p.profile_epochs >= 0, "privacy.profile_epochs", p.profile_epochs, "an integer >= 0")
    check(p.probe_images >= 2, "privacy.probe_images", p.probe_images, "an integer >= 2")
    check(p.reduction in ("mean", "max"), "privacy.reduction", p.reduction, ["mean", "max"])
    check(p.noise_pairs >= 1, "privacy.noise_pairs", p.noise_pairs, "an integer >= 1")


def _defense_config_class() -> type:
    """``DefenseConfig``: ``use`` plus one section per registered defense, typed by its ``Params``.

    Built from the registry so that a new defense gets its config section (and ``--set
    defense.<name>.<param>=...`` overrides, type-checked like every other field) by registering
    itself. Defenses registered after this module is imported have no section.
    """
    fields: list[Any] = [("use", list[str], field(default_factory=list))]
    for name in DEFENSES.names():
        params = DEFENSES.get(name).Params
        fields.append((name, params, field(default_factory=params)))
    doc = (
        "Defenses applied during training, in the order of ``use`` (the last one is nearest the wire).\n\n"
        "``use`` lists registered defense names (``hasfl-sec list defenses``); each has a section of\n"
        "its own parameters, used only when the name is in ``use``: "
        + ", ".join(DEFENSES.names()) + "."
    )
    return dataclasses.make_dataclass("DefenseConfig", fields, namespace={"__doc__": doc,
                                                                         "__module__": __name__})


DefenseConfig = _defense_config_class()


@dataclass
class ExperimentConfig:
    """One run: data, model, fleet, plan, training, tap, optimizer, channel, defense and privacy settings,
    seed and compute device."""

    name: str = "hasfl"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tap: TapConfig = field(default_factory=TapConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)  # type: ignore[valid-type]
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (YAML/JSON-safe)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The config as YAML text, keys in declaration order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def config_hash(self) -> str:
        """Eight hex digits identifying the resolved config."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def validate(self) -> "ExperimentConfig":
        """Check ranges that types alone do not capture; returns self."""
        d, t, p, tap = self.data, self.train, self.plan, self.tap
        check(self.device in ("auto", "cpu", "cuda"), "device", self.device, ["auto", "cpu", "cuda"])
        check(0.0 < d.test_fraction < 1.0, "data.test_fraction", d.test_fraction, "a number in (0, 1)")
        check(d.image_size is None or 4 <= d.image_size <= MAX_IMAGE_SIZE, "data.image_size", d.image_size,
              f"an integer from 4 to {MAX_IMAGE_SIZE} or null (the natural size)")
        check(math.isfinite(d.alpha) and d.alpha > 0, "data.alpha", d.alpha, "a finite number > 0")
        check(2 <= d.context <= MAX_CONTEXT, "data.context", d.context, f"an integer from 2 to {MAX_CONTEXT}")
        check_count("data.min_samples_per_device", d.min_samples_per_device)
        check(1 <= self.fleet.num_devices <= MAX_DEVICES, "fleet.num_devices", self.fleet.num_devices,
              f"an integer from 1 to {MAX_DEVICES:,}")
        check_count("train.rounds", t.rounds)
        check(math.isfinite(t.lr) and t.lr > 0, "train.lr", t.lr, "a finite number > 0")
        check(0.0 <= t.momentum < 1.0, "train.momentum", t.momentum, "a number in [0, 1)")
        check(math.isfinite(t.weight_decay) and t.weight_decay >= 0.0, "train.weight_decay", t.weight_decay,
              "a finite number >= 0")
        check_count("train.agg_interval", t.agg_interval)
        check(t.agg_weighting in ("uniform", "data"), "train.agg_weighting", t.agg_weighting, ["uniform", "data"])
        check(t.execution in EXECUTION_NAMES, "train.execution", t.execution, list(EXECUTION_NAMES))
        check_count("train.eval_every", t.eval_every)
        check_count("train.eval_batch_size", t.eval_batch_size)
        check_count("train.checkpoint_every", t.checkpoint_every, low=0)
        sizes = p.batch_size if isinstance(p.batch_size, list) else [p.batch_size]
        for b in sizes:
            check(b >= 1, "plan.batch_size", p.batch_size, "integers >= 1")
        check(len(p.candidate_cuts) >= 1, "plan.candidate_cuts", p.candidate_cuts, "a non-empty list of cuts")
        check_count("tap.max_records", tap.max_records, low=0)
        o = self.optimizer
        check_count("optimizer.b_max", o.b_max)
        check(o.target_accuracy is None or 0.0 < o.target_accuracy < 1.0, "optimizer.target_accuracy",
              o.target_accuracy, "a number in (0, 1) or null")
        check_count("optimizer.pilot_rounds", o.pilot_rounds)
        check(o.target_ratio is None or o.target_accuracy is None, "optimizer.target_ratio", o.target_ratio,
              "null while optimizer.target_accuracy is set", "set optimizer.target_accuracy=null to use a ratio")
        check(o.target_ratio is None or (math.isfinite(o.target_ratio) and o.target_ratio > 0),
              "optimizer.target_ratio", o.target_ratio, "a finite number > 0 or null")
        check(math.isfinite(o.floor_slack) and o.floor_slack > 0, "optimizer.floor_slack", o.floor_slack,
              "a finite number > 0")
        check_count("optimizer.warmup_rounds", o.warmup_rounds)
        check_count("optimizer.probe_size", o.probe_size, low=2)
        check_count("optimizer.warmup_batch", o.warmup_batch)
        for name in ("beta_scale", "drift_const", "tol"):
            value = getattr(o, name)
            check(math.isfinite(value) and value > 0, f"optimizer.{name}", value, "a finite number > 0")
        check_count("optimizer.max_iters", o.max_iters)
        ch = self.channel
        check_count("channel.coherence_rounds", ch.coherence_rounds)
        check(ch.reoptimize_every >= 0 and ch.reoptimize_every % t.agg_interval == 0, "channel.reoptimize_every",
              ch.reoptimize_every, f"0 or a multiple of train.agg_interval = {t.agg_interval}",
              "plans change only right after an aggregation")
        check_defenses(self.defense)
        _check_privacy(self.privacy)
        return self


def config_from_dict(values: dict[str, Any]) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a nested dict (unknown keys refused)."""
    if not isinstance(values, dict):
        raise ConfigError("config", values, "a mapping of sections (data, model, fleet, plan, train, tap, optimizer, channel, defense, privacy)")
    return build_dataclass(ExperimentConfig, values, "").validate()


def _read_file(path: Path) -> dict[str, Any]:
    """The config file's contents; an empty file is an empty mapping."""
    return read_structured(path, "--config") or {}


#: Training settings a model needs where the defaults (plain SGD, a target of 0.9, tuned on the CNNs)
#: do not train it; applied after a command's defaults and before the config file and overrides,
#: so anything the user sets wins. Measured (benchmarks/RESULTS.md, "Transformers"): with plain
#: SGD vit-tiny stayed at chance for 100 rounds and the calibration pilots never reached 0.9 on
#: digits; with momentum 0.9 it reaches 0.8 in about 250 rounds. gpt-char reaches 0.30
#: next-character accuracy on pydoc in about 110 rounds and 0.35 in 300.
MODEL_DEFAULTS: dict[str, tuple[str, ...]] = {
    "vit-tiny": ("train.momentum=0.9", "optimizer.target_accuracy=0.8", "train.rounds=300"),
    "gpt-char": ("train.momentum=0.9", "optimizer.target_accuracy=0.3", "train.rounds=200"),
}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                defaults: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """The default config, changed by ``defaults`` (a command's own defaults) and the model's own
    (:data:`MODEL_DEFAULTS`), then updated from ``path`` (if given) and then from ``overrides``."""
    config = _load(path, overrides, defaults)
    extra = MODEL_DEFAULTS.get(config.model.name)
    return _load(path, overrides, (*defaults, *extra)) if extra else config


def _load(path: str | Path | None, overrides: list[str] | tuple[str, ...],
          defaults: list[str] | tuple[str, ...]) -> ExperimentConfig:
    base = apply_overrides(ExperimentConfig().to_dict(), defaults)
    given = {}
    if path is not None:
        given = _read_file(Path(path))
        base = merge(base, given, "")
    config = config_from_dict(apply_overrides(base, overrides))
    fleet = given.get("fleet") if isinstance(given, dict) else None
    explicit = (isinstance(fleet, dict) and "num_devices" in fleet) or any(
        item.partition("=")[0].strip() == "fleet.num_devices" for item in overrides)
    return _with_fleet_file(config, explicit)


def _with_fleet_file(config: ExperimentConfig, explicit: bool) -> ExperimentConfig:
    """Read ``fleet.file`` now (a bad file is refused before any data is read) and make
    ``fleet.num_devices`` say how many devices it holds: a count the user gave that differs is a
    contradiction, refused; the default count is replaced, so a run's config.yaml records the
    fleet it trained."""
    f = config.fleet
    if not f.file or f.file in FLEETS:
        return config
    count = load_fleet(f.file, seed=0).num_devices  # a composed file's count does not depend on the seed
    if count == f.num_devices:
        return config
    check(not explicit, "fleet.num_devices", f.num_devices, f"{count}, the number of devices in fleet file "
          f"{f.file}, or no value", "a fleet file fixes the fleet")
    return dataclasses.replace(config, fleet=dataclasses.replace(f, num_devices=count))
