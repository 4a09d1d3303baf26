"""Run directories: resolved config, manifest, tidy metrics, per-round table; all writes atomic.

Layout of one run (docs/design.md section 6)::

    RUN_DIR/
      config.yaml      resolved config (after file, options and --set overrides)
      manifest.json    run id, status, seed, command line, versions, timings, headline figures
      plan.json        per-device batch sizes and cuts
      fleet.yaml       the device profiles used
      profile.csv      the model's per-cut profile (FLOPs, smashed bytes, parameter bytes)
      rounds.csv       round, train_loss, test_loss, test_accuracy, sim_time_s, wall_time_s, aggregated
      metrics.csv      long format: run_id, phase, round, device, cut, batch, attack, defense, metric, value
      checkpoint.pt    latest checkpoint (``--resume`` continues from it)

Every file is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

__all__ = ["METRIC_COLUMNS", "LEAKAGE_COLUMNS", "EVAL_TABLES", "RunDir", "atomic_write_text", "atomic_torch_save",
           "package_versions", "metrics_frame"]

METRIC_COLUMNS = ["run_id", "phase", "round", "device", "cut", "batch", "attack", "defense", "metric", "value"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename (load with ``weights_only=True``)."""
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    out = {"python": platform.python_version()}
    for name in ("hasfl-sec", "torch", "torchvision", "numpy", "scikit-learn", "scikit-image", "opacus"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def metrics_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly :data:`METRIC_COLUMNS` (missing fields empty)."""
    return pd.DataFrame(list(rows), columns=METRIC_COLUMNS)


class RunDir:
    """One run's directory and its files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        """Path of ``name`` inside the run directory."""
        return self.path / name

    def exists(self) -> bool:
        """True if the directory holds a manifest (a run was started there)."""
        return self.file("manifest.json").is_file()

    def create(self) -> None:
        """Make the directory (parents too)."""
        self.path.mkdir(parents=True, exist_ok=True)

    def write_text(self, name: str, text: str) -> Path:
        """Atomically write a text file into the run directory."""
        target = self.file(name)
        atomic_write_text(target, text)
        return target

    def write_json(self, name: str, value: Any) -> Path:
        """Atomically write JSON."""
        return self.write_text(name, json.dumps(value, indent=2, default=str) + "\n")

    def write_frame(self, name: str, frame: pd.DataFrame) -> Path:
        """Atomically write a DataFrame as CSV (and Parquet beside it when pyarrow is present)."""
        target = self.write_text(name, frame.to_csv(index=False))
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return target
        tmp = self.file(f".{Path(name).stem}.parquet.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, self.file(f"{Path(name).stem}.parquet"))
        return target

    def read_json(self, name: str) -> Any:
        """Parse a JSON file of the run."""
        return json.loads(self.file(name).read_text())

    def new_manifest(self, *, run_id: str, seed: int, config_hash: str, command: str = "train") -> dict[str, Any]:
        """A fresh manifest with status ``running``."""
        return {
            "run_id": run_id,
            "command": command,
            "argv": sys.argv,
            "status": "running",
            "seed": seed,
            "config_hash": config_hash,
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": package_versions(),
            "platform": platform.platform(),
        }

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the manifest and rewrite it atomically."""
        manifest = self.read_json("manifest.json") if self.exists() else {}
        manifest.update(fields)
        self.write_json("manifest.json", manifest)
        return manifest


#: leakage.csv of an audit: the long metric columns of run files (docs/design.md section 6), extended
#: by the spread over images and seeds, the estimator's source, the threat model and parameters.
LEAKAGE_COLUMNS = ["run_id", "phase", "round", "device", "cut", "batch", "attack", "defense", "metric", "value",
                   "std", "n", "seeds", "source", "threat_model", "params"]

#: Every table of an eval directory, in report order, and the columns it has. ``seed`` is the
#: training seed: the per-seed tables hold one row per seed; ``comparisons``, ``classes``,
#: ``pareto``, ``hijack`` and ``detectors`` are over seeds (means, 95% interval bounds ``*_low``/``*_high``, see
#: :mod:`hasfl_sec.stats`).
EVAL_TABLES: dict[str, list[str]] = {
    "comparisons": ["comparison", "plan", "reference", "metric", "scale", "estimate", "low", "high", "pairs",
                    "significant", "method"],
    "plans": ["plan", "seed", "strategy", "budget_metric", "budget", "device", "device_class", "batch", "cut",
              "cut_name", "noise_sigma", "predicted_leakage", "leakage", "compute_flops", "uplink_bps", "compute_s",
              "comm_s"],
    "classes": ["plan", "device_class", "devices", "seeds", "batch", "batch_low", "batch_high", "cuts",
                "noise_sigma", "noise_sigma_low", "noise_sigma_high", "compute_s", "compute_s_low", "compute_s_high",
                "comm_s", "comm_s_low", "comm_s_high", "leakage", "leakage_low", "leakage_high"],
    "cuts": ["plan", "seed", "device_class", "cut", "chosen", "rounds", "round_s", "time_to_target_s", "rounds_ratio",
             "round_s_ratio", "time_ratio"],
    "summary": ["plan", "seed", "strategy", "kind", "budget_metric", "budget", "defense", "final_accuracy", "rounds",
                "sim_time_s", "predicted_rounds", "predicted_time_to_target_s", "measured_rounds",
                "measured_time_to_target_s", "target_accuracy", "max_leakage", "leakage_metric", "strongest_attack",
                "wall_time_s"],
    "rounds": ["plan", "seed", "round", "sim_time_s", "wall_time_s", "train_loss", "test_accuracy"],
    "leakage": ["plan", "seed", *LEAKAGE_COLUMNS],
    "defenses": ["defense", "seed", "setting", "strength", "cut", "accuracy", "accuracy_drop", "attack", "adaptive",
                 "leakage", "leakage_metric", "ssim", "mse", "psnr", "epsilon"],
    "pareto": ["plan", "device_class", "seeds", "leakage", "leakage_low", "leakage_high",
               "predicted_time_to_target_s", "predicted_time_to_target_s_low", "predicted_time_to_target_s_high",
               "measured_time_to_target_s", "measured_time_to_target_s_low", "measured_time_to_target_s_high",
               "measured_time_to_target_s_n", "final_accuracy", "final_accuracy_low", "final_accuracy_high",
               "on_front"],
    "failed": ["plan", "seed", "kind", "reason"],
    "active": ["plan", "seed", "attack", "defense", "setting", "round", "device", "device_class", "cut", "images",
               "mse", "psnr", "ssim", "baseline_mse", "baseline_ssim"],
    "detections": ["plan", "seed", "defense", "setting", "detector", "device", "device_class", "cut", "hijacked",
                   "detected_round", "checks", "mse_at_detection", "ssim_at_detection"],
    "hijack": ["plan", "attack", "defense", "setting", "cut", "device_class", "seeds", "round",
               *[f"{c}{s}" for c in ("mse", "ssim", "psnr", "baseline_mse", "below_guess_round", "accuracy")
                 for s in ("", "_low", "_high", "_n")],
               "mse_change", "mse_change_low", "mse_change_high", "mse_change_n", "mse_change_significant"],
    "detectors": ["plan", "defense", "setting", "detector", "seeds", "hijacked_runs", "caught", "caught_rate",
                  "caught_low", "caught_high",
                  *[f"{c}{s}" for c in ("detection_round", "mse_at_detection", "ssim_at_detection")
                    for s in ("", "_low", "_high", "_n")],
                  "honest_runs", "false_alarms", "false_alarm_rate", "false_alarm_low", "false_alarm_high"],
}
