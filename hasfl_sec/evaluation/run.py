"""``hasfl-sec eval``: optimize, train every arm, audit every split it picked, tabulate, report.

Flow (docs/design.md section 3, one way): settings + experiment config -> arms
(:func:`~hasfl_sec.evaluation.settings.build_arms`) -> one bound estimate shared by every planner
-> one *cell* per arm (:mod:`~hasfl_sec.evaluation.cells`: train, audit the devices that represent
each (cut, noise) of its plan, write ``runs/<arm>/``), run by an executor
(:mod:`~hasfl_sec.evaluation.executors`: this process, local worker processes or Ray) -> tables
(:mod:`~hasfl_sec.evaluation.tables`) -> report (:func:`hasfl_sec.report.build_report`).

Every arm's config is built and validated before any work starts, so an unknown name, a bad
defense parameter or a private plan with a second noise source fails at once with nothing
written. Checks that need the data or the plan (an unreachable DP-SGD epsilon, a budget no cut
meets) fail that cell only: it is recorded with its one-line reason, the other cells complete,
the report lists it in a table, and :attr:`EvalResult.failed` names it.

The output folder is locked for the evaluation's lifetime (:mod:`hasfl_sec.locks`). Work happens
in a hidden sibling (``.<name>.tmp``) renamed to the output when the report is complete, so a
reader never sees a half-written report. An interrupted evaluation leaves its finished cells in
that sibling; the same evaluation run again into the same output continues there and computes
only the cells that are missing (a cell is reused only when its key matches, see
:mod:`~hasfl_sec.evaluation.cells`). With ``overwrite``, the finished cells of the output being
replaced are reused the same way unless ``fresh``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..audit.config import AuditConfig
from ..config import ExperimentConfig, config_from_dict
from ..data.text import TEXT_DATASETS
from ..errors import HasflError
from ..fileio import publish_dir
from ..locks import lock_file_of
from ..planning.privacy import check_private_config
from ..report.render import build_report
from ..results import EVAL_TABLES, package_versions
from ..runs.limits import check_resources
from ..runs.setup import config_dataset
from ..typed import apply_overrides
from .aggregate import class_table, comparisons, pareto_over_seeds, time_budget
from .cells import Cell, CellRecord, cell_name, code_version, fail_cell, make_cell, read_cell
from .executors import EXECUTORS, ExecutorConfig, Task, session
from .hijack import check_active_arm
from .hijack_tables import detector_table, hijack_table
from .settings import Arm, EvalSettings, build_arms, for_text
from .tables import defense_table, label_only_note, task_metric
from .workspace import claim_output, kept_work, reuse, shared_bound

__all__ = ["EvalResult", "EvalFailed", "run_eval", "eval_out", "arm_configs", "Point", "plan_point", "prepare_point",
           "execute", "finish_point"]

logger = logging.getLogger(__name__)


class EvalFailed(HasflError):
    """Every cell of an evaluation failed: there is nothing to report (the reasons are listed)."""


@dataclass
class EvalResult:
    """Where the evaluation was written, its tables, and how its cells went.

    Attributes:
        out: the published output folder.
        tables: the tables of :data:`~hasfl_sec.results.EVAL_TABLES` (``failed`` lists failed cells).
        wall_time_s: the evaluation's wall time.
        computed, reused: names of the cells computed now and of those reused from an earlier run.
    """

    out: Path
    tables: dict[str, pd.DataFrame]
    wall_time_s: float
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    @property
    def summary(self) -> pd.DataFrame:
        """One row per finished arm."""
        return self.tables["summary"]

    @property
    def failed(self) -> pd.DataFrame:
        """One row per failed cell: ``plan``, ``kind``, ``reason``."""
        return self.tables["failed"]


def fixed_fleet_seed(config: ExperimentConfig) -> int:
    """The seed every training seed's fleet is drawn from unless the fleet is drawn per seed."""
    return config.fleet.seed if config.fleet.seed is not None else config.seed


def arm_configs(config: ExperimentConfig, arms: list[Arm], seeds: list[int],
                fleet_per_seed: bool = False) -> dict[str, ExperimentConfig]:
    """Every cell's experiment config (by cell name: arm and seed), validated (errors name the
    arm's setting), including what a privacy-constrained plan cannot honour (a second noise
    source, re-planning). Unless ``fleet_per_seed``, every seed gets the fleet of ``fleet.seed``
    (else of the config's ``seed``)."""
    base = config.to_dict()
    fleet_seed = [] if fleet_per_seed else [f"fleet.seed={fixed_fleet_seed(config)}"]
    configs: dict[str, ExperimentConfig] = {}
    for a in arms:
        for s in seeds:
            name = cell_name(a.name, s)
            configs[name] = config_from_dict(apply_overrides(base, [*a.overrides, f"name={name}", f"seed={s}",
                                                                     *fleet_seed]))
        if a.kind == "private":
            check_private_config(configs[cell_name(a.name, seeds[0])])
    return configs


class _Progress:
    """A tqdm bar over the evaluation's cells, with tqdm's estimate of the time left (a no-op
    without ``progress``)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="eval cells", unit="cell")

    def update(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def eval_out(out: str | Path | None, name: str | None) -> Path | None:
    """Where an evaluation writes: ``out`` if given, else ``reports/<name>``; None when neither is
    given (the first free ``reports/default[-N]`` is claimed when the evaluation starts)."""
    if out is not None:
        return Path(out)
    if name is not None:
        return Path("reports") / name
    return None


@dataclass
class Point:
    """One evaluation of an output (a study has several): its config, settings, arms, cells, the
    folder it is built in and the cells' records."""

    config: ExperimentConfig
    settings: EvalSettings
    arms: list[Arm]
    configs: dict[str, ExperimentConfig]
    work: Path = Path()
    cells: list[Cell] = field(default_factory=list)
    records: dict[str, CellRecord] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    bound_seconds: float = 0.0
    task_notes: list[str] = field(default_factory=list)  # what a text task changed of the settings

    @property
    def pending(self) -> list[Task]:
        """The cells without a record and their run folders."""
        return [(c, self.work / "runs" / c.name) for c in self.cells if c.name not in self.records]


def plan_point(config: ExperimentConfig, settings: EvalSettings) -> Point:
    """An evaluation's arms and their cells' validated configs (nothing is computed or written)."""
    notes: list[str] = []
    if config.data.dataset in TEXT_DATASETS:  # before validation: a text attack's parameters need the attack
        settings, notes = for_text(settings)
        for note in notes:
            logger.info("text task: %s", note)
    settings.validate()
    arms = build_arms(settings)
    configs = arm_configs(config, arms, list(settings.seeds), settings.fleet_per_seed)
    for arm in arms:
        if arm.kind == "active":  # device ids inside the fleet, a hijacking that starts within the run
            check_active_arm(arm, configs[cell_name(arm.name, settings.seeds[0])])
    checked = set()
    for c in configs.values():  # whether data and model fit in memory, once per distinct pair
        key = (repr(c.data), repr(c.model), c.plan.strategy)
        if key not in checked:
            checked.add(key)
            check_resources(c)
    return Point(config, settings, arms, configs, task_notes=notes)


def prepare_point(point: Point, work: Path, threads: int, earlier: list[Path]) -> None:
    """Give ``point`` its work folder, each seed's bound constants, its cells (every arm at every
    seed), and the records of the cells already finished in ``work`` or in an ``earlier`` output
    (see :func:`~.workspace.reuse`)."""
    point.work = work
    work.mkdir(parents=True, exist_ok=True)
    template = _audit_template(point.settings)
    point.cells = []
    t0 = time.perf_counter()
    for seed in point.settings.seeds:
        configs = {a.name: point.configs[cell_name(a.name, seed)] for a in point.arms}
        bound = shared_bound(configs, work, threads, [work, *earlier], f"seed{seed}")
        point.cells += [make_cell(a, seed, configs[a.name], template, threads, bound) for a in point.arms]
    point.bound_seconds = time.perf_counter() - t0
    point.records, point.reused = reuse(point.cells, work / "runs", [work / "runs", *(e / "runs" for e in earlier)])


def run_eval(config: ExperimentConfig, settings: EvalSettings, *, out: str | Path | None = None,
             overwrite: bool = False, progress: bool = False, executor: ExecutorConfig | None = None,
             fresh: bool = False) -> EvalResult:
    """Run the evaluation ``settings`` describes on ``config`` and write ``out`` (see module doc).

    Args:
        config: the base experiment config every arm starts from.
        settings: the arms and the audit.
        out: the output folder [``reports/<settings.name>``, else the first free ``reports/default[-N]``].
        overwrite: replace an existing output (only an earlier evaluation's).
        progress: show a progress bar over the cells.
        executor: where the cells run [this machine, :func:`~.executors.default_workers` workers].
        fresh: compute every cell, reusing none from an interrupted or replaced evaluation.

    Raises:
        ConfigError: bad settings or output (nothing is written).
        EvalFailed: every cell failed (their reasons are in the message and their folders kept).
    """
    start = time.perf_counter()
    executor = (executor or ExecutorConfig()).validate()
    field = "--name" if out is None and settings.name is not None else "--out"  # the option the path came from
    point = plan_point(config, settings)
    with ExitStack() as stack:
        target = claim_output(stack, eval_out(out, settings.name), overwrite, field, "eval.json")
        stack.enter_context(session(executor, len(point.arms)))
        with kept_work(target, field, fresh) as work:
            prepare_point(point, work, executor.threads, [target] if overwrite and not fresh else [])
            execute([point], executor, progress)
            result = finish_point(point, settings.name or target.name, start)
        result.out = target
        publish_dir(work, target)
        return result


def _audit_template(settings: EvalSettings) -> AuditConfig:
    """The audit every arm gets (its devices are filled in per arm)."""
    return AuditConfig(attacks=list(settings.attacks), images=settings.images, seeds=list(settings.attack_seeds),
                       preset=settings.preset, attack_params={k: dict(v) for k, v in settings.attack_params.items()})


def execute(points: list[Point], executor: ExecutorConfig, progress: bool) -> None:
    """Run every point's cells without a record, streaming their records into the points'
    ``records``. An interrupt keeps the finished cells and says how to continue."""
    owners = {id(task[0]): point for point in points for task in point.pending}
    tasks = [task for point in points for task in point.pending]
    total = sum(len(p.cells) for p in points)
    bar = _Progress(total, total - len(tasks), progress)

    def done(task: Task, crash: str | None) -> None:
        cell, run_dir = task
        if crash:  # its process died holding the run folder's lock: the lock file is stale
            lock_file_of(run_dir).unlink(missing_ok=True)
        record = fail_cell(cell, run_dir, crash) if crash else read_cell(run_dir, cell.key)
        if record is None:
            record = fail_cell(cell, run_dir, "its folder holds no complete cell record after it ended")
        owners[id(cell)].records[cell.name] = record
        logger.info("eval: cell %s %s%s", cell.name, "finished" if record.ok else "FAILED: ", record.reason)
        bar.update(cell.name)

    try:
        if tasks:
            EXECUTORS.get(executor.backend)(tasks, executor, done)
    finally:
        bar.close()


@dataclass
class _Rows:
    """The finished cells' rows gathered into the evaluation's tables."""

    plans: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[pd.DataFrame] = field(default_factory=list)
    leakage: list[pd.DataFrame] = field(default_factory=list)
    cuts: list[pd.DataFrame] = field(default_factory=list)
    active: list[pd.DataFrame] = field(default_factory=list)
    detections: list[pd.DataFrame] = field(default_factory=list)
    hijacks: list[dict[str, Any]] = field(default_factory=list)
    epsilons: dict[tuple[str, int], float] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def add(self, cell: Cell, record: CellRecord) -> None:
        if not record.ok:
            self.failed.append({"plan": cell.arm.name, "seed": cell.seed, "kind": cell.arm.kind,
                                "reason": record.reason})
            return
        if cell.arm.kind == "active":  # its own tables: an attacked training is not a plan to compare
            self.active.append(record.frame("active"))
            self.detections.append(record.frame("detections"))
            self.hijacks.append(record.hijack)
            return
        self.plans += record.plans
        self.summary.append(record.summary)
        self.rounds.append(record.frame("rounds"))
        self.leakage.append(record.frame("leakage"))
        self.cuts.append(record.frame("cuts"))
        self.epsilons[(cell.arm.name, cell.seed)] = record.epsilon

    def tables(self, arms: list[Arm], budget_s: float | None, *,
               metric: str) -> tuple[dict[str, pd.DataFrame], float]:
        """The evaluation's tables (:data:`~hasfl_sec.results.EVAL_TABLES`) from the rows, and the
        time budget at which plans' accuracies were compared; leakage is scored by ``metric``
        (:func:`~.tables.task_metric`)."""
        tables = {"plans": pd.DataFrame(self.plans), "summary": pd.DataFrame(self.summary),
                  "rounds": pd.concat(self.rounds, ignore_index=True),
                  "leakage": pd.concat(self.leakage, ignore_index=True),
                  "cuts": pd.concat([c for c in self.cuts if not c.empty] or [pd.DataFrame()], ignore_index=True),
                  "failed": pd.DataFrame(self.failed, columns=EVAL_TABLES["failed"])}
        summary, leakage = tables["summary"], tables["leakage"]
        defenses = []
        for seed, part in summary.groupby("seed", sort=True):
            finished = [a for a in arms if a.name in set(part["plan"])]
            if "sfl" in set(part["plan"]) and any(a.kind == "defense" for a in finished):
                eps = {name: e for (name, s), e in self.epsilons.items() if s == seed}
                frame = defense_table(finished, part, leakage[leakage["seed"] == seed], eps, metric=metric)
                frame.insert(1, "seed", seed)
                defenses.append(frame)
        tables["defenses"] = pd.concat(defenses, ignore_index=True) if defenses else pd.DataFrame()
        tables["pareto"] = pareto_over_seeds(tables["plans"], summary)
        tables["classes"] = class_table(tables["plans"])
        budget = time_budget(summary, budget_s)
        active = _concat(self.active, "active")
        tables.update(active=active, detections=_concat(self.detections, "detections"))
        hijacks = pd.DataFrame(self.hijacks, columns=["plan", "seed", "strategy", "attack", "final_accuracy"])
        tables["hijack"] = hijack_table(active, hijacks)
        tables["detectors"] = detector_table(tables["detections"])
        tables["comparisons"] = comparisons(summary, tables["rounds"], budget, active, hijacks)
        return tables, budget


def _concat(frames: list[pd.DataFrame], table: str) -> pd.DataFrame:
    """The non-empty ``frames`` as one table with the columns of :data:`EVAL_TABLES` ``[table]``."""
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EVAL_TABLES[table])


def finish_point(point: Point, name: str, start: float) -> EvalResult:
    """Tables, figures, ``eval.json`` and the report in ``point.work`` from the cells' records, in
    cell order. Raises :class:`EvalFailed` when no cell finished."""
    work, arms = point.work, point.arms
    rows = _Rows()
    for cell in point.cells:
        rows.add(cell, point.records[cell.name])
    if not rows.summary:  # the tables are built around the trained plans: without one there is no report
        reasons = "; ".join(f"{f['plan']} (seed {f['seed']}): {f['reason']}" for f in rows.failed)
        raise EvalFailed(f"no plan of the evaluation finished ({reasons}); their folders are kept in {work}")
    tables, budget = rows.tables(arms, point.settings.time_budget_s, metric=task_metric(point.config.data.dataset))
    for table in EVAL_TABLES:
        path = work / f"{table}.csv"
        path.unlink(missing_ok=True)  # a continued evaluation's work folder may hold older tables
        if not tables[table].empty:
            tables[table].to_csv(path, index=False)
    figures = work / "figures"
    shutil.rmtree(figures, ignore_errors=True)
    figures.mkdir()
    first_seed = point.settings.seeds[0]  # one seed's grids: the others look alike and would swell the report
    for arm in arms:
        run = work / "runs" / cell_name(arm.name, first_seed)
        for grid in sorted((run / "audit").glob("reconstructions_*.png")):
            attack = grid.stem.removeprefix("reconstructions_")
            shutil.copyfile(grid, figures / f"reconstructions_{arm.name}_{attack}.png")
        for grid in sorted((run / "active").glob("reconstructions_*.png")):  # the hijacker's, in its own section
            shutil.copyfile(grid, figures / f"hijack_{arm.name}.png")
    meta = _meta(point, name, start, budget)
    (work / "eval.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    build_report(work)
    computed = [c.name for c in point.cells if c.name not in point.reused]
    return EvalResult(work, tables, time.perf_counter() - start, computed, list(point.reused))


def _meta(point: Point, name: str, start: float, budget_s: float) -> dict[str, Any]:
    """``eval.json``: what ran, with which settings and versions, each cell's key, status and
    timings, how long the evaluation took since ``start`` (``time.perf_counter``; everything but
    writing the report), the time budget of the accuracy comparison, and the notes."""
    config, settings, arms, cells, records = point.config, point.settings, point.arms, point.cells, point.records
    reference = label_only_note(config_dataset(config), config.seed, config.train.share_labels)
    seeds = ", ".join(str(s) for s in settings.seeds)
    fleet = ("the fleet is drawn again for every seed" if settings.fleet_per_seed else
             f"one fleet for every seed (fleet seed {fixed_fleet_seed(config)})")
    notes = [f"Every arm ran at {len(settings.seeds)} training seed(s) ({seeds}): a seed sets the model's "
             f"initialisation, the train/test split, the partition, sampling and every defense's and attack's "
             f"randomness; {fleet}. Each plan's bound constants are estimated at its seed. Figures are means over "
             f"seeds with 95% Student-t intervals; comparisons are paired over the seeds both arms finished.",
             f"Accuracy at the time budget compares plans at {budget_s:.4g} s of simulated time"
             + (" (set by eval.time_budget_s)." if settings.time_budget_s is not None else
                ": the shortest simulated training time of any plan at any seed, so every plan is measured "
                "within its own training."),
             reference,
             *(f"Text task: {note}." for note in point.task_notes),
             "Defense settings are trained on the sfl plan at plan.cut; their predicted time to target is "
             "the undefended plan's (the bound does not model these defenses)."]
    active = [a for a in arms if a.kind == "active"]
    if active:
        hijack = settings.active
        chosen = ("one device per cut and device class of the plan" if hijack.devices == "representatives" else
                  "every device" if hijack.devices == "all" else f"devices {hijack.devices}")
        notes.append(f"Malicious edge server: {', '.join(a.name for a in active)} train the {hijack.strategy} plan "
                     "anew with the server as the attacker"
                     + (f" ({hijack.attack}, hijacking {chosen}; the others are trained honestly)"
                        if hijack.attack else "")
                     + (f", every device running {', '.join(hijack.detectors)}" if hijack.detectors else "")
                     + ". They are not audited and not compared as plans; section 'A malicious edge server' "
                       "reports them.")
    if any(a.kind == "baseline" and not a.audited for a in arms):
        notes.append("Baseline plans (" + ", ".join(a.name for a in arms if a.kind == "baseline")
                     + ") are trained for the speed comparison and not audited (--full audits them).")
    failed = [r for r in records.values() if not r.ok]
    if failed:
        notes.append(f"{len(failed)} of {len(records)} cells failed and are missing from every table but "
                     "'Failed cells': " + ", ".join(r.name for r in failed) + ".")
    finished = {c.arm.name for c in cells if records[c.name].ok}
    if "sfl" not in finished and any(a.kind == "defense" for a in arms):
        notes.append("The defenses table is missing: its undefended reference, the sfl arm, did not finish.")
    timings = {"bound": point.bound_seconds,
               **{f"{step} {r.name}": float(s) for r in records.values() for step, s in r.timings.items()}}
    return {"name": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": config.to_dict(), "settings": settings.to_dict(), "arms": [vars(a) for a in arms],
            "cells": {c.name: {"key": c.key, "status": records[c.name].status, "reason": records[c.name].reason}
                      for c in cells},
            "hijack": {r.name: r.hijack for r in records.values() if r.ok and r.hijack},
            "code": code_version(), "timings": timings, "time_budget_s": budget_s,
            "wall_time_s": time.perf_counter() - start, "versions": package_versions(), "notes": notes}
