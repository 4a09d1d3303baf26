"""The eval directory: its tables, how they are read back, and small helpers that derive columns.

An eval directory (written by ``hasfl-sec eval``, or by :func:`~hasfl_sec.evaluation.collect.collect_runs`
from plain training runs) holds ``eval.json`` and the CSV tables of :data:`EVAL_TABLES`. Any table may be
missing or empty. A table that is present must have the :data:`REQUIRED` columns (a renamed key
column is a one-line error, not a silently empty section); the other columns of :data:`EVAL_TABLES` are
filled with empty values when absent, and further columns are kept (some are shown when present).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..fileio import read_structured
from ..results import EVAL_TABLES

logger = logging.getLogger(__name__)

__all__ = ["REQUIRED", "EvalData", "is_eval_dir", "load_eval", "read_table", "summary_metric", "defense_leakage", "metric_label",
           "device_classes", "time_to_target", "pareto_front", "leakage_frame"]


#: columns without which a table cannot be rendered; the other columns of :data:`EVAL_TABLES` are
#: filled with empty values (and a warning) when a table lacks them.
REQUIRED: dict[str, list[str]] = {
    "comparisons": ["comparison", "plan", "reference", "metric", "estimate"],
    "classes": ["plan", "device_class"],
    "cuts": ["plan", "device_class", "cut", "time_ratio"],
    "plans": ["plan", "device", "batch", "cut"],
    "summary": ["plan"],
    "rounds": ["plan", "round", "sim_time_s", "test_accuracy"],
    "leakage": ["plan", "device", "cut", "attack", "metric", "value"],
    "defenses": ["defense", "attack", "accuracy_drop"],
    "pareto": ["plan", "device_class", "leakage", "on_front"],
    "failed": ["plan", "reason"],
    "active": ["plan", "seed", "round", "device", "mse", "baseline_mse"],
    "detections": ["plan", "seed", "detector", "device", "hijacked", "detected_round"],
    "hijack": ["plan", "cut", "device_class", "mse"],
    "detectors": ["plan", "detector", "caught", "false_alarms"],
}

#: columns read as text whatever they look like (empty cells become "").
_TEXT = {"plan", "strategy", "kind", "budget_metric", "device_class", "cut_name", "defense", "strongest_attack",
         "setting", "attack", "run_id", "phase", "metric", "seeds", "source", "threat_model", "params", "reason",
         "comparison", "reference", "scale", "method", "cuts", "detector", "leakage_metric"}
_BOOL = {"adaptive", "on_front", "significant", "chosen", "hijacked", "mse_change_significant"}


@dataclass
class EvalData:
    """An eval directory read back: ``eval.json`` and one DataFrame per table (empty when absent)."""

    path: Path
    meta: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def table(self, name: str) -> pd.DataFrame:
        """The table ``name`` (an empty frame with its columns when it is missing)."""
        return self.tables.get(name, pd.DataFrame(columns=EVAL_TABLES[name]))

    def has(self, name: str) -> bool:
        """Whether the table is present and has rows."""
        return name in self.tables and not self.tables[name].empty

    def plans(self) -> list[str]:
        """Plan names in the order they first appear (summary, then plans, rounds, leakage)."""
        seen: dict[str, None] = {}
        for name in ("summary", "plans", "rounds", "leakage", "pareto"):
            for plan in self.table(name).get("plan", pd.Series(dtype=str)):
                seen.setdefault(str(plan), None)
        return list(seen)

    def leakage_metric(self) -> str:
        """The metric the evaluation scored leakage by (:func:`summary_metric`)."""
        return summary_metric(self.table("summary"))


def defense_leakage(defenses: pd.DataFrame) -> pd.DataFrame:
    """``defenses.csv`` with its ``leakage`` column as floats; an evaluation written before the
    column existed scored defenses by SSIM, so its ``ssim`` fills in."""
    d = defenses.copy()
    leakage = pd.to_numeric(d.get("leakage", pd.Series(np.nan, index=d.index)), errors="coerce")
    d["leakage"] = leakage.fillna(pd.to_numeric(d["ssim"], errors="coerce")) if "ssim" in d.columns else leakage
    return d


_METRIC_LABELS = {"ssim": "SSIM", "token_accuracy": "token accuracy"}


def metric_label(metric: str) -> str:
    """How the report names a leakage metric (:data:`hasfl_sec.metrics.TASK_LEAKAGE_METRICS`): "SSIM",
    "token accuracy"; SSIM for an empty name, which an evaluation that predates the
    ``leakage_metric`` column leaves."""
    return _METRIC_LABELS.get(metric or "ssim", metric)


def summary_metric(summary: pd.DataFrame) -> str:
    """The metric a ``summary.csv`` scored leakage by (its ``leakage_metric``): ``"ssim"`` or
    ``"token_accuracy"``; ``"ssim"`` for an evaluation that predates the column."""
    names = [str(m) for m in summary.get("leakage_metric", pd.Series(dtype=str)).dropna() if str(m)]
    return names[0] if names else "ssim"


def is_eval_dir(path: str | Path) -> bool:
    """True if ``path`` is a directory holding ``eval.json``."""
    return (Path(path) / "eval.json").is_file()


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def read_table(eval_dir: str | Path, name: str, field_name: str = "DIR") -> pd.DataFrame | None:
    """``<eval_dir>/<name>.csv`` as a DataFrame; ``None`` if the file is missing, an empty frame
    with the table's columns if it has no rows. Columns of :data:`EVAL_TABLES` it lacks (other than
    the :data:`REQUIRED` ones) are added empty.

    Raises:
        ConfigError: the file does not parse or lacks a :data:`REQUIRED` column.
    """
    path = Path(eval_dir) / f"{name}.csv"
    if not path.is_file():
        return None
    columns = EVAL_TABLES[name]
    try:
        frame = pd.read_csv(path, dtype={c: str for c in _TEXT}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=columns)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(field_name, str(path), f"a CSV table with columns {', '.join(columns)}", first) from None
    absent = [c for c in REQUIRED[name] if c not in frame.columns]
    if absent:
        raise ConfigError(field_name, str(path), f"a CSV table with columns {', '.join(columns)}",
                          f"missing column(s): {', '.join(absent)}")
    if "seed" in columns and "seed" not in frame.columns:  # written before training seeds: one seed
        frame["seed"] = 0
    filled = [c for c in columns if c not in frame.columns]
    if filled:
        logger.warning("%s lacks column(s) %s; shown as empty", path, ", ".join(filled))
        for col in filled:
            frame[col] = "" if col in _TEXT else (False if col in _BOOL else np.nan)
    for col in _TEXT & set(frame.columns):
        frame[col] = frame[col].fillna("")
    for col in _BOOL & set(frame.columns):
        frame[col] = frame[col].map(_to_bool).astype(bool)
    for col in [c for c in columns if c not in _TEXT | _BOOL and c in frame.columns]:
        numbers = pd.to_numeric(frame[col], errors="coerce")
        if (numbers.isna() & frame[col].notna()).any():  # a hand-edited cell that is not a number
            bad = frame.loc[numbers.isna() & frame[col].notna(), col].iloc[0]
            raise ConfigError(field_name, str(path), f"numbers in column {col!r}", f"found {bad!r}")
        frame[col] = numbers
    return frame


def load_eval(eval_dir: str | Path, field_name: str = "DIR") -> EvalData:
    """Read ``eval.json`` and every table of an eval directory; one-line errors name ``field_name``."""
    path = Path(eval_dir)
    if not path.is_dir():
        raise ConfigError(field_name, str(path), "an eval directory (with eval.json)", "no such directory")
    meta = read_structured(path / "eval.json", field_name)
    if not isinstance(meta, dict):
        raise ConfigError(field_name, str(path / "eval.json"), "a JSON object", f"got {type(meta).__name__}")
    data = EvalData(path, meta)
    for name in EVAL_TABLES:
        frame = read_table(path, name, field_name)
        if frame is None:
            data.missing[name] = f"no {name}.csv"
        elif frame.empty:
            data.missing[name] = f"{name}.csv is empty"
            data.tables[name] = frame
        else:
            data.tables[name] = frame
    return data


# derived columns ---------------------------------------------------------------------------------
def device_classes(flops: Sequence[float]) -> list[str]:
    """``slow``/``medium``/``fast`` by compute tertile (rank-based, so ties and small fleets work)."""
    values = np.asarray(flops, dtype=float)
    n = len(values)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(n, dtype=int)
    ranks[order] = np.arange(n)
    names = ("slow", "medium", "fast")
    return [names[min(2, (3 * int(r)) // n)] for r in ranks]


def time_to_target(rounds: pd.DataFrame, target: float | None) -> float:
    """Simulated time of the first evaluated round whose test accuracy reaches ``target`` (NaN if none)."""
    if target is None or not np.isfinite(target) or rounds.empty:
        return float("nan")
    hit = rounds[rounds["test_accuracy"].astype(float) >= float(target)]
    return float(hit["sim_time_s"].iloc[0]) if not hit.empty else float("nan")


def pareto_front(leakage: Sequence[float], time_s: Sequence[float]) -> list[bool]:
    """Which points are Pareto-optimal when both leakage and time are minimised.

    A point with a NaN coordinate (e.g. a plan that never reached the target) is never on the
    front and never dominates another.
    """
    pts = np.column_stack([np.asarray(leakage, dtype=float), np.asarray(time_s, dtype=float)])
    ok = np.isfinite(pts).all(axis=1)
    out = []
    for i, p in enumerate(pts):
        if not ok[i]:
            out.append(False)
            continue
        others = pts[ok]
        dominated = ((others <= p).all(axis=1) & (others < p).any(axis=1)).any()
        out.append(not bool(dominated))
    return out


def leakage_frame(leakage: pd.DataFrame, metric: str = "ssim") -> pd.DataFrame:
    """Rows of real attacks (not the attack-independent ``none``) for ``metric``, values as floats."""
    if leakage.empty:
        return leakage
    rows = leakage[(leakage["attack"] != "none") & (leakage["attack"] != "") & (leakage["metric"] == metric)].copy()
    rows["value"] = rows["value"].astype(float)
    return rows
