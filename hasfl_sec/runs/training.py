"""Training runs: ``train(config)`` trains and writes the run directory (:mod:`hasfl_sec.results`).

Every input check happens in :func:`hasfl_sec.runs.setup.prepare` before anything is written; a killed
run continues with ``train(out_dir=..., resume=True)`` from its last checkpoint, with the fleet,
plan, tap records and random state it had, and ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import logging
import math
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..config import ExperimentConfig
from ..defenses.base import Defense
from ..defenses.build import describe_defenses
from ..errors import ConfigError
from ..fileio import check_writable
from ..fleet import Fleet
from ..locks import lock_folder
from ..models import ModelProfile
from ..planning.bound import BoundConstants
from ..results import RunDir, atomic_torch_save, metrics_frame
from ..sfl.clock import plan_costs
from ..sfl.latency import round_latency
from ..sfl.plan import Plan
from ..sfl.rounds import RoundRecord
from ..sfl.tap import CutLayerTap, TapSelector
from ..sfl.trainer import SFLTrainer
from .checkpoints import check_devices, restore_trainer
from .files import read_run_file
from .setup import Setup, prepare

__all__ = ["TrainResult", "train"]

logger = logging.getLogger(__name__)


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
    setup: Setup | None = field(default=None, repr=False)
    run_id: str = ""

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


def _metric_rows(run_id: str, setup: Setup, trainer: SFLTrainer) -> list[dict[str, Any]]:
    """Long-format rows: stage latencies of every plan used (at mean rates), per-device losses and
    evaluations, each labelled with the cut and batch size in effect in that round."""
    rows: list[dict[str, Any]] = []
    base = {"run_id": run_id, "attack": "", "defense": ""}
    starts = [r0 for r0, _ in trainer.plan_history]
    for r0, plan in trainer.plan_history:
        stages = round_latency(setup.fleet, plan.batch_sizes, plan_costs(setup.profile, plan)).stages
        for stage, values in stages.as_dict().items():
            for i, value in enumerate(values):
                rows.append({**base, "phase": "latency", "round": r0 + 1, "device": i, "cut": plan.cuts[i],
                             "batch": plan.batch_sizes[i], "metric": f"{stage}_s", "value": float(value)})
    for r in trainer.history:
        # the plan made after round r0 governs rounds r0 + 1, r0 + 2, ...
        plan = trainer.plan_history[bisect.bisect_left(starts, r.round) - 1][1]
        for i, loss in enumerate(r.device_losses):
            rows.append({**base, "phase": "train", "round": r.round, "device": i, "cut": plan.cuts[i],
                         "batch": plan.batch_sizes[i], "metric": "train_loss", "value": loss})
        if not np.isnan(r.test_accuracy):
            for metric in ("test_loss", "test_accuracy"):
                rows.append({**base, "phase": "eval", "round": r.round, "device": None, "cut": None,
                             "batch": None, "metric": metric, "value": getattr(r, metric)})
    return rows


_DEVICE_KEY = re.compile(r"^(.*)\.device(\d+)$")


def _defense_rows(run_id: str, setup: Setup, trainer: SFLTrainer) -> list[dict[str, Any]]:
    """The defenses' ``report()`` figures at the trainer's round: phase ``defense``, metric
    ``<defense>.<figure>`` (``dpsgd.epsilon``); a ``.device<i>`` suffix goes to the device column."""
    label = describe_defenses(setup.config.defense)
    rows = []
    for key, value in trainer.defense.report().items():
        m = _DEVICE_KEY.match(key)
        device = int(m.group(2)) if m else None
        rows.append({"run_id": run_id, "phase": "defense", "round": trainer.round, "device": device,
                     "cut": trainer.cuts[device] if device is not None else None,
                     "batch": trainer.batch_sizes[device] if device is not None else None, "attack": "",
                     "defense": label, "metric": m.group(1) if m else key, "value": float(value)})
    return rows


def _finite_or_none(figures: dict[str, float]) -> dict[str, float | None]:
    """JSON has no infinity: an unbounded figure (epsilon without noise) is written as null."""
    return {k: (float(v) if math.isfinite(v) else None) for k, v in figures.items()}


def _default_out(cfg: ExperimentConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{cfg.config_hash()}"


def _write_tables(run: RunDir, run_id: str, setup: Setup, trainer: SFLTrainer) -> tuple[pd.DataFrame, pd.DataFrame]:
    rounds = pd.DataFrame([r.row() for r in trainer.history])
    metrics = metrics_frame(_metric_rows(run_id, setup, trainer) + _defense_rows(run_id, setup, trainer))
    run.write_frame("rounds.csv", rounds)
    run.write_frame("metrics.csv", metrics)
    if len(trainer.plan_history) > 1:
        run.write_json("plans.json", [{"from_round": r0 + 1, **p.to_dict()} for r0, p in trainer.plan_history])
    return rounds, metrics


def _save_checkpoint(run: RunDir, trainer: SFLTrainer, tap: CutLayerTap | None) -> None:
    state = {"trainer": trainer.state_dict(), "tap": tap.state_dict() if tap is not None else None}
    atomic_torch_save(state, run.file("checkpoint.pt"))


def _resume_config(run: RunDir, config: ExperimentConfig | None) -> ExperimentConfig:
    saved = read_run_file(run, "config.yaml")
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
    bound: BoundConstants | None = None,
) -> TrainResult:
    """Train under ``config`` (default: the built-in default run) and write the run directory.

    Args:
        config: the experiment; ``None`` = defaults, or with ``resume`` the run's own config.
        out_dir: the run directory; default ``runs/<timestamp>-<confighash>``.
        resume: continue the run in ``out_dir`` from its last checkpoint. The result equals an
            uninterrupted run with the same seed (only ``wall_time_s`` differs).
        progress: show a tqdm progress bar.
        defenses: defense hooks applied at the exchange points.
        bound: bound constants for the planner, instead of a warm-up (saved as ``bound.json``).
    """
    config, path = _run_target(config, out_dir, resume)
    # one writer per run directory: taken before the directory is checked, read or written, and
    # held to the end, so a second train (or an audit) of the same folder is refused at once
    with lock_folder(path, "--out"):
        return _train_locked(config, path, resume, progress, defenses, bound)


def _train_locked(config: ExperimentConfig | None, path: Path, resume: bool, progress: bool,
                  defenses: Sequence[Defense], bound: BoundConstants | None) -> TrainResult:
    """:func:`train` once the run directory ``path`` is locked."""
    config, run, manifest = _open_run(config, path, resume)
    resume = manifest is not None  # a run stopped during its start-up starts again
    # every input check happens here, before anything is written
    saved = (read_run_file(run, "fleet.yaml"), read_run_file(run, "plan.json")) if resume else (None, None)
    state = read_run_file(run, "checkpoint.pt") if resume and run.file("checkpoint.pt").is_file() else None
    if state is not None:  # another run's checkpoint is refused before the data are read
        check_devices(state, saved[0].num_devices, run.file("checkpoint.pt"), "--resume")
    setup = prepare(config, fleet=saved[0], plan=saved[1], bound=None if resume else bound)
    trainer = setup.trainer(defenses)
    tap = _attach_tap(config, trainer)
    run_id = _restore(run, manifest, setup, trainer, tap, state) if resume else _start(run, config, setup)
    # the execution actually used (train.execution may have fallen back to per-device)
    run.update_manifest(status="running", device=str(setup.device), defense=describe_defenses(config.defense),
                        execution=trainer.execution.name)
    _run_rounds(run, run_id, setup, trainer, tap, progress)
    _save_checkpoint(run, trainer, tap)
    rounds, metrics = _write_tables(run, run_id, setup, trainer)
    if tap is not None:
        tap.save(run.file("observations.pt"))
    result = TrainResult(config, run.path, setup.plan, setup.fleet, setup.profile, rounds, metrics, tap, trainer,
                         setup, run_id)
    run.update_manifest(
        status="ok", rounds_done=trainer.round, final_test_accuracy=result.final_accuracy,
        sim_time_s=result.sim_time_s, wall_time_s=result.wall_time_s,
        defense_report=_finite_or_none(trainer.defense.report()),
        finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    logger.info("done: test accuracy %.4f after %d rounds, simulated %.4g s, wall %.1f s",
                result.final_accuracy, trainer.round, result.sim_time_s, result.wall_time_s)
    return result


def _run_target(config: ExperimentConfig | None, out_dir: str | Path | None, resume: bool
                ) -> tuple[ExperimentConfig | None, Path]:
    """The run directory to lock and write: ``out_dir``, or for a new run without one the generated
    ``runs/<time>-<hash>``; a new run's config is validated here (the hash needs it), a resumed
    run's config comes from its folder once it is locked."""
    if resume:
        if out_dir is None:
            raise ConfigError("--out", None, "the directory of the run to resume")
        return config, Path(out_dir)
    config = (config or ExperimentConfig()).validate()
    return config, Path(out_dir) if out_dir is not None else _default_out(config)


#: What a run writes when it starts, before its first round (:func:`_start`); config.yaml first.
_START_FILES = ("config.yaml", "manifest.json", "plan.json", "fleet.yaml", "profile.csv", "bound.json")


def _unstarted(run: RunDir) -> bool:
    """True if ``run`` was killed while it was being started: config.yaml is there, but not every
    other start-up file, and no round was ever checkpointed. Such a folder continues with
    ``--resume`` (from round 0, with its saved config) and is refused, with that advice, by a new run."""
    names = {p.name for p in run.path.iterdir() if not p.name.startswith(".")}
    return ("config.yaml" in names and names <= set(_START_FILES)
            and not {"manifest.json", "plan.json", "fleet.yaml"} <= names)


def _open_run(config: ExperimentConfig | None, path: Path, resume: bool
              ) -> tuple[ExperimentConfig, RunDir, dict[str, Any] | None]:
    """The config and run directory of a new run (which must be new or empty), or of the unfinished
    run to resume (its own config, and its manifest: None for a run killed during its start-up,
    which then starts again in its folder with its saved config)."""
    run = RunDir(path)
    if resume:
        if not run.path.is_dir():
            raise ConfigError("--resume", str(run.path), "the directory of a run started by hasfl-sec train",
                              "no such directory")
        check_writable(run.path, "--out")
        config = _resume_config(run, config)
        if _unstarted(run):
            logger.info("%s was stopped during its start-up: starting it again with its config.yaml", run.path)
            return config, run, None
        manifest = read_run_file(run, "manifest.json")
        if manifest.get("status") == "ok":
            raise ConfigError("--resume", str(run.path), "an unfinished run", "this run already finished")
        return config, run, manifest
    assert config is not None  # validated by _run_target
    if run.path.exists() and not run.path.is_dir():
        raise ConfigError("--out", str(run.path), "a directory (new or empty)", "a file has that name")
    if run.path.exists() and any(run.path.iterdir()):
        if _unstarted(run):
            raise ConfigError("--out", str(run.path), "a new or empty directory",
                              "it holds a run stopped during its start-up; continue it with "
                              f"hasfl-sec train --out {shlex.quote(str(run.path))} --resume, or choose another --out")
        raise ConfigError("--out", str(run.path), "a new or empty directory",
                          "pass --resume to continue the run there, or choose another --out")
    check_writable(run.path, "--out")
    return config, run, None


def _attach_tap(config: ExperimentConfig, trainer: SFLTrainer) -> CutLayerTap | None:
    """The cut-layer tap the config's ``tap`` section asks for, attached to ``trainer`` (or None)."""
    if not config.tap.enabled:
        return None
    t = config.tap
    tap = CutLayerTap(TapSelector(rounds=set(t.rounds) if t.rounds is not None else None,
                                  devices=set(t.devices) if t.devices is not None else None,
                                  max_records=t.max_records, keep_uploads=t.keep_uploads))
    tap.attach(trainer)
    return tap


def _restore(run: RunDir, manifest: dict[str, Any], setup: Setup, trainer: SFLTrainer,
             tap: CutLayerTap | None, state: dict[str, Any] | None) -> str:
    """Resume: the bound the run planned with, and the trainer's (and tap's) last checkpoint; returns the run id."""
    run_id = manifest["run_id"]
    if run.file("bound.json").is_file():  # re-plans must use the constants the run planned with
        setup.context.set_bound(read_run_file(run, "bound.json"))
    if state is not None:
        restore_trainer(trainer, state, run.file("checkpoint.pt"), "--resume")
        if tap is not None and state.get("tap") is not None:
            tap.load_state_dict(state["tap"])
    logger.info("resuming %s at round %d of %d", run_id, trainer.round, setup.config.train.rounds)
    return run_id


def _start(run: RunDir, config: ExperimentConfig, setup: Setup) -> str:
    """A new run directory with the config, manifest, plan, fleet, profile and bound; returns the run id."""
    run.create()
    run_id = f"{config.name}-{run.path.name}"
    run.write_text("config.yaml", config.to_yaml())
    run.write_json("manifest.json", run.new_manifest(run_id=run_id, seed=config.seed,
                                                     config_hash=config.config_hash()))
    run.write_json("plan.json", setup.plan.to_dict())
    setup.fleet.save(run.file("fleet.yaml"))
    run.write_frame("profile.csv", setup.profile.to_frame())
    if setup.context.bound_needed():
        setup.context.bound().save(run.file("bound.json"))
    return run_id


#: A run predicted to take longer than this (wall time) is announced with a warning.
LONG_RUN_S = 3600.0


def _log_estimate(first_round_s: float, remaining: int) -> None:
    """Say, after the first round, how long the remaining rounds will take at its pace, so that a
    long but legal run (``train.rounds=10**6``) is never a silent surprise."""
    left = first_round_s * remaining
    if left < 60:  # short runs need no forecast
        return
    level = logging.WARNING if left > LONG_RUN_S else logging.INFO
    logger.log(level, "the first round took %.3g s of wall time: the %d rounds left will take about %s",
               first_round_s, remaining, _duration(left))


def _duration(seconds: float) -> str:
    """``93784`` -> ``'1.1 days'``; seconds, minutes, hours, days or years."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _run_rounds(run: RunDir, run_id: str, setup: Setup, trainer: SFLTrainer, tap: CutLayerTap | None,
                progress: bool) -> None:
    """Train to the last round, checkpointing every ``train.checkpoint_every`` rounds; a failure or
    an interrupt is recorded in the manifest before it propagates."""
    config = setup.config
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.train.rounds, initial=trainer.round, desc="HASFL rounds", unit="round")
    every = config.train.checkpoint_every
    started = (time.perf_counter(), trainer.round)

    def on_round_end(tr: SFLTrainer, record: RoundRecord) -> None:
        if tr.round == started[1] + 1:
            _log_estimate(time.perf_counter() - started[0], config.train.rounds - tr.round)
        if bar is not None:
            bar.update(1)
            acc = record.test_accuracy
            bar.set_postfix(loss=f"{record.train_loss:.3f}", acc="-" if np.isnan(acc) else f"{acc:.3f}")
        if every and tr.round % every == 0 and tr.round < config.train.rounds:
            _save_checkpoint(run, tr, tap)
            _write_tables(run, run_id, setup, tr)

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

