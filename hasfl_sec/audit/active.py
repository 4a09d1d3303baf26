"""Active attacks: a training run with a malicious edge server, and what it reconstructs as it goes.

A passive attack reads a finished run's exchanges; an active one changes the training itself (a
hijacked device learns the attacker's task, not the run's), so it is its own training: this
module builds the run from its config, hands the trainer the attacker's behaviour through the
protocol of :mod:`hasfl_sec.sfl.parties`, and measures, every ``measure_every`` rounds, how well
the attacker inverts each hijacked device's smashed data of that round (MSE, PSNR and SSIM of
:mod:`hasfl_sec.metrics.image` against the device's private batch, which only this runner holds --
the validation error of Pasquini et al., CCS 2021, section 4, an oracle figure the attacker cannot
compute). Next to it, the error of the attacker's best guess without any attack -- the mean image
of its own data -- is the baseline a reconstruction must beat to show leakage.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from ..attacks.registry import ACTIVE_ATTACKS
from ..config import ExperimentConfig
from ..data.text import TEXT_DATASETS
from ..defenses.params import check_values
from ..defenses.registry import DETECTORS
from ..errors import check, check_count
from ..fleet import fleet_classes
from ..metrics.image import mse, psnr, ssim
from ..planning.bound import BoundConstants
from ..runs.setup import Setup, prepare
from ..seeding import derive_seed
from ..sfl.parties import Parties
from ..sfl.protocol import Exchange, GroundTruth, Upload
from ..sfl.rounds import RoundRecord
from .detection import build_detectors, detection_rows, fresh_copy

__all__ = ["HijackSettings", "HijackResult", "ReconstructionMeter", "run_hijack", "hijack_setup"]

logger = logging.getLogger(__name__)


@dataclass
class HijackSettings:
    """Which active attack (None: an honest server), its parameters, the devices' detectors and
    theirs, and how often and on how many images the attacker's reconstructions are scored."""

    attack: str | None = "fsha"
    params: dict[str, Any] = field(default_factory=dict)
    detectors: list[str] = field(default_factory=list)
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    measure_every: int = 10
    images: int = 32

    def validate(self, option: str = "", params_prefix: str = "attack.", num_devices: int | None = None,
                 detector_prefix: str = "detector.", rounds: int | None = None) -> "HijackSettings":
        """Check every setting before any work. Errors name ``<option><setting>`` (dashed after
        ``--``), ``<params_prefix><attack>.<param>`` and ``<detector_prefix><detector>.<param>``;
        with ``num_devices`` (the fleet's size) the attacked device ids are checked too, and with
        ``rounds`` (the run's) a hijacking that would start after the last round."""
        def name(setting: str) -> str:
            return option + (setting.replace("_", "-") if option == "--" else setting)

        if self.attack is not None:
            check(self.attack in ACTIVE_ATTACKS.names(), name("attack"), self.attack, ACTIVE_ATTACKS.names())
            cls = ACTIVE_ATTACKS.get(self.attack)
            values = check_values(cls.Params, self.params, f"{params_prefix}{self.attack}.", self.attack)
            devices = values.get("devices")
            if num_devices is not None and devices:
                check(max(devices) < num_devices, f"{params_prefix}{self.attack}.devices", devices,
                      f"device ids below {num_devices}, the fleet's size")
            start = values.get("start_round")
            if rounds is not None and start is not None:
                check(start <= rounds, f"{params_prefix}{self.attack}.start_round", start,
                      f"a round of the run (at most train.rounds = {rounds})", "the server would hijack nothing")
        for detector in self.detectors:
            check(detector in DETECTORS.names(), name("detectors"), detector, DETECTORS.names())
        check(len(set(self.detectors)) == len(self.detectors), name("detectors"), self.detectors,
              "each detector at most once")
        for detector, values in self.detector_params.items():
            check(detector in self.detectors, f"{detector_prefix}{detector}", values,
                  "parameters of a detector being run: " + (", ".join(self.detectors) or "none"))
            check_values(DETECTORS.get(detector).Params, values, f"{detector_prefix}{detector}.", detector)
        check(self.attack is not None or self.detectors, name("attack"), None,
              "an active attack, or detectors to run against an honest server")
        check_count(name("measure_every"), self.measure_every)
        check_count(name("images"), self.images)
        return self


class ReconstructionMeter:
    """An observer of the hijacked devices' exchanges: the attacker's inversion of each, scored
    against the private batch behind it (the ground truth the runner holds), every ``every``
    rounds, at the last round, and at the round any detector fires on the device."""

    def __init__(self, attack: Any, rounds: int, every: int, images: int, baseline: torch.Tensor,
                 detectors: Sequence[Any] = (), classes: Sequence[str] = ()) -> None:
        self.attack, self.rounds, self.every, self.images = attack, rounds, every, images
        self.classes = list(classes)  # each device's class (fleet_classes), for per-class figures
        self.baseline = baseline  # the mean of the attacker's own images
        self.detectors = detectors
        self.records: list[dict[str, Any]] = []
        #: the latest (originals, reconstructions) of each hijacked device, keyed like an audit's samples
        self.samples: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def wants(self, round: int, device: int) -> bool:
        if not self.attack.replaces(round, device):
            return False
        return round % self.every == 0 or round == self.rounds or any(
            d.detected_round(device) == round for d in self.detectors)

    def wants_upload(self, round: int, device: int) -> bool:
        return False

    def on_exchange(self, exchange: Exchange, truth: GroundTruth) -> None:
        rec = self.attack.invert(exchange.cut, exchange.smashed[: self.images])
        if rec is None:
            return
        x = truth.inputs[: self.images]
        guess = self.baseline.expand_as(x)
        self.samples[(exchange.device, exchange.cut, self.attack.name)] = (x[:8].clone(), rec[:8].clone())
        self.records.append({
            "round": exchange.round, "device": exchange.device, "cut": exchange.cut, "images": len(x),
            "device_class": self.classes[exchange.device] if self.classes else "",
            "mse": float(mse(rec, x).mean()), "psnr": float(psnr(rec, x).mean()), "ssim": float(ssim(rec, x).mean()),
            "baseline_mse": float(mse(guess, x).mean()), "baseline_ssim": float(ssim(guess, x).mean()),
        })

    def on_upload(self, upload: Upload) -> None:  # pragma: no cover - wants_upload is always False
        pass


@dataclass
class HijackResult:
    """One training with an active attack and/or detectors: per-round reconstruction scores, the
    attacker's own losses, the run's rounds (accuracy falls where the task is not trained), the
    threat model, and each detector's outcome per device (``detections``)."""

    settings: HijackSettings
    threat_model: str
    targets: list[int]
    cuts: list[int]
    records: list[dict[str, Any]]
    attacker: list[dict[str, float]]
    rounds: list[RoundRecord]
    samples: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    detections: list[dict[str, Any]] = field(default_factory=list)
    defense: str = "none"
    classes: list[str] = field(default_factory=list)  # every device's class (fleet_classes)
    device_cuts: list[int] = field(default_factory=list)  # every device's cut

    def to_dict(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "threat_model": self.threat_model, "targets": self.targets,
                "cuts": self.cuts, "records": self.records, "attacker": self.attacker,
                "rounds": [vars(r) for r in self.rounds], "detections": self.detections, "defense": self.defense,
                "classes": self.classes, "device_cuts": self.device_cuts}


def _attacker(config: ExperimentConfig, settings: HijackSettings, setup: Setup) -> Any:
    """The active attack of ``settings`` for ``setup``'s run, or None for an honest server."""
    if settings.attack is None:
        return None
    cls = ACTIVE_ATTACKS.get(settings.attack)
    params = cls.Params(**check_values(cls.Params, settings.params, f"attack.{settings.attack}.", settings.attack))
    # the pilot's architecture: the server distributes the model in SFL, so it knows the client part;
    # its weights are the attacker's own draw (the run's random stream is left as it was)
    template = fresh_copy(setup.model, derive_seed(config.seed, "attacker-template"))
    public = setup.dataset.x_test  # the held-out split: the victims' distribution, none of their samples
    return cls(params, public=public, fresh_client=lambda cut: copy.deepcopy(template.client_part(cut)),
               num_devices=setup.plan.num_devices, device=setup.device, run_seed=config.seed)


def run_hijack(config: ExperimentConfig, settings: HijackSettings, *, bound: BoundConstants | None = None,
               choose: Callable[[Setup], list[int]] | None = None,
               on_round: Callable[[RoundRecord], None] | None = None) -> HijackResult:
    """Train ``config``'s run with the active attack of ``settings`` as the edge server (or an
    honest one) and the devices running ``settings.detectors``, measuring the attacker's
    reconstructions as it goes.

    ``bound`` gives the planner constants already estimated (as :func:`~hasfl_sec.runs.setup.prepare`);
    ``choose`` picks the hijacked devices once the plan is known (the evaluation hijacks one device
    per cut and device class of the plan it attacks), replacing the attack's ``devices`` parameter.
    """
    settings.validate(num_devices=config.fleet.num_devices, rounds=config.train.rounds)
    check(settings.attack is None or config.data.dataset not in TEXT_DATASETS, "--active", settings.attack,
          "none (an honest server, for the detectors) on text data",
          f"data.dataset {config.data.dataset!r} is text; {settings.attack}'s decoder reconstructs images")
    setup = prepare(config, bound=bound)
    if choose is not None and settings.attack is not None:
        settings = replace(settings, params={**settings.params, "devices": choose(setup)})
    return hijack_setup(setup, settings, on_round=on_round)


def hijack_setup(setup: Setup, settings: HijackSettings, *,
                 on_round: Callable[[RoundRecord], None] | None = None) -> HijackResult:
    """:func:`run_hijack` on a prepared run (``settings`` already validated)."""
    config = setup.config
    attack = _attacker(config, settings, setup)
    # detectors are fitted on the model every device starts from: an honest trainer's, laid out alike
    detectors = build_detectors(settings.detectors, settings.detector_params, setup.trainer() if settings.detectors
                                else None, num_classes=setup.dataset.num_classes, parts=setup.parts, seed=config.seed)
    trainer = setup.trainer(parties=Parties(server=attack, monitors=tuple(detectors)))
    targets = sorted(attack.targets) if attack is not None else []
    meter = None
    if attack is not None:
        meter = ReconstructionMeter(attack, config.train.rounds, settings.measure_every, settings.images,
                                    attack.public.mean(0, keepdim=True).cpu(), detectors, fleet_classes(setup.fleet))
        trainer.add_observer(meter)
        logger.info("active attack %s: devices %s hijacked; %s", settings.attack, targets,
                    attack.threat_model.describe())
    trainer.run(on_round_end=(lambda _t, r: on_round(r)) if on_round else None)
    records = meter.records if meter is not None else []
    return HijackResult(settings, attack.threat_model.describe() if attack is not None else "honest edge server",
                        targets, sorted({trainer.cuts[i] for i in targets}), records,
                        list(attack.history) if attack is not None else [], list(trainer.history),
                        meter.samples if meter is not None else {}, detection_rows(detectors, records, targets),
                        defense=setup.defense_label(), classes=fleet_classes(setup.fleet),
                        device_cuts=list(trainer.cuts))
