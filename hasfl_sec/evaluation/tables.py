"""The evaluation's per-seed tables, built from finished cells: plans, summary, rounds, defenses
(the tables over seeds are :mod:`~hasfl_sec.evaluation.aggregate`'s).

Every function takes plain data (arms, run results as DataFrames) and returns rows or frames with
the columns the report renders (:mod:`hasfl_sec.report`); nothing here trains or attacks.

Leakage of a device is the strongest reconstruction attack's mean score at the device that
represents its (cut, noise) in the audit, scored by the task's leakage metric (SSIM for images,
token accuracy for text; :func:`task_metric`): devices with the same cut and noise send the same kind
of smashed data from the same aggregated model, so one audited device per pair stands for all.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..data import TEXT_DATASETS
from ..fleet import fleet_classes
from ..metrics import image_report, leakage_metric
from ..report.tables import time_to_target
from ..results import EVAL_TABLES
from ..seeding import torch_generator
from ..sfl.clock import plan_costs
from ..sfl.latency import stage_latencies
from .settings import Arm

__all__ = ["class_mean_ssim", "label_only_note", "representatives", "plan_rows", "summary_row", "defense_table",
           "device_leakage", "plan_noise", "task_metric"]


def task_metric(dataset: str) -> str:
    """The leakage metric of an evaluation on ``dataset`` (``data.dataset``): token accuracy for a
    text corpus, SSIM for images (:mod:`hasfl_sec.metrics.leakage`)."""
    return leakage_metric("text" if dataset in TEXT_DATASETS else "image")


def class_mean_ssim(dataset: Any, seed: int, images: int = 256) -> float:
    """The label-only reference: mean SSIM of each victim image's class-mean auxiliary image.

    HASFL's edge server receives the labels, so it reconstructs at least this well without looking
    at the smashed data; a defense that keeps accuracy keeps the class in the smashed data, so an
    adaptive decoder need not do worse. Auxiliary data = the held-out split, as in the audit.
    """
    import torch

    means = torch.stack([dataset.x_test[dataset.y_test == c].mean(0) for c in range(dataset.num_classes)])
    n = min(images, len(dataset.y_train))
    idx = torch.randperm(len(dataset.y_train), generator=torch_generator(seed, "class-mean"))[:n]
    return float(image_report(means[dataset.y_train[idx]], dataset.x_train[idx])["ssim"].mean())


def label_only_note(dataset: Any, seed: int, share_labels: bool) -> str:
    """The report's sentence on what the edge server learns from the labels alone.

    Images: :func:`class_mean_ssim`. Text (next-character targets): the labels are the sequence
    shifted by one, so a server that receives them reads every character but the first without
    looking at the hidden states; measured here as the token accuracy of that reading (the first
    character guessed as the corpus' most frequent one). Without shared labels (U-shaped), the
    reference is guessing the most frequent character everywhere.
    """
    if getattr(dataset, "modality", "image") != "text":
        reference = class_mean_ssim(dataset, seed)
        return (f"Label-only reference: the class-mean image of the auxiliary data scores SSIM {reference:.3f} "
                "against the victims' images. HASFL sends labels to the edge server, so it reconstructs at "
                "least this well without the smashed data; a defense that keeps accuracy cannot push the "
                "strongest (adaptive) attack far below it.")
    import torch

    x, y = dataset.x_train, dataset.y_train
    common = int(torch.bincount(y.flatten(), minlength=dataset.num_classes).argmax())
    guess = float((x == common).float().mean())
    if not share_labels:
        return (f"Label-only reference (text, labels kept on the devices): guessing the most frequent character "
                f"everywhere recovers {guess:.3f} of the characters.")
    shifted = torch.cat([torch.full_like(y[:, :1], common), y[:, :-1]], dim=1)
    read = float((shifted == x).float().mean())
    return (f"Label-only reference (text): the next-character labels the edge server receives are the sequence "
            f"shifted by one, so reading them recovers {read:.3f} of the characters without the hidden states "
            f"(guessing the most frequent character: {guess:.3f}). Attacks on the hidden states matter where the "
            "labels stay on the devices (train.share_labels=false) or the server sees no labels.")


def plan_noise(plan: Any) -> list[float]:
    """Each device's planned smashed-data noise (0 for plans without any)."""
    return [float(s) for s in (getattr(plan, "noise_sigma", None) or [0.0] * plan.num_devices)]


def representatives(cuts: Sequence[int], noise: Sequence[float]) -> dict[int, int]:
    """Device -> the first device with the same (cut, noise); the audited set is the values."""
    first: dict[tuple[int, float], int] = {}
    return {i: first.setdefault((int(c), float(s)), i) for i, (c, s) in enumerate(zip(cuts, noise))}


def plan_rows(arm: Arm, plan: Any, fleet: Any, profile: Any, budget_metric: str,
              predicted_leakage: Sequence[float] | None) -> list[dict[str, Any]]:
    """``plans.csv`` rows of one arm: one per device, with its per-round latency split into
    ``compute_s`` (client forward and backward) and ``comm_s`` (smashed data up, its gradient down)
    from the latency model (docs/hasfl.md section 2.1) at the fleet's rates (NaN without a
    ``profile``)."""
    noise = plan_noise(plan)
    classes = fleet_classes(fleet)
    cut_names = {cp.cut: cp.name for cp in profile.cuts} if profile is not None else {}
    nan = np.full(len(plan.cuts), math.nan)
    stages = (stage_latencies(fleet, plan.batch_sizes, plan_costs(profile, plan)) if profile is not None
              else SimpleNamespace(client_fwd=nan, client_bwd=nan, uplink=nan, downlink=nan))
    rows = []
    for i, (b, c) in enumerate(zip(plan.batch_sizes, plan.cuts)):
        rows.append({
            "plan": arm.name, "strategy": arm.strategy, "budget_metric": budget_metric if arm.kind == "private" else "",
            "budget": arm.budget, "device": i, "device_class": classes[i], "batch": int(b), "cut": int(c),
            "cut_name": cut_names.get(int(c), ""), "noise_sigma": float(noise[i]),
            "predicted_leakage": float(predicted_leakage[i]) if predicted_leakage is not None else math.nan,
            "compute_flops": float(fleet.flops[i]), "uplink_bps": float(fleet.uplink_bps[i]),
            "compute_s": float(stages.client_fwd[i] + stages.client_bwd[i]),
            "comm_s": float(stages.uplink[i] + stages.downlink[i]),
        })
    return rows


def device_leakage(leakage: pd.DataFrame, reps: dict[int, int], cuts: Sequence[int], *,
                   metric: str) -> dict[int, tuple[float, str]]:
    """Device -> (strongest attack's mean ``metric``, that attack) through its representative.

    Only rows of a device at its own planned cut count: an audit's simulated devices at cuts the
    plan did not use (``--cuts all``) are labelled device 0 but are not device 0's leakage.
    """
    rows = leakage[(leakage["metric"] == metric) & (leakage["attack"] != "none")
                   & leakage["value"].notna() & leakage["device"].notna()]  # diverged on every image: no score
    at_own_cut = [int(c) == int(cuts[int(d)]) if 0 <= int(d) < len(cuts) else False
                  for d, c in zip(rows["device"], rows["cut"])]
    rows = rows.loc[np.asarray(at_own_cut, dtype=bool)]  # a plain empty list would select no *columns*
    by_device: dict[int, tuple[float, str]] = {}
    for dev, group in rows.groupby("device"):
        best = group.loc[group["value"].idxmax()]
        by_device[int(dev)] = (float(best["value"]), str(best["attack"]))
    return {i: by_device.get(r, (math.nan, "")) for i, r in reps.items()}


def summary_row(arm: Arm, *, defense: str, budget_metric: str, rounds: pd.DataFrame, plan: Any, target: float,
                leaks: dict[int, tuple[float, str]], wall_time_s: float, metric: str) -> dict[str, Any]:
    """``summary.csv`` row of one arm; ``leaks`` are scored by ``metric`` (:func:`task_metric`)."""
    measured_time = time_to_target(rounds, target)
    hit = rounds.loc[rounds["sim_time_s"] == measured_time, "round"]
    measured_rounds = float(hit.iloc[0]) if len(hit) else math.nan
    predicted = plan.predicted or {}
    valid = [(v, a) for v, a in leaks.values() if not math.isnan(v)]
    strongest = max(valid) if valid else (math.nan, "")
    return {
        "plan": arm.name, "strategy": arm.strategy, "kind": arm.kind,
        "budget_metric": budget_metric if arm.kind == "private" else "", "budget": arm.budget, "defense": defense,
        "final_accuracy": float(rounds["test_accuracy"].dropna().iloc[-1]), "rounds": int(rounds["round"].iloc[-1]),
        "sim_time_s": float(rounds["sim_time_s"].iloc[-1]),
        "predicted_rounds": float(predicted.get("rounds", math.nan)),
        "predicted_time_to_target_s": float(predicted.get("time_to_target_s", math.nan)),
        "measured_rounds": measured_rounds, "measured_time_to_target_s": measured_time,
        "target_accuracy": target, "max_leakage": strongest[0], "leakage_metric": metric,
        "strongest_attack": strongest[1],
        "wall_time_s": wall_time_s,
    }


def defense_table(arms: Sequence[Arm], summary: pd.DataFrame, leakage: pd.DataFrame,
                  epsilons: dict[str, float], *, metric: str, reference: str = "sfl") -> pd.DataFrame:
    """``defenses.csv``: per defense setting (and the undefended reference) and attack, the
    accuracy, its drop in points against the reference, and the attack's leakage at the default
    cut: ``leakage`` by the task's ``metric`` (:func:`task_metric`), and SSIM/MSE/PSNR for images
    (empty for text). Attacks that do not report ``metric`` (label inference) have no row."""
    by_name = {a.name: a for a in arms}
    ref_acc = float(summary.set_index("plan").loc[reference, "final_accuracy"])
    rows = []
    for name in [reference, *[a.name for a in arms if a.kind == "defense"]]:
        arm = by_name[name]
        acc = float(summary.set_index("plan").loc[name, "final_accuracy"])
        sub = leakage[(leakage["plan"] == name) & (leakage["attack"] != "none")]
        for (attack, cut), group in sub.groupby(["attack", "cut"]):
            values = group.groupby("metric")["value"].mean()
            if metric not in values:
                continue
            rows.append({
                "defense": arm.defense, "setting": arm.setting or "none", "strength": arm.strength,
                "cut": int(cut), "accuracy": acc, "accuracy_drop": 100.0 * (ref_acc - acc), "attack": attack,
                "adaptive": attack.endswith("+adaptive"), "leakage": float(values[metric]), "leakage_metric": metric,
                "ssim": float(values.get("ssim", math.nan)),
                "mse": float(values.get("mse", math.nan)), "psnr": float(values.get("psnr", math.nan)),
                "epsilon": float(epsilons.get(name, math.nan)),
            })
    # columns even without rows (only label attacks): the caller inserts the seed column by position
    return pd.DataFrame(rows, columns=[c for c in EVAL_TABLES["defenses"] if c != "seed"])
