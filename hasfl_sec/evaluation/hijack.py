"""Active cells: one arm of an evaluation trained with a malicious edge server (docs/privacy.md section 7).

A passive audit reads a finished training; an active attack changes the training (a hijacked
device learns the attacker's task), so an ``active`` arm is a training of its own
(:func:`hasfl_sec.audit.active.run_hijack`). Its cell trains the arm's plan with the attacker as the
edge server and every device running the arm's detectors, writes the run's files into
``runs/<arm>.seed<seed>/active/`` (:func:`~hasfl_sec.audit.active_output.write_hijack`), and records
in ``cell.json`` the attacker's reconstruction scores per measured round and hijacked device, each
detector's outcome per device, and the run's final accuracy.

Which devices are hijacked is chosen from the plan the cell trains (:func:`hijacked_devices`):
by default one per cut and device class, so the figures cover every cut the optimizer picked and
every class of device, while the server trains the task honestly on the others (a server that
hijacked every device would have no model to show for its training).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..audit.active import HijackResult, run_hijack
from ..audit.active_output import write_hijack
from ..config import ExperimentConfig
from ..errors import check
from ..fleet import fleet_classes
from ..results import EVAL_TABLES
from ..runs.setup import Setup
from .records import CellRecord, frame_table
from .settings import Arm

__all__ = ["hijacked_devices", "check_active_arm", "compute_active", "CHOOSERS"]

logger = logging.getLogger(__name__)


def _representatives(setup: Setup) -> list[int]:
    """The first device of each (cut, device class) of the plan."""
    first: dict[tuple[int, str], int] = {}
    for device, key in enumerate(zip(setup.plan.cuts, fleet_classes(setup.fleet))):
        first.setdefault(key, device)
    return sorted(first.values())


#: How an active arm picks its hijacked devices from the plan (``list``/``none``: the arm's
#: settings already name them / there is no attacker).
CHOOSERS: dict[str, Callable[[Setup], list[int]]] = {
    "representatives": _representatives,
    "all": lambda setup: list(range(setup.plan.num_devices)),
}


def hijacked_devices(how: str) -> Callable[[Setup], list[int]] | None:
    """The chooser named ``how`` (None when the devices are given, or for the honest arm)."""
    return CHOOSERS.get(how)


def check_active_arm(arm: Arm, config: ExperimentConfig) -> None:
    """What an active arm's settings need of its config: device ids inside the fleet and a
    hijacking that starts within the run (errors name ``eval.active.*``)."""
    devices = arm.active.get("params", {}).get("devices") if arm.active.get("choose") == "list" else None
    n = config.fleet.num_devices
    check(not devices or max(devices) < n, "eval.active.devices", devices, f"device ids below {n}, the fleet's size")
    arm.hijack().validate("eval.active.", "eval.active.attack_params.", num_devices=config.fleet.num_devices,
                          detector_prefix="eval.active.detector_params.", rounds=config.train.rounds)


def _active_rows(arm: Arm, seed: int, result: HijackResult) -> pd.DataFrame:
    """``active.csv`` rows: the attacker's scores per measured round and hijacked device."""
    rows = [{"plan": arm.name, "seed": seed, "attack": result.settings.attack, "defense": arm.defense,
             "setting": arm.setting, **{k: r[k] for k in ("round", "device", "device_class", "cut", "images", "mse",
                                                          "psnr", "ssim", "baseline_mse", "baseline_ssim")}}
            for r in result.records]
    return pd.DataFrame(rows, columns=EVAL_TABLES["active"])


def _detection_rows(arm: Arm, seed: int, result: HijackResult) -> pd.DataFrame:
    """``detections.csv`` rows: each detector's outcome per device."""
    rows = []
    for d in result.detections:
        device = int(d["device"])
        rows.append({"plan": arm.name, "seed": seed, "defense": arm.defense, "setting": arm.setting,
                     "detector": d["detector"], "device": device, "device_class": result.classes[device],
                     "cut": result.device_cuts[device], "hijacked": bool(d["hijacked"]),
                     "detected_round": d["detected_round"], "checks": d.get("checks"),
                     "mse_at_detection": d.get("mse_at_detection"), "ssim_at_detection": d.get("ssim_at_detection")})
    return pd.DataFrame(rows, columns=EVAL_TABLES["detections"])


def compute_active(cell: Any, run_dir: Path) -> CellRecord:
    """Train ``cell``'s active arm (a :class:`~hasfl_sec.evaluation.cells.Cell`) into ``run_dir``
    and return its record."""
    arm = cell.arm
    t0 = time.perf_counter()
    result = run_hijack(cell.config, arm.hijack(), bound=cell.bound,
                        choose=hijacked_devices(str(arm.active.get("choose", ""))))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_hijack(result, run_dir / "active", run_id=cell.name, config=cell.config.to_dict())
    evaluated = [r.test_accuracy for r in result.rounds if math.isfinite(r.test_accuracy)]
    accuracy = float(evaluated[-1]) if evaluated else math.nan
    hijack = {"plan": arm.name, "seed": cell.seed, "strategy": arm.strategy, "attack": result.settings.attack or "none",
              "defense": result.defense, "setting": arm.setting, "final_accuracy": accuracy,
              "rounds": len(result.rounds), "targets": result.targets, "cuts": result.cuts,
              "threat_model": result.threat_model, "detectors": list(result.settings.detectors)}
    return CellRecord(cell.name, cell.key, active=frame_table(_active_rows(arm, cell.seed, result)),
                      detections=frame_table(_detection_rows(arm, cell.seed, result)), hijack=hijack,
                      timings={"train": time.perf_counter() - t0})
