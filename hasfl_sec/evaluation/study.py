"""``hasfl-sec sweep``: a grid over config axes, run as the cells of one study (docs/design.md section 3.2).

A grid file (YAML, TOML or JSON) names the axes and what every point shares::

    name: fleets                    # the output is reports/<name> (default: the file's stem)
    set: [train.rounds=60]          # config overrides every point shares
    axes:                           # config keys and their values; the points are the product
      fleet.heterogeneity: [low, high]
      data.alpha: [0.1, 1.0]
    eval:                           # eval settings every point shares (as in --eval-config)
      seeds: [0, 1, 2]              # every point runs every seed (seed is not an axis)
      budgets: [20]
      defenses: [{defense: noise, param: sigma, values: [1.0]}]

Any config key can be an axis (``data.dataset``, ``model.name``, ``fleet.file``, ``plan.strategy``,
``privacy.budget``, ...; not ``seed``: every point runs the training seeds of ``eval.seeds``);
strategies, budgets and defense settings inside ``eval`` become
the arms of every point. Each point is one evaluation (its own bound estimate, arms and report in
``points/<id>/``); the cells of every point run together on one executor, so a study uses every
worker. The study writes ``points.csv``, one tidy ``summary.csv`` with the axis values as columns,
``failed.csv`` and a report (:func:`hasfl_sec.report.study.build_study_report`).

Resume, failure isolation and locking are those of ``hasfl-sec eval``
(:mod:`~hasfl_sec.evaluation.run`): a study run again into the same output continues it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import ExperimentConfig, config_from_dict
from ..errors import ConfigError, check
from ..fileio import check_folder_name, publish_dir, read_structured
from ..report.study import build_study_report
from ..results import EVAL_TABLES
from ..typed import apply_overrides
from .executors import ExecutorConfig, session
from .run import EvalFailed, EvalResult, Point, execute, finish_point, plan_point, prepare_point
from .settings import EvalSettings, settings_from_mapping
from .workspace import claim_output, kept_work

__all__ = ["Grid", "load_grid", "grid_points", "run_sweep", "StudyResult"]

logger = logging.getLogger(__name__)

_KEYS = {"name", "set", "axes", "eval"}
#: Columns of the study's tables that an axis may not be named after.
_TAKEN = {"point", "cells", "failed", "finished", *EVAL_TABLES["summary"]}
#: Points beyond this are refused: a grid this large is almost always a typo in an axis.
MAX_POINTS = 10_000


@dataclass
class Grid:
    """A sweep's grid (see module doc)."""

    name: str | None = None
    set: list[str] = field(default_factory=list)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)


def load_grid(path: str | Path) -> Grid:
    """The grid in ``path``, its shape checked (the values are checked when the points are built)."""
    values = read_structured(path, "GRID")
    if not isinstance(values, dict):
        raise ConfigError("GRID", str(path), "a mapping with axes (and optionally name, set, eval)")
    unknown = sorted(set(values) - _KEYS)
    check(not unknown, "GRID", unknown, f"only the keys {', '.join(sorted(_KEYS))}")
    name = values.get("name", Path(path).stem)
    check_folder_name("grid.name", name)
    overrides = values.get("set") or []
    check(isinstance(overrides, list) and all(isinstance(o, str) for o in overrides), "grid.set", overrides,
          "a list of KEY=VALUE strings")
    axes = values.get("axes") or {}
    check(isinstance(axes, dict), "grid.axes", axes, "a mapping of config keys to lists of values")
    for key, options in axes.items():
        check(isinstance(options, list) and len(options) >= 1, f"grid.axes.{key}", options, "a non-empty list")
        check(key != "seed", "grid.axes", key, "config keys other than seed",
              "every point runs the training seeds of eval.seeds: set eval: {seeds: [...]} instead")
        check(key not in _TAKEN, "grid.axes", key, "config keys that are not summary columns",
              "the axis values become columns of summary.csv beside " + ", ".join(sorted(_TAKEN)))
    size = 1
    for options in axes.values():
        size *= len(options)
    check(size <= MAX_POINTS, "grid.axes", f"{size} points", f"at most {MAX_POINTS} points")
    settings = values.get("eval") or {}
    check(isinstance(settings, dict), "grid.eval", settings, "a mapping of eval settings")
    return Grid(name, list(overrides), {str(k): list(v) for k, v in axes.items()}, dict(settings))


def _text(value: Any) -> str:
    """An axis value as the right-hand side of a ``--set`` override. JSON is YAML, and a quoted
    string stays a string when the override is parsed back (``"yes"``, ``"1e3"``, ``"null"``);
    dates become text, and NaN and infinities YAML's ``.nan`` and ``.inf``."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return json.dumps(value, default=str)


def _scalar(value: Any) -> Any:
    """An axis value as one table cell: scalars as they are, lists and mappings as JSON text."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value)


def _point_id(values: dict[str, Any]) -> str:
    """A folder name that depends only on the point's axis values (so a grid that grows keeps its
    points' ids): ``key=value`` of each axis (last key part only), then a short hash of the values."""
    parts = [f"{k.rsplit('.', 1)[-1]}={v if isinstance(v, str) else _text(v)}" for k, v in values.items()]
    text = re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(parts))[:80]
    digest = hashlib.sha256(_text(values).encode()).hexdigest()[:6]
    return f"{text}-{digest}" if text else digest


def grid_points(base: ExperimentConfig, grid: Grid) -> list[tuple[str, dict[str, Any], ExperimentConfig]]:
    """Every point of ``grid`` on ``base``: (id, axis values, validated config), in grid order
    (the last axis varies fastest)."""
    shared = apply_overrides(base.to_dict(), grid.set)
    points = []
    for combo in itertools.product(*grid.axes.values()):
        values = dict(zip(grid.axes, combo))
        overrides = [f"{k}={_text(v)}" for k, v in values.items()]
        config = config_from_dict(apply_overrides(shared, overrides))
        points.append((_point_id(values), values, config))
    return points


@dataclass
class StudyResult:
    """Where the study was written, its combined tables and each point's evaluation (None for a
    point whose every cell failed)."""

    out: Path
    points: pd.DataFrame
    summary: pd.DataFrame
    failed: pd.DataFrame
    evaluations: dict[str, EvalResult | None]
    wall_time_s: float

    @property
    def computed(self) -> list[str]:
        """``point/cell`` names computed now."""
        return [f"{p}/{c}" for p, r in self.evaluations.items() if r for c in r.computed]

    @property
    def reused(self) -> list[str]:
        """``point/cell`` names reused from an earlier run of the study."""
        return [f"{p}/{c}" for p, r in self.evaluations.items() if r for c in r.reused]


def run_sweep(base: ExperimentConfig, grid: Grid, *, out: str | Path | None = None, overwrite: bool = False,
              progress: bool = False, executor: ExecutorConfig | None = None, fresh: bool = False) -> StudyResult:
    """Run every point of ``grid`` (see module doc) and write the study to ``out``
    [``reports/<grid.name>``]. Every point's config and settings are validated before anything runs."""
    start = time.perf_counter()
    executor = (executor or ExecutorConfig()).validate()
    settings = settings_from_mapping(grid.eval, "grid.eval")
    specs = grid_points(base, grid)
    points = {pid: plan_point(config, settings) for pid, _, config in specs}
    field_name = "--out" if out is not None else "--name"
    with ExitStack() as stack:
        target = claim_output(stack, Path(out) if out is not None else Path("reports") / (grid.name or "sweep"),
                              overwrite, field_name, "study.json")
        stack.enter_context(session(executor, sum(len(p.arms) for p in points.values())))
        with kept_work(target, field_name, fresh, kind="sweep") as work:
            _drop_stale_points(work / "points", set(points))
            for pid, point in points.items():
                earlier = [target / "points" / pid] if overwrite and not fresh else []
                prepare_point(point, work / "points" / pid, executor.threads, earlier)
            execute(list(points.values()), executor, progress)
            result = _finish_study(grid, settings, specs, points, work, start)
        publish_dir(work, target)
    result.out = target
    for pid, evaluation in result.evaluations.items():
        if evaluation is not None:
            evaluation.out = target / "points" / pid
    return result


def _drop_stale_points(folder: Path, current: set[str]) -> None:
    """Remove the points of an interrupted study that are not in this grid (an axis changed)."""
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name not in current:
                logger.info("sweep: point %s is not in this grid; removed", path.name)
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def _finish_study(grid: Grid, settings: EvalSettings, specs: list[tuple[str, dict[str, Any], ExperimentConfig]],
                  points: dict[str, Point], work: Path, start: float) -> StudyResult:
    """Each point's tables and report, then the study's combined tables, ``study.json`` and report."""
    evaluations: dict[str, EvalResult | None] = {}
    summaries, failures, rows = [], [], []
    for pid, values, _ in specs:
        point = points[pid]
        try:
            evaluations[pid] = result = finish_point(point, pid, start)
        except EvalFailed as exc:
            logger.error("sweep: point %s: %s", pid, exc)
            evaluations[pid] = result = None
        failed = [(name, r) for name, r in point.records.items() if not r.ok]
        cells = {k: _scalar(v) for k, v in values.items()}  # the point's axis values as table cells
        rows.append({"point": pid, **cells, "cells": len(point.cells), "failed": len(failed),
                     "finished": result is not None})
        if result is not None:
            summaries.append(result.summary.assign(point=pid, **cells))
        kinds = {a.name: a.kind for a in point.arms}
        failures += [{"point": pid, "plan": name, "kind": kinds[name], "reason": r.reason} for name, r in failed]
    if not summaries:
        raise EvalFailed(f"every point of the study failed ({len(failures)} cells; the first: {failures[0]['point']}/"
                         f"{failures[0]['plan']}: {failures[0]['reason']}); their folders are kept in {work}")
    axes = list(grid.axes)
    summary = pd.concat(summaries, ignore_index=True)
    if not summary.empty:
        summary = summary[["point", *axes, *[c for c in summary.columns if c not in ("point", *axes)]]]
    tables = {"points": pd.DataFrame(rows), "summary": summary,
              "failed": pd.DataFrame(failures, columns=["point", "plan", "kind", "reason"])}
    for name, frame in tables.items():
        (work / f"{name}.csv").unlink(missing_ok=True)
        if not frame.empty:
            frame.to_csv(work / f"{name}.csv", index=False)
    meta = {"name": grid.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "set": grid.set, "axes": grid.axes, "eval": settings.to_dict(), "points": [p for p, _, _ in specs],
            "wall_time_s": time.perf_counter() - start,
            "notes": [f"{len(failures)} cell(s) failed; see Failed cells."] if failures else []}
    (work / "study.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    build_study_report(work)
    return StudyResult(work, tables["points"], summary, tables["failed"], evaluations, time.perf_counter() - start)
