"""``collect_runs``: an eval directory built from plain ``hasfl-sec train`` run directories.

Each run becomes one plan, named after its directory. From the run's own files (read with the
run readers of :mod:`hasfl_sec.runs.files`) come ``plans.csv`` (plan.json, fleet.yaml, profile.csv,
config.yaml), ``summary.csv`` and ``rounds.csv`` (rounds.csv, manifest.json); from an audit
written into the run's ``audit/`` folder (``hasfl-sec audit RUN_DIR``) come ``leakage.csv``, the
reconstruction grids and ``pareto.csv``. ``defenses.csv`` needs defense sweeps that only
``hasfl-sec eval`` runs, so it is never written here.

Everything is written into a temporary sibling directory and renamed into place at the end:
every input is read and checked before anything is written, and a failure leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..defenses.build import run_defense_label
from ..errors import ConfigError
from ..fileio import check_out, publish_dir, read_structured, work_dir
from ..locks import lock_folder
from ..models import CutProfile, ModelProfile
from ..report.render import build_report
from ..results import EVAL_TABLES, LEAKAGE_COLUMNS, RunDir, package_versions
from ..runs.files import read_run_file, read_run_file_with
from .aggregate import class_table, pareto_over_seeds
from .settings import Arm
from .tables import device_leakage, plan_noise, plan_rows, representatives, summary_row, task_metric

__all__ = ["collect_runs", "is_run_dir"]

logger = logging.getLogger(__name__)

_VALID_RUN = "a run directory written by hasfl-sec train (with manifest.json)"


@dataclass
class _Run:
    """One run directory, read and checked."""

    name: str
    path: Path
    manifest: dict[str, Any]
    config: Any
    fleet: Any
    plan: Any
    rounds: pd.DataFrame
    profile: ModelProfile | None
    leakage: pd.DataFrame | None = None
    audit_seconds: float = float("nan")
    grids: list[Path] = field(default_factory=list)
    replanned: bool = False


def is_run_dir(path: str | Path) -> bool:
    """True if ``path`` is a directory holding a run's ``manifest.json``."""
    return RunDir(path).exists()


def _read_run(path: Path, field_name: str) -> _Run:
    run = RunDir(path)
    if not path.is_dir():
        raise ConfigError(field_name, str(path), _VALID_RUN, "no such directory")
    manifest = read_run_file(run, "manifest.json", field_name)
    if manifest.get("status") != "ok":
        raise ConfigError(field_name, str(path), "a finished run (status ok in manifest.json)",
                          f"its status is {manifest.get('status')!r}")
    rounds = read_run_file_with(run, "rounds.csv", pd.read_csv, field_name)
    missing = [c for c in EVAL_TABLES["rounds"] if c not in rounds.columns and c not in ("plan", "seed")]
    if missing:
        raise ConfigError(field_name, str(run.file("rounds.csv")), "the rounds table of hasfl-sec train",
                          f"missing column(s): {', '.join(missing)}")
    profile = None
    if run.file("profile.csv").is_file():
        frame = read_run_file_with(run, "profile.csv", pd.read_csv, field_name)
        names = [f.name for f in dataclasses.fields(CutProfile)]
        if set(names) <= set(frame.columns):  # the latency model needs every cost of every cut
            cuts = tuple(CutProfile(**{k: (str(v) if k == "name" else int(v)) for k, v in row.items()})
                         for row in frame[names].to_dict("records"))
            profile = ModelProfile("", (0, 0, 0), (), cuts)
    out = _Run(path.name, path, manifest, read_run_file(run, "config.yaml", field_name),
               read_run_file(run, "fleet.yaml", field_name), read_run_file(run, "plan.json", field_name), rounds,
               profile, replanned=run.file("plans.json").is_file())
    if run.file("audit/leakage.csv").is_file():
        leakage = read_run_file_with(run, "audit/leakage.csv", pd.read_csv, field_name)
        missing = [c for c in LEAKAGE_COLUMNS if c not in leakage.columns]
        if missing:
            raise ConfigError(field_name, str(run.file("audit/leakage.csv")), "the leakage table of hasfl-sec audit",
                              f"missing column(s): {', '.join(missing)}")
        out.leakage = leakage[LEAKAGE_COLUMNS]
        if run.file("audit/audit.json").is_file():
            meta = read_structured(run.file("audit/audit.json"), field_name)
            seconds = (meta or {}).get("attack_seconds") or {}
            out.audit_seconds = float(sum(float(v) for v in seconds.values()))
        out.grids = sorted(run.file("audit").glob("reconstructions_*.png"))
    return out


def _arm(r: _Run) -> Any:
    """The run as an evaluation arm: a privacy-constrained plan (noise per device) or a plain one."""
    budget = (r.plan.privacy or {}).get("budget", math.nan) if r.plan.privacy else math.nan
    budgets = {float(b) for b in budget} if isinstance(budget, list) else {float(budget)}
    kind = "private" if r.plan.privacy else "plan"
    return Arm(r.name, kind, [], r.plan.strategy, budget=budgets.pop() if len(budgets) == 1 else math.nan)


def _leaks(r: _Run) -> dict[int, tuple[float, str]]:
    """Per device, the strongest attack's leakage (the task's metric) at its own cut (through the
    audited representative)."""
    if r.leakage is None:
        return {}
    return device_leakage(r.leakage, representatives(r.plan.cuts, plan_noise(r.plan)), r.plan.cuts,
                          metric=task_metric(r.config.data.dataset))


def _tables(runs: list[_Run]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """plans, summary and pareto of the collected runs, built as ``hasfl-sec eval`` builds them
    (each run at its own seed)."""
    plans, summary = [], []
    for r in runs:
        arm, per_device = _arm(r), _leaks(r)
        metric = str((r.plan.privacy or {}).get("metric", ""))
        plans += [{"plan": r.name, "seed": r.config.seed, **row,
                   "leakage": per_device.get(row["device"], (math.nan, ""))[0]}
                  for row in plan_rows(arm, r.plan, r.fleet, r.profile, metric,
                                       (r.plan.privacy or {}).get("leakage"))]
        target = r.config.optimizer.target_accuracy
        summary.append({"plan": r.name, "seed": r.config.seed, **summary_row(
            arm, defense=run_defense_label(r.config.defense, r.plan), budget_metric=metric, rounds=r.rounds,
            plan=r.plan, target=math.nan if target is None else target, leaks=per_device,
            wall_time_s=float(r.rounds["wall_time_s"].iloc[-1]), metric=task_metric(r.config.data.dataset))})
    plans_frame, summary_frame = pd.DataFrame(plans, columns=EVAL_TABLES["plans"]), pd.DataFrame(summary)
    pareto = pareto_over_seeds(plans_frame, summary_frame) if any(r.leakage is not None for r in runs) else None
    return plans_frame, summary_frame, pareto if pareto is not None else pd.DataFrame(columns=EVAL_TABLES["pareto"])


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _notes(runs: list[_Run]) -> list[str]:
    notes = [f"Collected from {len(runs)} hasfl-sec train run(s): "
             + ", ".join(f"{r.name} ({r.path})" for r in runs) + "; plan names are run directory names."]
    flats = [_flat(r.config.to_dict()) for r in runs]
    differ = sorted(k for k in set().union(*flats) if len({json.dumps(f.get(k), default=str) for f in flats}) > 1)
    if differ:
        notes.append("The runs' configs differ in: " + ", ".join(differ) + "; the header shows the first run's.")
    for r in runs:
        if r.leakage is None:
            notes.append(f"{r.name} has no audit (no audit/leakage.csv; run hasfl-sec audit {r.path}), "
                         "so its leakage is not reported.")
        if r.replanned:
            notes.append(f"{r.name} re-planned during training (plans.json); plans.csv shows its first plan.")
        if r.plan.predicted.get("time_to_target_s") is None:
            notes.append(f"{r.name}: strategy {r.plan.strategy} makes no time-to-target prediction.")
    notes.append("Defense sweeps are not part of training runs; hasfl-sec eval produces them.")
    return notes


def _write_tables(runs: list[_Run], tmp: Path, started: float, out_name: str) -> None:
    plans, summary, pareto = _tables(runs)
    rounds = pd.concat([r.rounds.assign(plan=r.name, seed=r.config.seed)[EVAL_TABLES["rounds"]] for r in runs],
                       ignore_index=True)
    audited = [r.leakage.assign(plan=r.name, seed=r.config.seed)[EVAL_TABLES["leakage"]]
               for r in runs if r.leakage is not None]
    leakage = pd.concat(audited, ignore_index=True) if audited else pd.DataFrame(columns=EVAL_TABLES["leakage"])
    for name, frame in (("plans", plans), ("classes", class_table(plans)), ("summary", summary), ("rounds", rounds),
                        ("leakage", leakage), ("pareto", pareto)):
        if name in ("plans", "summary", "rounds") or not frame.empty:
            frame.to_csv(tmp / f"{name}.csv", index=False)
    (tmp / "figures").mkdir()
    for r in runs:
        for grid in r.grids:
            attack = grid.name.removeprefix("reconstructions_")
            shutil.copyfile(grid, tmp / "figures" / f"reconstructions_{r.name}_{attack}")
    timings = {f"train {r.name}": float(r.manifest.get("wall_time_s", summary.loc[i, "wall_time_s"]))
               for i, r in enumerate(runs)}
    timings.update({f"audit {r.name}": r.audit_seconds for r in runs if not math.isnan(r.audit_seconds)})
    timings["collect"] = time.perf_counter() - started
    meta = {"name": out_name, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": runs[0].config.to_dict(),
            "settings": {"source": "hasfl-sec report (collected from train runs)",
                         "runs": {r.name: str(r.path) for r in runs}},
            "timings": timings, "wall_time_s": float(np.nansum(list(timings.values()))),
            "versions": runs[0].manifest.get("versions") or package_versions(), "notes": _notes(runs)}
    (tmp / "eval.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


def collect_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, overwrite: bool = False,
                 report: bool = True, field_name: str = "DIR") -> Path:
    """Build an eval directory at ``out_dir`` from training run directories; returns its path.

    Args:
        run_dirs: directories written by ``hasfl-sec train`` (optionally audited into ``audit/``).
        out_dir: the eval directory to write; must be new or empty unless ``overwrite``.
        overwrite: replace an existing ``out_dir``.
        report: also render ``report.html`` and ``report.md`` (inside the same atomic write).
        field_name: the name errors give the run directories (the CLI's ``DIR``).

    Raises:
        ConfigError: a directory is not a finished run, two runs share a name, image and text runs
            are mixed, a run file is damaged, or ``out_dir`` is taken; nothing is written then.
    """
    started = time.perf_counter()
    paths = [Path(p) for p in run_dirs]
    out = Path(out_dir)
    if not paths:
        raise ConfigError(field_name, [], _VALID_RUN, "give at least one")
    with lock_folder(out, "--out"):  # one writer per output folder, from the check to the publish
        check_out(out, overwrite, paths, marker="eval.json")
        runs = [_read_run(p, field_name) for p in paths]
        names = [r.name for r in runs]
        for r in runs:
            if names.count(r.name) > 1:
                raise ConfigError(field_name, str(r.path), "run directories with distinct names",
                                  f"{r.name!r} is given twice; the directory name is the plan name")
        metrics = {r.name: task_metric(r.config.data.dataset) for r in runs}
        if len(set(metrics.values())) > 1:  # SSIM and token accuracy are not one leakage scale
            raise ConfigError(field_name, ", ".join(names), "runs of one kind of task (all images or all text)",
                              "their leakage metrics differ: " + ", ".join(f"{n} {m}" for n, m in metrics.items()))
        tmp = work_dir(out)
        try:
            _write_tables(runs, tmp, started, out.name)
            if report:
                build_report(tmp, field_name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_dir(tmp, out)
    logger.info("eval directory %s collected from %d run(s)", out, len(runs))
    return out
