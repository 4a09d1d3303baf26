"""The Python API behind ``hasfl-sec train``: config in, trained run directory out.

``prepare(config)`` turns a config into everything a run needs -- data, partitions, model and its
measured profile, fleet, plan and the latency of one round -- and validates all of it before
anything touches the disk. ``train(config, out_dir=...)`` then trains and writes the run
directory described in :mod:`hasfl_sec.results`. The CLI is a thin layer over these two.

Example::

    from hasfl_sec import load_config, train
    result = train(load_config(overrides=["train.rounds=20"]), out_dir="runs/demo")
    result.rounds.tail()
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .config import ExperimentConfig, config_from_dict
from .data import ImageDataset, load_dataset, partition
from .defenses.base import Defense
from .bound import BoundConstants, estimate_bound
from .calibrate import calibrate_bound, default_pilots
from .errors import ConfigError, check
from .fileio import read_structured
from .channel import ChannelModel, make_channel
from .fleet import FLEETS, Fleet, generate_fleet, load_fleet
from .latency import CutCosts, RoundLatency, round_latency
from .models import ModelProfile, SplitModel, build_model, profile_model
from .plan import Plan, PlanContext, make_plan
from .results import RunDir, atomic_torch_save, metrics_frame
from .seeding import derive_seed, seed_everything
from .tap import CutLayerTap, TapSelector
from .trainer import RoundRecord, SFLTrainer

__all__ = ["Setup", "TrainResult", "prepare", "train", "resolve_device", "plan_costs", "SimClock", "bound_for",
           "make_fleet"]

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "cpu or auto on this machine", "no CUDA device is available")
    return torch.device(name)


def plan_costs(profile: ModelProfile, plan: Plan) -> list[CutCosts]:
    """Per-device latency inputs for ``plan``: the profile of each device's cut, in bits."""
    out = []
    for c in plan.cuts:
        p = profile.cut(c)
        out.append(
            CutCosts(
                client_fwd_flops=p.client_fwd_flops,
                client_bwd_flops=p.client_bwd_flops,
                server_fwd_flops=p.server_fwd_flops,
                server_bwd_flops=p.server_bwd_flops,
                smashed_bits=8.0 * p.smashed_bytes,
                client_model_bits=8.0 * p.client_param_bytes,
            )
        )
    return out


class SimClock:
    """Simulated seconds of round t: the latency model (HASFL.md 2.2) at the rates the channel
    realises in round t, for the plan in effect; T_A is added when t % I == 0."""

    def __init__(self, profile: ModelProfile, channel: ChannelModel, interval: int) -> None:
        self.profile = profile
        self.channel = channel
        self.interval = interval

    def latency(self, t: int, plan: Plan) -> RoundLatency:
        """The latency of round ``t`` under ``plan``."""
        return round_latency(self.channel.fleet_at(t), plan.batch_sizes, plan_costs(self.profile, plan))

    def __call__(self, t: int, plan: Plan) -> float:
        lat = self.latency(t, plan)
        return lat.split_round + (lat.aggregation if t % self.interval == 0 else 0.0)


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

    def trainer(self, defenses: Sequence[Defense] = ()) -> SFLTrainer:
        """A fresh trainer for this setup: same seed, the simulated clock of its channel."""
        clock = SimClock(self.profile, self.channel, self.config.train.agg_interval)
        return SFLTrainer(self.model, self.dataset, self.parts, self.plan, self.config.train, seed=self.config.seed,
                          clock=clock, device=self.device, defenses=defenses, replanner=self.replan,
                          replan_every=self.config.channel.reoptimize_every)

    def replan(self, t: int) -> Plan:
        """A new plan made on the rates observed in round ``t`` (same strategy, same bound)."""
        ctx = dataclasses.replace(self.context, fleet=self.channel.fleet_at(t), _problem=None)
        return make_plan(ctx)


def make_fleet(cfg: ExperimentConfig) -> Fleet:
    """The fleet a config names: a preset, a fleet file, or a generated fleet."""
    f, fleet_seed = cfg.fleet, derive_seed(cfg.seed, "fleet")
    if f.file and f.file in FLEETS:
        return FLEETS.get(f.file)(f.num_devices, fleet_seed)
    if f.file:
        return load_fleet(f.file)
    return generate_fleet(num_devices=f.num_devices, heterogeneity=f.heterogeneity, seed=fleet_seed)


def _check_tap(cfg: ExperimentConfig, n: int) -> None:
    t = cfg.tap
    for d in t.devices or ():
        check(0 <= d < n, "tap.devices", t.devices, f"device indices in 0..{n - 1}")
    for r in t.rounds or ():
        check(1 <= r <= cfg.train.rounds, "tap.rounds", t.rounds, f"rounds in 1..{cfg.train.rounds}")


def prepare(config: ExperimentConfig, *, fleet: Fleet | None = None, plan: Plan | None = None) -> Setup:
    """Load data, build the model and fleet, make the plan; raise ConfigError on any bad input.

    ``fleet`` and ``plan`` replace the ones the config would make (a resumed run uses the fleet
    and plan saved in its directory, so editing a fleet file cannot change a run half-way).
    """
    cfg = config.validate()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    d = cfg.data
    dataset = load_dataset(d.dataset, data_root=d.data_root, image_size=d.image_size, seed=cfg.seed,
                           test_fraction=d.test_fraction)
    fleet = fleet or make_fleet(cfg)
    _check_tap(cfg, fleet.num_devices)
    parts = partition(dataset.y_train, fleet.num_devices, scheme=d.partition, alpha=d.alpha, seed=cfg.seed,
                      min_size=d.min_samples_per_device)
    torch.manual_seed(derive_seed(cfg.seed, "model"))
    m = cfg.model
    model = build_model(m.name, in_channels=dataset.in_channels, num_classes=dataset.num_classes,
                        image_size=dataset.image_size, norm=m.norm, width=m.width, dropout=m.dropout)
    profile = profile_model(model)
    ctx = PlanContext(cfg, fleet, model, profile, lambda: bound_for(cfg, model, dataset, parts, device))
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
    channel = make_channel(cfg.channel.model, fleet, seed=derive_seed(cfg.seed, "channel"),
                           coherence_rounds=cfg.channel.coherence_rounds)
    return Setup(cfg, dataset, parts, model, profile, fleet, plan, latency, device, ctx, channel)



def bound_for(cfg: ExperimentConfig, model: SplitModel, dataset: ImageDataset, parts: Sequence[np.ndarray],
              device: torch.device) -> BoundConstants:
    """The bound constants of a config: from ``optimizer.bound_file`` or a fresh warm-up."""
    o = cfg.optimizer
    if o.bound_file:
        bound = BoundConstants.load(o.bound_file)
        check(bound.num_devices == len(parts) and bound.num_blocks == model.num_blocks, "optimizer.bound_file",
              o.bound_file, f"constants for {len(parts)} devices and a {model.num_blocks}-block model")
    else:
        bound = estimate_bound(model, dataset, parts, cfg.train, seed=cfg.seed, warmup_rounds=o.warmup_rounds,
                               probe_size=o.probe_size, warmup_batch=o.warmup_batch, beta_scale=o.beta_scale,
                               drift_const=o.drift_const, device=device)
    calibrated_for = ((bound.meta or {}).get("calibration") or {}).get("target_accuracy")
    if o.target_accuracy is not None and calibrated_for != o.target_accuracy:
        bound = calibrate_bound(bound, model, dataset, parts, cfg.train, seed=cfg.seed,
                                target_accuracy=o.target_accuracy, max_rounds=o.pilot_rounds,
                                pilots=default_pilots(model, o.b_max), device=device)
    return bound


@dataclass
class TrainResult:
    """What a training run produced. ``rounds`` and ``metrics`` are the CSV tables as DataFrames."""

    config: ExperimentConfig
    run_dir: Path
    plan: Plan
    fleet: Fleet
    profile: ModelProfile
    rounds: pd.DataFrame
    metrics: pd.DataFrame
    tap: CutLayerTap | None = None
    trainer: SFLTrainer | None = field(default=None, repr=False)

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last round."""
        return float(self.rounds["test_accuracy"].dropna().iloc[-1])

    @property
    def sim_time_s(self) -> float:
        """Simulated training time (latency model)."""
        return float(self.rounds["sim_time_s"].iloc[-1])

    @property
    def wall_time_s(self) -> float:
        """Wall-clock training time on this machine."""
        return float(self.rounds["wall_time_s"].iloc[-1])


def _metric_rows(run_id: str, setup: Setup, history: Sequence[RoundRecord]) -> list[dict[str, Any]]:
    plan = setup.plan
    rows: list[dict[str, Any]] = []
    base = {"run_id": run_id, "attack": "", "defense": ""}
    stages = setup.latency.stages
    for stage in ("client_fwd", "uplink", "server", "downlink", "client_bwd", "model_up", "model_down"):
        for i, value in enumerate(getattr(stages, stage)):
            rows.append({**base, "phase": "latency", "round": None, "device": i, "cut": plan.cuts[i],
                         "batch": plan.batch_sizes[i], "metric": f"{stage}_s", "value": float(value)})
    for r in history:
        for i, loss in enumerate(r.device_losses):
            rows.append({**base, "phase": "train", "round": r.round, "device": i, "cut": plan.cuts[i],
                         "batch": plan.batch_sizes[i], "metric": "train_loss", "value": loss})
        if not np.isnan(r.test_accuracy):
            for metric in ("test_loss", "test_accuracy"):
                rows.append({**base, "phase": "eval", "round": r.round, "device": None, "cut": None,
                             "batch": None, "metric": metric, "value": getattr(r, metric)})
    return rows


def _default_out(cfg: ExperimentConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{cfg.config_hash()}"


def _write_tables(run: RunDir, run_id: str, setup: Setup, history: Sequence[RoundRecord]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rounds = pd.DataFrame([r.row() for r in history])
    metrics = metrics_frame(_metric_rows(run_id, setup, history))
    run.write_frame("rounds.csv", rounds)
    run.write_frame("metrics.csv", metrics)
    return rounds, metrics


def _save_checkpoint(run: RunDir, trainer: SFLTrainer, tap: CutLayerTap | None) -> None:
    state = {"trainer": trainer.state_dict(), "tap": tap.state_dict() if tap is not None else None}
    atomic_torch_save(state, run.file("checkpoint.pt"))


def _read_run_file(run: RunDir, name: str, reader: Any) -> Any:
    """``reader(path)`` of the run's file ``name``, turning a missing or damaged file of a run into a one-line error."""
    if not run.file(name).is_file():
        raise ConfigError("--resume", str(run.file(name)), "a run directory written by hasfl-sec train",
                          f"{name} is missing")
    try:
        return reader(run.file(name))
    except ConfigError:
        raise
    except Exception as exc:  # a damaged file: say which one instead of a traceback
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError("--resume", str(run.file(name)), "an intact file written by hasfl-sec train",
                          first) from None


def _resume_config(run: RunDir, config: ExperimentConfig | None) -> ExperimentConfig:
    saved = config_from_dict(_read_run_file(run, "config.yaml", lambda path: read_structured(path, "--resume")))
    if config is not None and config.config_hash() != saved.config_hash():
        raise ConfigError("--resume", str(run.path), "the same config the run was started with",
                          "drop the config options when resuming; the run's config.yaml is used")
    return saved


def train(
    config: ExperimentConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    defenses: Sequence[Defense] = (),
) -> TrainResult:
    """Train under ``config`` (default: the built-in default run) and write the run directory.

    Args:
        config: the experiment; ``None`` = defaults, or with ``resume`` the run's own config.
        out_dir: the run directory; default ``runs/<timestamp>-<confighash>``.
        resume: continue the run in ``out_dir`` from its last checkpoint. The result equals an
            uninterrupted run with the same seed (only ``wall_time_s`` differs).
        progress: show a tqdm progress bar.
        defenses: defense hooks applied at the exchange points.
    """
    saved_fleet = saved_plan = None
    if resume:
        if out_dir is None:
            raise ConfigError("--out", None, "the directory of the run to resume")
        run = RunDir(out_dir)
        config = _resume_config(run, config)
        manifest = _read_run_file(run, "manifest.json", lambda path: json.loads(path.read_text()))
        if manifest.get("status") == "ok":
            raise ConfigError("--resume", str(run.path), "an unfinished run", "this run already finished")
        saved_fleet = _read_run_file(run, "fleet.yaml", load_fleet)
        saved_plan = _read_run_file(run, "plan.json", lambda path: Plan.from_dict(json.loads(path.read_text())))
    else:
        config = (config or ExperimentConfig()).validate()
        run = RunDir(out_dir if out_dir is not None else _default_out(config))
        if run.path.exists() and not run.path.is_dir():
            raise ConfigError("--out", str(run.path), "a directory (new or empty)", "a file has that name")
        if run.path.exists() and any(run.path.iterdir()):
            raise ConfigError("--out", str(run.path), "a new or empty directory",
                              "pass --resume to continue the run there, or choose another --out")
    # every input check happens here, before anything is written
    setup = prepare(config, fleet=saved_fleet, plan=saved_plan)

    tap = None
    trainer = setup.trainer(defenses)
    if config.tap.enabled:
        t = config.tap
        tap = CutLayerTap(TapSelector(rounds=set(t.rounds) if t.rounds is not None else None,
                                      devices=set(t.devices) if t.devices is not None else None,
                                      max_records=t.max_records, keep_uploads=t.keep_uploads))
        tap.attach(trainer)

    if resume:
        run_id = manifest["run_id"]
        if run.file("checkpoint.pt").is_file():
            state = _read_run_file(run, "checkpoint.pt", lambda path: torch.load(path, weights_only=True))
            trainer.load_state_dict(state["trainer"])
            if tap is not None and state.get("tap") is not None:
                tap.load_state_dict(state["tap"])
        logger.info("resuming %s at round %d of %d", run_id, trainer.round, config.train.rounds)
    else:
        run.create()
        run_id = f"{config.name}-{run.path.name}"
        run.write_text("config.yaml", config.to_yaml())
        run.write_json("manifest.json", run.new_manifest(run_id=run_id, seed=config.seed,
                                                         config_hash=config.config_hash()))
        run.write_json("plan.json", setup.plan.to_dict())
        setup.fleet.save(run.file("fleet.yaml"))
        run.write_frame("profile.csv", setup.profile.to_frame())
    run.update_manifest(status="running", device=str(setup.device))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.train.rounds, initial=trainer.round, desc="HASFL rounds", unit="round")

    every = config.train.checkpoint_every

    def on_round_end(tr: SFLTrainer, record: RoundRecord) -> None:
        if bar is not None:
            bar.update(1)
            acc = record.test_accuracy
            bar.set_postfix(loss=f"{record.train_loss:.3f}", acc="-" if np.isnan(acc) else f"{acc:.3f}")
        if every and tr.round % every == 0 and tr.round < config.train.rounds:
            _save_checkpoint(run, tr, tap)
            _write_tables(run, run_id, setup, tr.history)

    try:
        trainer.run(on_round_end)
    except BaseException as exc:
        run.update_manifest(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                            error=f"{type(exc).__name__}: {exc}", rounds_done=trainer.round)
        raise
    finally:
        if bar is not None:
            bar.close()
        if tap is not None:
            tap.detach()
    _save_checkpoint(run, trainer, tap)
    rounds, metrics = _write_tables(run, run_id, setup, trainer.history)
    if tap is not None:
        tap.save(run.file("observations.pt"))
    result = TrainResult(config, run.path, setup.plan, setup.fleet, setup.profile, rounds, metrics, tap, trainer)
    run.update_manifest(
        status="ok", rounds_done=trainer.round, final_test_accuracy=result.final_accuracy,
        sim_time_s=result.sim_time_s, wall_time_s=result.wall_time_s,
        finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    logger.info("done: test accuracy %.4f after %d rounds, simulated %.4g s, wall %.1f s",
                result.final_accuracy, trainer.round, result.sim_time_s, result.wall_time_s)
    return result

