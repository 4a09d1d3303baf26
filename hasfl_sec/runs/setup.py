"""Setting a run up: config in, validated data, model, fleet, plan and simulated clock out.

``prepare(config)`` turns a config into everything a run needs -- data, partitions, model and its
measured profile, fleet, plan, channel and the latency of one round -- and validates all of it
before anything touches the disk. :func:`hasfl_sec.runs.training.train` then trains and writes the run
directory described in :mod:`hasfl_sec.results`. The CLI is a thin layer over these.

Example::

    from hasfl_sec import load_config, train
    result = train(load_config(overrides=["train.rounds=20"]), out_dir="runs/demo")
    result.rounds.tail()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..config import ExperimentConfig
from ..data.datasets import ImageDataset, load_dataset
from ..data.partitioning import PARTITIONS, partition
from ..defenses.base import Defense
from ..defenses.build import build_defenses, run_defense_label
from ..defenses.noise import SmashedNoise
from ..errors import ConfigError, check
from ..fleet import FLEETS, Fleet, generate_fleet, load_fleet
from ..fleet.channel import ChannelModel, make_channel
from ..models import ModelProfile, SplitModel, build_model, profile_model
from ..planning.bound import BoundConstants
from ..planning.strategies import STRATEGIES, PlanContext, make_plan
from ..planning.warmup import bound_for
from ..seeding import derive_seed, seed_everything
from ..sfl.clock import SimClock, plan_costs
from ..sfl.latency import RoundLatency, round_latency
from ..sfl.parties import HONEST, Parties
from ..sfl.plan import Plan
from ..sfl.trainer import SFLTrainer
from .limits import check_resources

__all__ = ["Setup", "prepare", "config_dataset", "resolve_device", "make_fleet"]

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "cpu or auto on this machine", "no CUDA device is available")
    return torch.device(name)


@dataclass
class Setup:
    """Everything a run is built from, validated."""

    config: ExperimentConfig
    dataset: ImageDataset
    parts: list[np.ndarray]
    model: SplitModel
    profile: ModelProfile
    fleet: Fleet
    plan: Plan
    latency: RoundLatency
    device: torch.device
    context: PlanContext
    channel: ChannelModel

    def defenses(self, label: str = "defense", seed: int | None = None) -> list[Defense]:
        """The defenses the config's ``defense`` section names, freshly built and seeded.

        ``label`` (and ``seed``, default the run's) key their seeds: the trainer uses the
        default; an adaptive attacker that simulates the defense on its own data passes another
        label, so it never reuses the victim's noise.

        A privacy-constrained plan (``hasfl-private`` ...) carries per-device noise; it is appended
        as a :class:`~hasfl_sec.defenses.noise.SmashedNoise` with one sigma per device (nearest the
        wire), and a config that also uses the ``noise`` defense is refused: one noise source per run.
        """
        seed = self.config.seed if seed is None else seed
        defenses = build_defenses(self.config.defense, seed=seed, label=label)
        if self.plan.noisy:
            if "noise" in self.config.defense.use:
                raise ConfigError("defense.use", self.config.defense.use, "no noise defense with a noisy plan",
                                  f"plan {self.plan.strategy} already adds per-device noise (privacy.budget)")
            params = SmashedNoise.Params(sigma=list(self.plan.noise_sigma),  # type: ignore[arg-type]
                                         seed=derive_seed(seed, label, "plan-noise"))
            defenses.append(SmashedNoise(params))
        return defenses

    def defense_label(self) -> str:
        """What :meth:`defenses` applies, for tables: the config's defenses and any plan noise."""
        return run_defense_label(self.config.defense, self.plan)

    def trainer(self, defenses: Sequence[Defense] = (), parties: Parties = HONEST) -> SFLTrainer:
        """A fresh trainer for this setup: same seed, the simulated clock of its channel, the
        config's defenses followed by ``defenses`` (extra hooks, for example a test's), and
        ``parties`` (a malicious server, devices' monitors; honest by default)."""
        clock = SimClock(self.profile, self.channel, self.config.train.agg_interval)
        hooks = [*self.defenses(), *defenses]
        return SFLTrainer(self.model, self.dataset, self.parts, self.plan, self.config.train, seed=self.config.seed,
                          clock=clock, device=self.device, defenses=hooks, replanner=self.replan,
                          replan_every=self.config.channel.reoptimize_every, parties=parties)

    def replan(self, t: int) -> Plan:
        """A new plan made on the rates observed in round ``t`` (same strategy, same bound)."""
        if self.context.bound_needed():
            self.context.bound()  # computed once on the shared context, not on every copy
        return make_plan(self.context.on_fleet(self.channel.fleet_at(t)))


def make_fleet(cfg: ExperimentConfig) -> Fleet:
    """The fleet a config names: a preset, a fleet file, or a generated fleet."""
    f = cfg.fleet
    fleet_seed = derive_seed(cfg.seed if f.seed is None else f.seed, "fleet")
    if f.file and f.file in FLEETS:
        return FLEETS.get(f.file)(f.num_devices, fleet_seed)
    if f.file:  # a composed file without its own seed is drawn at the fleet seed, as a preset is
        return load_fleet(f.file, seed=fleet_seed)
    return generate_fleet(num_devices=f.num_devices, heterogeneity=f.heterogeneity, seed=fleet_seed)


def _check_tap(cfg: ExperimentConfig, n: int) -> None:
    t = cfg.tap
    for d in t.devices or ():
        check(0 <= d < n, "tap.devices", t.devices, f"device indices in 0..{n - 1}")
    for r in t.rounds or ():
        check(1 <= r <= cfg.train.rounds, "tap.rounds", t.rounds, f"rounds in 1..{cfg.train.rounds}")


def config_dataset(cfg: ExperimentConfig) -> ImageDataset:
    """The train/test data the config's ``data`` section names, split by its seed."""
    d = cfg.data
    return load_dataset(d.dataset, data_root=d.data_root, image_size=d.image_size, context=d.context, seed=cfg.seed,
                        test_fraction=d.test_fraction)


def prepare(config: ExperimentConfig, *, fleet: Fleet | None = None, plan: Plan | None = None,
            bound: BoundConstants | None = None) -> Setup:
    """Load data, build the model and fleet, make the plan; raise ConfigError on any bad input.

    ``fleet`` and ``plan`` replace the ones the config would make (a resumed run uses the fleet
    and plan saved in its directory, so editing a fleet file cannot change a run half-way).
    ``bound`` gives the planners constants already estimated (``hasfl-sec eval`` estimates them
    once for every plan it compares) instead of a warm-up or ``optimizer.bound_file``.
    """
    cfg = config.validate()
    device = resolve_device(cfg.device)
    STRATEGIES.get(cfg.plan.strategy)  # an unknown planner is refused before the data are read
    check_resources(cfg)
    d = cfg.data
    PARTITIONS.get(d.partition)
    fleet = fleet or make_fleet(cfg)  # a bad fleet file is refused before the data are read
    _check_tap(cfg, fleet.num_devices)
    seed_everything(cfg.seed)
    dataset = config_dataset(cfg)
    parts = partition(dataset.strata, fleet.num_devices, scheme=d.partition, alpha=d.alpha, seed=cfg.seed,
                      min_size=d.min_samples_per_device)
    torch.manual_seed(derive_seed(cfg.seed, "model"))
    m = cfg.model
    model = build_model(m.name, in_channels=dataset.in_channels, num_classes=dataset.num_classes,
                        image_size=dataset.image_size, norm=m.norm, width=m.width, dropout=m.dropout)
    # A defense may need another model (DP-SGD: Opacus replaces BatchNorm, or refuses the model with
    # a ConfigError); done once here so the profile, Setup.model and every device copy agree.
    for d in build_defenses(cfg.defense, seed=cfg.seed):
        model = d.prepare_model(model)
    profile = profile_model(model)
    channel = make_channel(cfg.channel.model, fleet, seed=derive_seed(cfg.seed, "channel"),
                           coherence_rounds=cfg.channel.coherence_rounds)

    def bound_fn() -> BoundConstants:
        with torch.random.fork_rng():  # the warm-up and pilots must not shift the run's own RNG
            return bound_for(cfg, model, dataset, parts, device)

    ctx = PlanContext(cfg, fleet, model, profile, bound_fn, dataset=dataset, device=device)
    if bound is not None:
        ctx.set_bound(bound)
    if plan is None:
        plan = make_plan(ctx)
    latency = round_latency(fleet, plan.batch_sizes, plan_costs(profile, plan))
    logger.info(
        "setup %s: %s (%d train / %d test), model %s with %d blocks, fleet %s (%d devices), plan %s, "
        "simulated round %.4g s + aggregation %.4g s every %d rounds",
        cfg.name, dataset.name, len(dataset.y_train), len(dataset.y_test), m.name, model.num_blocks,
        fleet.name, fleet.num_devices, plan.strategy, latency.split_round, latency.aggregation,
        cfg.train.agg_interval,
    )
    return Setup(cfg, dataset, parts, model, profile, fleet, plan, latency, device, ctx, channel)


