"""Writing a hijacked training (:mod:`.active`): its metrics, the attacker's losses, figures.

Rendered in a temporary sibling directory and renamed into place at the end, like an audit
(:mod:`.output`), so an interrupted run leaves no half-written folder.

Layout::

    OUT/
      metrics.csv              long format (hasfl_sec.results.METRIC_COLUMNS and the device's
                               class), phase "hijack": the attack's mse/psnr/ssim per measured
                               round and device, and the mean-image baseline as attack "mean-image"
      attacker.csv             the attacker's own losses per round and cut (with an attack)
      detections.csv           per detector and device: the round of its alarm (empty: none),
                               whether the device was hijacked, the attacker's MSE/SSIM then
      rounds.csv               the run's rounds (loss, accuracy, both clocks)
      active.json              settings, threat model, hijacked devices and cuts, config
      hijack_mse.png           reconstruction MSE against rounds, per device, beside the baseline
      reconstructions_<attack>.png  originals and the last reconstructions, per device
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..fileio import check_out, publish_dir, work_dir  # noqa: E402
from ..results import metrics_frame  # noqa: E402
from .active import HijackResult  # noqa: E402
from .output import reconstruction_grid  # noqa: E402

__all__ = ["write_hijack", "hijack_frame", "HIJACK_METRICS"]

#: The per-round reconstruction metrics of a hijacked device.
HIJACK_METRICS = ("mse", "psnr", "ssim")


def hijack_frame(result: HijackResult, run_id: str) -> pd.DataFrame:
    """The measurements as rows of :data:`~hasfl_sec.results.METRIC_COLUMNS`, with each device's
    class (``device_class``, :func:`~hasfl_sec.fleet.fleet_classes`) added as a last column."""
    attack = result.settings.attack or "none"
    rows: list[dict[str, Any]] = []
    for r in result.records:
        key = {"run_id": run_id, "phase": "hijack", "round": r["round"], "device": r["device"], "cut": r["cut"],
               "batch": r["images"], "defense": result.defense, "device_class": r.get("device_class", "")}
        rows += [{**key, "attack": attack, "metric": m, "value": r[m]} for m in HIJACK_METRICS]
        rows += [{**key, "attack": "mean-image", "metric": m, "value": r[f"baseline_{m}"]} for m in ("mse", "ssim")]
    return pd.DataFrame(rows, columns=[*metrics_frame([]).columns, "device_class"])


def _figure(frame: pd.DataFrame, path: Path) -> None:
    rows = frame[frame.metric == "mse"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (attack, device), part in rows.groupby(["attack", "device"]):
        style = "--" if attack == "mean-image" else "-"
        ax.plot(part["round"], part["value"], style, marker="o", markersize=3, label=f"{attack}, device {device}")
    ax.set_xlabel("round")
    ax.set_ylabel("reconstruction MSE ([0, 1] pixels)")
    ax.set_title("What the hijacking server reconstructs, round by round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_hijack(result: HijackResult, out: str | Path, *, overwrite: bool = False, run_id: str = "hijack",
                 config: dict[str, Any] | None = None) -> Path:
    """Write ``result`` to ``out`` (see the module docstring); returns the directory."""
    out = Path(out)
    check_out(out, overwrite, marker="active.json")
    attack = result.settings.attack or "none"
    tmp = work_dir(out)
    try:
        frame = hijack_frame(result, run_id)
        frame.to_csv(tmp / "metrics.csv", index=False)
        if result.attacker:
            pd.DataFrame(result.attacker).to_csv(tmp / "attacker.csv", index=False)
        if result.detections:
            pd.DataFrame(result.detections).to_csv(tmp / "detections.csv", index=False)
        pd.DataFrame([vars(r) for r in result.rounds]).to_csv(tmp / "rounds.csv", index=False)
        meta = {**result.to_dict(), "run_id": run_id, "config": config}
        for key in ("records", "attacker", "rounds", "detections"):  # in the CSV files
            meta.pop(key)
        (tmp / "active.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        if not frame.empty:
            _figure(frame, tmp / "hijack_mse.png")
        if result.samples:
            reconstruction_grid(result.samples, attack, tmp / f"reconstructions_{attack}.png")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, out)
    return out
