"""Reading run directories back: one reader per run file, one-line errors naming the field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig, config_from_dict
from ..errors import ConfigError
from ..fileio import read_structured
from ..fleet import Fleet, load_fleet
from ..planning.bound import BoundConstants
from ..results import RunDir
from ..sfl.plan import Plan
from .checkpoints import load_weights

__all__ = ["read_run_file", "read_run_file_with", "SavedRun", "load_run"]


def read_run_file_with(run: RunDir, name: str, reader: Any, field: str = "--resume") -> Any:
    """``reader(path)`` of the run's file ``name``, turning a missing or damaged file of a run into a one-line error."""
    if not run.file(name).is_file():
        raise ConfigError(field, str(run.file(name)), "a run directory written by hasfl-sec train",
                          f"{name} is missing")
    try:
        return reader(run.file(name))
    except ConfigError:
        raise
    except Exception as exc:  # a damaged file: say which one instead of a traceback
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(field, str(run.file(name)), "an intact file written by hasfl-sec train",
                          first) from None


def read_run_file(run: RunDir, name: str, field: str = "--resume") -> Any:
    """One of a run's own files, parsed by its reader in :data:`_READERS`."""
    return read_run_file_with(run, name, lambda path: _READERS[name](path, field), field)


_READERS: dict[str, Any] = {
    "manifest.json": lambda path, field: json.loads(path.read_text()),
    "config.yaml": lambda path, field: config_from_dict(read_structured(path, field)),
    "fleet.yaml": lambda path, field: load_fleet(path),
    "plan.json": lambda path, field: Plan.from_dict(json.loads(path.read_text())),
    "bound.json": lambda path, field: BoundConstants.load(path),
    "checkpoint.pt": lambda path, field: load_weights(path, field, "a checkpoint written by hasfl-sec train"),
}


@dataclass
class SavedRun:
    """A finished run directory as written by :func:`train`, read back for auditing."""

    path: Path
    run_id: str
    config: ExperimentConfig
    fleet: Fleet
    plan: Plan
    checkpoint: dict[str, Any]
    bound: BoundConstants | None


def load_run(path: str | Path, field: str = "RUN_DIR") -> SavedRun:
    """Read a finished run (config, fleet, plan, bound, last checkpoint); one-line errors name ``field``."""
    run = RunDir(path)
    if not run.path.is_dir():
        raise ConfigError(field, str(run.path), "a run directory written by hasfl-sec train", "no such directory")
    manifest = read_run_file(run, "manifest.json", field)
    config = read_run_file(run, "config.yaml", field)
    fleet = read_run_file(run, "fleet.yaml", field)
    plan = read_run_file(run, "plan.json", field)
    bound = read_run_file(run, "bound.json", field) if run.file("bound.json").is_file() else None
    state = read_run_file(run, "checkpoint.pt", field)
    return SavedRun(run.path, str(manifest.get("run_id", run.path.name)), config, fleet, plan, state, bound)
