"""Cells: the independent units an evaluation is made of (docs/design.md section 3.1).

A cell is one arm of an evaluation (a plan, a privacy budget or a defense setting) at one training
seed: it trains, audits the devices that represent each (cut, noise) of its plan, and writes its own
run folder ``runs/<arm>.seed<seed>/``. It needs nothing from other cells but its seed's bound
constants, so cells run in any order, in any process or on any machine
(:mod:`~hasfl_sec.evaluation.executors`).

A cell is identified by its *key*: a hash of everything that determines its result -- the arm,
its resolved experiment config (seed included), the contents of the files the config points to
(fleet file, leakage profile, saved bound) and the resolved data root, the audit settings, the
bound constants its planner uses, the torch threads it runs with (thread count changes
floating-point summation order) and the code version (package version, a hash of the package's
sources and the numeric libraries' versions). The key is recorded in ``runs/<arm>/cell.json``,
which is written last, atomically: a folder whose ``cell.json`` is missing, names another key or
lists a file that is gone is not a finished cell and is computed again. A changed setting
changes exactly the keys of the cells it affects.

``cell.json`` also holds the cell's rows of the evaluation tables. The evaluation always builds
its tables from these records read back from disk, whichever executor ran the cell and whether it
ran now or in an earlier, interrupted evaluation, so the tables are the same in every case.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..audit.config import AuditConfig
from ..audit.entry import audit_trained
from ..audit.output import write_audit
from ..config import ExperimentConfig
from ..defenses.build import describe_defenses
from ..errors import HasflError
from ..fleet import fleet_classes
from ..planning.bound import BoundConstants
from ..planning.strategies import BOUND_STRATEGIES
from ..results import EVAL_TABLES, LEAKAGE_COLUMNS, package_versions
from ..runs.training import train
from .hijack import compute_active
from .records import CELL_FILE, ERROR_FILE, CellRecord, frame_table, read_cell, record_files, write_record
from .sensitivity import cut_sensitivity
from .settings import Arm
from .tables import device_leakage, plan_noise, plan_rows, representatives, summary_row, task_metric

__all__ = ["Cell", "CellRecord", "CELL_FILE", "cell_name", "code_version", "make_cell", "result_key",
           "referenced_files",
           "run_cell", "read_cell", "fail_cell",
           "torch_threads"]

logger = logging.getLogger(__name__)



@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version and a short hash of the package's Python sources (its attack and
    defense subpackages included): any edit to the code changes it."""
    import hasfl_sec

    digest = hashlib.sha256()
    roots = sorted({Path(p).resolve() for p in hasfl_sec.__path__})
    for sub in ("attacks", "defenses"):
        module = __import__(f"hasfl_sec.{sub}", fromlist=["__path__"])
        roots += sorted(Path(p).resolve() for p in module.__path__)
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return f"{package_versions().get('hasfl-sec', '?')}+{digest.hexdigest()[:12]}"


@dataclass
class Cell:
    """One cell: the arm, its experiment config, the audit template (devices are chosen from the
    plan when the cell runs), the torch threads it runs with, the bound constants its planner uses
    (None for planners without a bound) and its key."""

    arm: Arm
    seed: int
    config: ExperimentConfig
    audit: AuditConfig
    threads: int
    bound: BoundConstants | None
    key: str

    @property
    def name(self) -> str:
        """``<arm>.seed<seed>``: the run folder's name (the arm's name is the ``plan`` column)."""
        return cell_name(self.arm.name, self.seed)


def cell_name(arm: str, seed: int) -> str:
    """The name (and run folder) of the cell of ``arm`` at training seed ``seed``."""
    return f"{arm}.seed{seed}"


def referenced_files(config: ExperimentConfig) -> dict[str, str]:
    """The files a config points to and a hash of each one's contents (a fleet file, a measured
    leakage profile, a saved bound), and the resolved data root: a cell's result depends on what
    they hold, not on their names. (The data under the root is not hashed; its path is.)"""
    out: dict[str, str] = {}
    for field_name, value in (("fleet.file", config.fleet.file), ("privacy.profile", config.privacy.profile),
                              ("optimizer.bound_file", config.optimizer.bound_file)):
        path = Path(value) if value else None
        if path is not None and path.is_file():
            out[field_name] = hashlib.sha256(path.read_bytes()).hexdigest()
    if config.data.data_root:
        out["data.data_root"] = str(Path(config.data.data_root).expanduser().resolve())
    return out


def result_key(*parts: Any) -> str:
    """A short hash of ``parts`` (JSON, sorted keys), with the code version and the numeric
    libraries' versions added: the identity of a computed result."""
    payload = {"parts": parts, "code": code_version(),
               "versions": {k: v for k, v in package_versions().items() if k != "hasfl-sec"}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def make_cell(arm: Arm, seed: int, config: ExperimentConfig, audit: AuditConfig, threads: int,
              bound: BoundConstants | None) -> Cell:
    """The cell of ``arm`` at ``seed`` (``config`` is the arm's config at that seed), with its key
    (see module doc). The bound enters the key only when the arm's planner uses it."""
    used = bound if config.plan.strategy in BOUND_STRATEGIES else None
    key = result_key(dataclasses.asdict(arm), seed, config.to_dict(), referenced_files(config),
                     dataclasses.asdict(audit) if arm.audited else None,  # an unaudited cell never uses it
                     used.to_dict() if used is not None else None, threads)
    return Cell(arm, seed, config, audit, threads, used, key)


def _reason(exc: BaseException) -> str:
    """A failure in one line: our own errors say it already; others get their type."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, HasflError) and text else f"{type(exc).__name__}: {text}" if text \
        else type(exc).__name__


def fail_cell(cell: Cell, run_dir: Path, reason: str) -> CellRecord:
    """Record ``cell`` as failed with ``reason`` (one line) in ``run_dir``."""
    record = CellRecord(cell.name, cell.key, status="failed", reason=reason)
    write_record(record, run_dir)
    return record


class torch_threads:
    """Run a block with ``n`` torch CPU threads, restoring the caller's setting afterwards."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.before = 0

    def __enter__(self) -> "torch_threads":
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.before)


def run_cell(cell: Cell, run_dir: Path) -> CellRecord:
    """Compute ``cell`` into ``run_dir`` (emptied first) and write its ``cell.json``.

    A failure is recorded (one-line reason in ``cell.json``, the traceback in ``error.txt``) and
    returned, never raised: the other cells of the evaluation go on. Interrupts (Ctrl-C) propagate.
    """
    if run_dir.exists():
        shutil.rmtree(run_dir)
    try:
        with torch_threads(cell.threads):
            record = COMPUTE.get(cell.arm.kind, _compute)(cell, run_dir)
    except Exception as exc:  # one cell's failure must not stop the others (recorded, not hidden)
        logger.error("cell %s failed: %s", cell.name, _reason(exc))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text("".join(traceback.format_exception(exc)))
        return fail_cell(cell, run_dir, _reason(exc))
    record.files = record_files(run_dir)
    write_record(record, run_dir)
    return record


def _compute(cell: Cell, run_dir: Path) -> CellRecord:
    """Train the cell's arm, audit the devices that represent each (cut, noise) of its plan on the
    trained run in memory (unless the arm is not audited), and return its rows, each with the
    cell's seed."""
    arm, cfg = cell.arm, cell.config
    t0 = time.perf_counter()
    result = train(cfg, out_dir=run_dir, bound=cell.bound)
    timings = {"train": time.perf_counter() - t0}
    epsilon = _epsilon(result.trainer.defense.report())  # before the audit's replay advances it
    plan = result.plan
    reps = representatives(plan.cuts, plan_noise(plan))
    cuts = _why_cuts(cell, result)  # before the audit, which releases the training setup
    defense = describe_defenses(cfg.defense)
    leakage = pd.DataFrame(columns=LEAKAGE_COLUMNS)
    if arm.audited:
        t0 = time.perf_counter()
        audited = audit_trained(result, dataclasses.replace(cell.audit, devices=sorted(set(reps.values()))))
        write_audit(audited, run_dir / "audit")
        timings["audit"] = time.perf_counter() - t0
        defense = str(audited.meta.get("defense", defense))
        leakage = audited.frame.copy()
    metric = task_metric(cfg.data.dataset)
    per_device = device_leakage(leakage, reps, plan.cuts, metric=metric)
    summary = summary_row(arm, defense=defense, budget_metric=cfg.privacy.metric, rounds=result.rounds, plan=plan,
                          target=cfg.optimizer.target_accuracy or 0.9, leaks=per_device,
                          wall_time_s=result.wall_time_s, metric=metric)
    rounds = result.rounds[["round", "sim_time_s", "wall_time_s", "train_loss", "test_accuracy"]].copy()
    plans = plan_rows(arm, plan, result.fleet, result.profile, cfg.privacy.metric,
                      (plan.privacy or {}).get("leakage"))
    for frame in (rounds, leakage, cuts):
        frame.insert(0, "plan", arm.name)
        frame.insert(1, "seed", cell.seed)
    return CellRecord(
        cell.name, cell.key,
        plans=[{"plan": arm.name, "seed": cell.seed, **row, "leakage": per_device[row["device"]][0]} for row in plans],
        summary={"plan": arm.name, "seed": cell.seed, **summary}, rounds=frame_table(rounds),
        leakage=frame_table(leakage), cuts=frame_table(cuts),
        leaks={str(d): float(v) for d, (v, _) in per_device.items()}, epsilon=epsilon, timings=timings)


#: How a cell of each arm kind is computed, where it differs from :func:`_compute` (train, then audit):
#: an active arm trains with a malicious server (:mod:`~hasfl_sec.evaluation.hijack`).
COMPUTE: dict[str, Callable[[Cell, Path], CellRecord]] = {"active": compute_active}

#: Planners whose cuts the evaluation explains (``cuts.csv``): those that choose cuts from the bound.
EXPLAINED = ("hasfl",)


def _why_cuts(cell: Cell, result: Any) -> pd.DataFrame:
    """The cut-sensitivity rows of a plan of :data:`EXPLAINED` (empty for other arms): why its device
    classes took their cuts (:func:`~hasfl_sec.evaluation.sensitivity.cut_sensitivity`)."""
    columns = [c for c in EVAL_TABLES["cuts"] if c not in ("plan", "seed")]
    if cell.config.plan.strategy not in EXPLAINED or result.setup is None:
        return pd.DataFrame(columns=columns)
    plan = result.plan
    rows = cut_sensitivity(result.setup.context.problem(), plan.batch_sizes, plan.cuts, fleet_classes(result.fleet))
    return pd.DataFrame(rows, columns=columns)


def _epsilon(report: dict[str, float]) -> float:
    """The largest finite privacy loss in a defense report (NaN when no defense claims one; an
    unbounded epsilon, written as null in the run's manifest, claims none)."""
    values = [float(v) for k, v in report.items() if k.endswith("epsilon") and math.isfinite(float(v))]
    return max(values) if values else math.nan
