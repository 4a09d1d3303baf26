"""``hasfl-sec eval``: optimize, train every arm, audit every split it picked, tabulate, report.

Flow (docs/design.md section 3, one way): settings + experiment config -> arms
(:func:`~hasfl_sec.evaluation.settings.build_arms`) -> one bound estimate shared by every planner
-> per arm: train (:func:`hasfl_sec.runs.training.train`) -> audit, on the trained run in memory, the
devices that represent each (cut, noise) of its plan (:func:`hasfl_sec.audit.entry.audit_trained`)
-> tables (:mod:`~hasfl_sec.evaluation.tables`) -> report (:func:`hasfl_sec.report.build_report`).

Every arm's config is built and validated before any work starts, so an unknown name, a bad
defense parameter or a private plan with a second noise source fails at once with nothing
written. Checks that need the data or the plan (an unreachable DP-SGD epsilon, a budget no cut
meets, a target accuracy the pilots cannot reach) fail when that arm starts. Work happens in a
hidden sibling directory that is renamed to the output only when the report is complete: an
interrupted evaluation never leaves a half-written report, and its finished runs stay in the
hidden directory (logged).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..audit.config import AuditConfig
from ..audit.entry import audit_trained
from ..audit.output import write_audit
from ..config import ExperimentConfig, config_from_dict
from ..defenses.build import describe_defenses
from ..errors import ConfigError
from ..fileio import check_out, first_free_dir, publish_dir, work_dir
from ..planning.bound import BoundConstants
from ..planning.privacy import check_private_config
from ..planning.strategies import BOUND_STRATEGIES
from ..report.render import build_report
from ..results import EVAL_TABLES, package_versions
from ..runs.setup import config_dataset, prepare
from ..runs.training import train
from ..typed import apply_overrides
from .settings import DEFAULT_NAME, Arm, EvalSettings, build_arms
from .tables import (
    class_mean_ssim,
    defense_table,
    device_leakage,
    pareto_table,
    plan_noise,
    plan_rows,
    representatives,
    summary_row,
)

__all__ = ["EvalResult", "run_eval", "eval_out", "arm_configs"]

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Where the evaluation was written and its tables."""

    out: Path
    tables: dict[str, pd.DataFrame]
    wall_time_s: float

    @property
    def summary(self) -> pd.DataFrame:
        """One row per arm."""
        return self.tables["summary"]


def arm_configs(config: ExperimentConfig, arms: list[Arm]) -> dict[str, ExperimentConfig]:
    """Every arm's experiment config, validated (errors name the arm's setting), including what a
    privacy-constrained plan cannot honour (a second noise source, re-planning)."""
    base = config.to_dict()
    configs = {a.name: config_from_dict(apply_overrides(base, [*a.overrides, f"name={a.name}"])) for a in arms}
    for a in arms:
        if a.kind == "private":
            check_private_config(configs[a.name])
    return configs


def _epsilon(report: dict[str, float]) -> float:
    """The largest finite privacy loss in a defense report (NaN when no defense claims one; an
    unbounded epsilon, written as null in the run's manifest, claims none)."""
    values = [float(v) for k, v in report.items() if k.endswith("epsilon") and math.isfinite(float(v))]
    return max(values) if values else math.nan


class _Progress:
    """A tqdm bar over the evaluation's steps (a no-op without ``progress``)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="eval", unit="step")

    def step(self, label: str) -> None:
        logger.info("eval: %s", label)
        if self.bar is not None:
            self.bar.set_postfix_str(label)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def eval_out(out: str | Path | None, name: str | None) -> Path:
    """Where an evaluation writes: ``out`` if given, else ``reports/<name>``, else the first free
    ``reports/default[-N]`` (a default run never replaces nor blocks on an earlier report)."""
    if out is not None:
        return Path(out)
    if name is not None:
        return Path("reports") / name
    return first_free_dir(Path("reports"), DEFAULT_NAME)


def run_eval(config: ExperimentConfig, settings: EvalSettings, *, out: str | Path | None = None,
             overwrite: bool = False, progress: bool = False) -> EvalResult:
    """Run the evaluation ``settings`` describes on ``config`` and write ``out`` (see module doc)."""
    start = time.perf_counter()
    settings.validate()
    field = "--name" if out is None and settings.name is not None else "--out"  # the option the path came from
    out = eval_out(out, settings.name)
    _check_out(out, overwrite, field)
    arms = build_arms(settings)
    configs = arm_configs(config, arms)
    template = _audit_template(settings)

    work = work_dir(out, field)
    (work / "figures").mkdir()
    bar = _Progress(1 + 2 * len(arms) + 1, progress)
    rows = _Rows()
    try:
        bound = _shared_bound(configs, work, rows.timings, bar)
        for arm in arms:
            _run_arm(arm, configs[arm.name], bound, template, work, rows, bar)
        tables = rows.tables(arms)
        for name in EVAL_TABLES:
            if not tables[name].empty:
                tables[name].to_csv(work / f"{name}.csv", index=False)
        meta = _meta(config, settings, arms, rows.timings, settings.name or out.name, start)
        bar.step("report")
        (work / "eval.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        build_report(work)
        bar.done()
    except BaseException:
        bar.close()
        if rows.summary:  # finished arms are results: keep them, and say where
            logger.error("eval stopped after %d of %d arms; their runs are kept in %s", len(rows.summary), len(arms),
                         work)
        else:
            shutil.rmtree(work, ignore_errors=True)
        raise
    bar.close()
    publish_dir(work, out)
    return EvalResult(out, tables, time.perf_counter() - start)


def _check_out(out: Path, overwrite: bool, field: str) -> None:
    """``out`` is writable (:func:`~hasfl_sec.fileio.check_out`) and no stopped evaluation's runs
    wait beside it: those are never deleted silently. Errors name ``field``, the option ``out``
    came from."""
    check_out(out, overwrite, field=field, marker="eval.json")
    kept = out.with_name(f".{out.name}.tmp")
    if (kept / "runs").is_dir():
        raise ConfigError(field, str(out), "an output whose earlier partial evaluation was cleared",
                          f"{kept} holds the runs of a stopped evaluation; move or delete it first")


def _audit_template(settings: EvalSettings) -> AuditConfig:
    """The audit every arm gets (its devices are filled in per arm)."""
    return AuditConfig(attacks=list(settings.attacks), images=settings.images, seeds=list(settings.seeds),
                       preset=settings.preset, attack_params={k: dict(v) for k, v in settings.attack_params.items()})


def _shared_bound(configs: dict[str, ExperimentConfig], work: Path, timings: dict[str, float],
                  bar: _Progress) -> BoundConstants | None:
    """The bound constants every bound-based planner of the evaluation shares, estimated once on the
    first such arm's config (warm-up and calibration), saved as ``bound.json``; None if no arm needs them."""
    first = next((c for c in configs.values() if c.plan.strategy in BOUND_STRATEGIES), None)
    bound = None
    if first is not None:
        bar.step("bound constants (warm-up and calibration)")
        t0 = time.perf_counter()
        bound = prepare(first).context.bound()
        bound.save(work / "bound.json")
        timings["bound"] = time.perf_counter() - t0
    bar.done()
    return bound


@dataclass
class _Rows:
    """What the arms have produced so far: table rows, per-device leakage, epsilons, timings."""

    plans: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[pd.DataFrame] = field(default_factory=list)
    leakage: list[pd.DataFrame] = field(default_factory=list)
    leaks: dict[str, dict[int, float]] = field(default_factory=dict)
    epsilons: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def tables(self, arms: list[Arm]) -> dict[str, pd.DataFrame]:
        """The evaluation's tables (:data:`~hasfl_sec.results.EVAL_TABLES`) from the rows."""
        tables = {"plans": pd.DataFrame(self.plans), "summary": pd.DataFrame(self.summary),
                  "rounds": pd.concat(self.rounds, ignore_index=True),
                  "leakage": pd.concat(self.leakage, ignore_index=True)}
        tables["defenses"] = (defense_table(arms, tables["summary"], tables["leakage"], self.epsilons)
                              if any(a.kind == "defense" for a in arms) else pd.DataFrame())
        tables["pareto"] = pareto_table(tables["plans"], tables["summary"], self.leaks)
        return tables


def _run_arm(arm: Arm, cfg: ExperimentConfig, bound: BoundConstants | None, template: AuditConfig, work: Path,
             rows: _Rows, bar: _Progress) -> None:
    """Train one arm, audit the devices that represent each (cut, noise) of its plan on the trained
    run in memory, and add its rows."""
    run_dir = work / "runs" / arm.name
    bar.step(f"train {arm.name}")
    t0 = time.perf_counter()
    result = train(cfg, out_dir=run_dir, bound=bound)
    rows.timings[f"train {arm.name}"] = time.perf_counter() - t0
    bar.done()
    rows.epsilons[arm.name] = _epsilon(result.trainer.defense.report())  # before the audit's replay advances it
    plan = result.plan
    reps = representatives(plan.cuts, plan_noise(plan))

    bar.step(f"audit {arm.name}")
    t0 = time.perf_counter()
    audited = audit_trained(result, dataclasses.replace(template, devices=sorted(set(reps.values()))))
    write_audit(audited, run_dir / "audit")
    rows.timings[f"audit {arm.name}"] = time.perf_counter() - t0
    bar.done()
    for grid in sorted((run_dir / "audit").glob("reconstructions_*.png")):
        attack = grid.stem.removeprefix("reconstructions_")
        shutil.copyfile(grid, work / "figures" / f"reconstructions_{arm.name}_{attack}.png")

    frame = audited.frame.copy()
    frame.insert(0, "plan", arm.name)
    rows.leakage.append(frame)
    per_device = device_leakage(frame, reps, plan.cuts)
    rows.leaks[arm.name] = {d: v for d, (v, _) in per_device.items()}
    predicted = (plan.privacy or {}).get("leakage")
    cut_names = {cp.cut: cp.name for cp in result.profile.cuts}
    rows.plans += plan_rows(arm, plan, result.fleet, cut_names, cfg.privacy.metric, predicted)
    rows.summary.append(summary_row(arm, defense=str(audited.meta.get("defense", describe_defenses(cfg.defense))),
                                    budget_metric=cfg.privacy.metric, rounds=result.rounds, plan=plan,
                                    target=cfg.optimizer.target_accuracy or 0.9, leaks=per_device,
                                    wall_time_s=result.wall_time_s))
    r = result.rounds[["round", "sim_time_s", "wall_time_s", "train_loss", "test_accuracy"]].copy()
    r.insert(0, "plan", arm.name)
    rows.rounds.append(r)


def _meta(config: ExperimentConfig, settings: EvalSettings, arms: list[Arm], timings: dict[str, float],
          name: str, start: float) -> dict[str, Any]:
    """``eval.json``: what ran, with which settings and versions, how long it took since ``start``
    (``time.perf_counter``; everything but writing the report), and the notes."""
    reference = class_mean_ssim(config_dataset(config), config.seed)
    notes = [f"Label-only reference: the class-mean image of the auxiliary data scores SSIM {reference:.3f} "
             "against the victims' images. HASFL sends labels to the edge server, so it reconstructs at "
             "least this well without the smashed data; a defense that keeps accuracy cannot push the "
             "strongest (adaptive) attack far below it.",
             "Defense settings are trained on the sfl plan at plan.cut; their predicted time to target is "
             "the undefended plan's (the bound does not model these defenses)."]
    return {"name": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": config.to_dict(), "settings": settings.to_dict(), "arms": [vars(a) for a in arms],
            "timings": timings, "wall_time_s": time.perf_counter() - start, "versions": package_versions(),
            "notes": notes}
