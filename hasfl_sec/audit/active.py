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
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..attacks.registry import ACTIVE_ATTACKS
from ..config import ExperimentConfig
from ..defenses.params import check_values
from ..errors import check, check_count
from ..metrics.image import mse, psnr, ssim
from ..runs.setup import prepare
from ..seeding import derive_seed
from ..sfl.parties import DeviceMonitor, Parties
from ..sfl.protocol import Exchange, GroundTruth, Upload
from ..sfl.rounds import RoundRecord

__all__ = ["HijackSettings", "HijackResult", "ReconstructionMeter", "run_hijack"]

logger = logging.getLogger(__name__)


@dataclass
class HijackSettings:
    """Which active attack, its parameters, and how often and on how many images it is measured."""

    attack: str = "fsha"
    params: dict[str, Any] = field(default_factory=dict)
    measure_every: int = 10
    images: int = 32

    def validate(self, option: str = "", params_prefix: str = "attack.",
                 num_devices: int | None = None) -> "HijackSettings":
        """Check every setting before any work. Errors name ``<option><setting>`` (dashed after
        ``--``) and ``<params_prefix><attack>.<param>``; with ``num_devices`` (the fleet's size)
        the attacked device ids are checked too."""
        def name(setting: str) -> str:
            return option + (setting.replace("_", "-") if option == "--" else setting)

        check(self.attack in ACTIVE_ATTACKS.names(), name("attack"), self.attack, ACTIVE_ATTACKS.names())
        cls = ACTIVE_ATTACKS.get(self.attack)
        values = check_values(cls.Params, self.params, f"{params_prefix}{self.attack}.", self.attack)
        devices = values.get("devices")
        if num_devices is not None and devices:
            check(max(devices) < num_devices, f"{params_prefix}{self.attack}.devices", devices,
                  f"device ids below {num_devices}, the fleet's size")
        check_count(name("measure_every"), self.measure_every)
        check_count(name("images"), self.images)
        return self


class ReconstructionMeter:
    """An observer of the hijacked devices' exchanges: the attacker's inversion of each, scored
    against the private batch behind it (the ground truth the runner holds)."""

    def __init__(self, attack: Any, rounds: int, every: int, images: int, baseline: torch.Tensor) -> None:
        self.attack, self.rounds, self.every, self.images = attack, rounds, every, images
        self.baseline = baseline  # the mean of the attacker's own images
        self.records: list[dict[str, Any]] = []
        #: the latest (originals, reconstructions) of each hijacked device, keyed like an audit's samples
        self.samples: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def wants(self, round: int, device: int) -> bool:
        return self.attack.replaces(round, device) and (round % self.every == 0 or round == self.rounds)

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
            "mse": float(mse(rec, x).mean()), "psnr": float(psnr(rec, x).mean()), "ssim": float(ssim(rec, x).mean()),
            "baseline_mse": float(mse(guess, x).mean()), "baseline_ssim": float(ssim(guess, x).mean()),
        })

    def on_upload(self, upload: Upload) -> None:  # pragma: no cover - wants_upload is always False
        pass


@dataclass
class HijackResult:
    """One hijacked training: per-round reconstruction scores, the attacker's own losses, the
    run's rounds (accuracy collapses where the task is not trained), and the threat model."""

    settings: HijackSettings
    threat_model: str
    targets: list[int]
    cuts: list[int]
    records: list[dict[str, Any]]
    attacker: list[dict[str, float]]
    rounds: list[RoundRecord]
    samples: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    monitors: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "threat_model": self.threat_model, "targets": self.targets,
                "cuts": self.cuts, "records": self.records, "attacker": self.attacker,
                "rounds": [vars(r) for r in self.rounds]}


def run_hijack(config: ExperimentConfig, settings: HijackSettings, *,
               monitors: Sequence[DeviceMonitor] = (),
               on_round: Callable[[RoundRecord], None] | None = None) -> HijackResult:
    """Train ``config``'s run with the active attack of ``settings`` as the edge server (and the
    devices' ``monitors``), measuring the attacker's reconstructions as it goes."""
    settings.validate(num_devices=config.fleet.num_devices)
    setup = prepare(config)
    cls = ACTIVE_ATTACKS.get(settings.attack)
    params = cls.Params(**check_values(cls.Params, settings.params, f"attack.{settings.attack}.", settings.attack))
    template = copy.deepcopy(setup.model)
    # the pilot's architecture: the server distributes the model in SFL, so it knows the client part;
    # its weights are the attacker's own draw (the run's random stream is left as it was)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "attacker-template"))
        for m in template.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    public = setup.dataset.x_test  # the held-out split: the victims' distribution, none of their samples
    attack = cls(params, public=public, fresh_client=lambda cut: copy.deepcopy(template.client_part(cut)),
                 num_devices=setup.plan.num_devices, device=setup.device)
    trainer = setup.trainer(parties=Parties(server=attack, monitors=tuple(monitors)))
    meter = ReconstructionMeter(attack, config.train.rounds, settings.measure_every, settings.images,
                                attack.public.mean(0, keepdim=True).cpu())
    trainer.add_observer(meter)
    logger.info("active attack %s: devices %s hijacked from round %d; %s", settings.attack, sorted(attack.targets),
                params.start_round, attack.threat_model.describe())
    trainer.run(on_round_end=(lambda _t, r: on_round(r)) if on_round else None)
    return HijackResult(settings, attack.threat_model.describe(), sorted(attack.targets),
                        sorted({trainer.cuts[i] for i in attack.targets}), meter.records, list(attack.history),
                        list(trainer.history), meter.samples, list(monitors))
