"""What a cell leaves behind: its record (``cell.json``), written last and read back.

``cell.json`` holds the cell's status and its rows of the evaluation's tables; the evaluation
builds every table from these records read back from disk (:mod:`~hasfl_sec.evaluation.cells`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..results import atomic_write_text

__all__ = ["CELL_FILE", "ERROR_FILE", "CellRecord", "frame_table", "record_files", "write_record", "read_cell"]

#: The file that marks a finished (or failed) cell; written last.
CELL_FILE = "cell.json"
#: A failed cell's traceback, for the user who wants more than the one-line reason.
ERROR_FILE = "error.txt"


@dataclass
class CellRecord:
    """What ``cell.json`` holds: the cell's status and, when it finished, its rows of the tables.

    Attributes:
        name, key: the cell's name (``<arm>.seed<seed>``) and key.
        status: ``ok`` or ``failed``; ``reason`` is a failure's one line.
        plans, summary: rows of ``plans.csv`` and ``summary.csv`` (with the cell's ``seed``).
        rounds, leakage: the cell's parts of ``rounds.csv`` and ``leakage.csv`` (column names and rows).
        leaks: per device, the strongest attack's leakage at its cut (for the Pareto table).
        cuts: the cell's part of ``cuts.csv`` (plans of :data:`EXPLAINED` only,
            :mod:`~hasfl_sec.evaluation.sensitivity`).
        epsilon: the largest finite privacy loss a defense claims (NaN: none).
        active, detections: an active cell's parts of ``active.csv`` (the attacker's reconstructions
            per measured round and hijacked device) and ``detections.csv`` (each detector per device).
        hijack: an active cell's run: its final accuracy, hijacked devices and threat model.
        timings: wall-clock seconds of ``train`` and ``audit``.
        files: every file of the run folder and its size, to verify the folder is complete.
        host, pid: the machine and process that computed the cell.
    """

    name: str
    key: str
    status: str = "ok"
    reason: str = ""
    plans: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    rounds: dict[str, list] = field(default_factory=dict)
    leakage: dict[str, list] = field(default_factory=dict)
    leaks: dict[str, float] = field(default_factory=dict)
    cuts: dict[str, list] = field(default_factory=dict)
    epsilon: float = math.nan
    active: dict[str, list] = field(default_factory=dict)
    detections: dict[str, list] = field(default_factory=dict)
    hijack: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    host: str = ""
    pid: int = 0

    @property
    def ok(self) -> bool:
        """Whether the cell finished."""
        return self.status == "ok"

    def frame(self, part: str) -> pd.DataFrame:
        """``rounds``, ``leakage``, ``cuts``, ``active`` or ``detections`` as a DataFrame."""
        table = getattr(self, part)
        return pd.DataFrame(table.get("data", []), columns=table.get("columns", []))

    def device_leaks(self) -> dict[int, float]:
        """``leaks`` with integer device ids (JSON keys are strings)."""
        return {int(d): float(v) for d, v in self.leaks.items()}


def _plain(value: Any) -> Any:
    """JSON-safe Python scalars for numpy ones (floats keep every bit: JSON writes ``repr``)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def frame_table(frame: pd.DataFrame) -> dict[str, list]:
    """A table as ``cell.json`` stores it: its column names and rows."""
    return {"columns": [str(c) for c in frame.columns], "data": frame.astype(object).to_numpy().tolist()}


def record_files(run_dir: Path) -> dict[str, int]:
    """Every file of a run folder (but the record and the traceback) and its size."""
    return {str(p.relative_to(run_dir)): p.stat().st_size for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in (CELL_FILE, ERROR_FILE)}


def write_record(record: CellRecord, run_dir: Path) -> None:
    """Write ``record`` atomically as ``run_dir/cell.json`` (the folder is made if needed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record.host, record.pid = platform.node(), os.getpid()
    text = json.dumps(dataclasses.asdict(record), indent=1, default=_plain)
    atomic_write_text(run_dir / CELL_FILE, text + "\n")


def read_cell(run_dir: Path, key: str | None = None) -> CellRecord | None:
    """The record in ``run_dir/cell.json``; None if there is none, it does not parse, it names
    another key than ``key`` (when given), or a finished cell's files are missing or changed size."""
    try:
        values = json.loads((run_dir / CELL_FILE).read_text())
        record = CellRecord(**values)
    except (OSError, ValueError, TypeError):
        return None
    if key is not None and record.key != key:
        return None
    if record.ok:
        for name, size in record.files.items():
            path = run_dir / name
            if not path.is_file() or path.stat().st_size != size:
                return None
    return record
