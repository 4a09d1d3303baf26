"""The report's blocks over seeds: the headline comparisons, the plans per device class, and why
HASFL took its cuts (tables ``comparisons``, ``classes`` and ``cuts``; docs/statistics.md).

Each function returns the blocks of its part of the report from an eval directory's tables;
:mod:`~hasfl_sec.report.sections` places them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import METHOD
from .doc import Block, Items, Text, fmt, table
from .seeds import ci_table, ci_text, over_seeds
from .tables import EvalData, metric_label

__all__ = ["headline_blocks", "class_blocks", "why_cuts_blocks"]

_COMPARISON_TITLES = {"speed": "HASFL against the other plans (speed-up = the other's time to target / HASFL's)",
                      "privacy": "Privacy-constrained plans against HASFL",
                      "defense": "Defense settings against the undefended sfl plan",
                      "hijack": "A malicious edge server: its cost in accuracy against the plan trained "
                                "honestly, and each defense against the undefended attacked plan"}
_METRIC_LABELS = {"speedup_time_to_target": "speed-up in time to target (×)",
                  "accuracy_at_budget_points": "accuracy at the time budget (points)",
                  "final_accuracy_points": "final accuracy (points)",
                  "max_leakage_ssim": "strongest attack's SSIM",
                  "max_leakage_token_accuracy": "strongest attack's token accuracy",
                  "time_to_target_ratio": "time to target (×)",
                  "hijack_mse": "attacker's final MSE", "hijack_ssim": "attacker's final SSIM"}


def _estimate(row: pd.Series) -> str:
    """``4.21× [3.10, 5.72]`` for a ratio, ``+1.2 [-0.3, 2.7]`` for a difference."""
    est, low, high = float(row["estimate"]), float(row["low"]), float(row["high"])
    if np.isnan(est):
        return "–"
    value = f"{fmt(est)}×" if row["scale"] == "ratio" else f"{est:+.3g}"
    return value if np.isnan(low) else f"{value} [{fmt(low)}, {fmt(high)}]"


def headline_blocks(data: EvalData) -> list[Block]:
    comp = data.table("comparisons").copy()
    comp["value"] = [_estimate(r) for _, r in comp.iterrows()]
    comp["metric_label"] = comp["metric"].map(lambda m: _METRIC_LABELS.get(m, m))
    blocks: list[Block] = []
    for kind, part in comp.groupby("comparison", sort=False):
        blocks.append(table(part, {"plan": "plan", "reference": "against", "metric_label": "measure",
                                   "value": "estimate [95% CI]", "pairs": "seeds paired",
                                   "significant": "interval excludes no effect"},
                            _COMPARISON_TITLES.get(kind, kind)))
    real = [f"{r['plan']} vs {r['reference']}: {r['metric_label']} {r['value']}"
            for _, r in comp.iterrows() if bool(r["significant"])]
    blocks.append(Text(f"Each estimate is paired over the seeds both arms finished ({METHOD}; ratios on the "
                       "log scale, as geometric means). A difference whose interval excludes 0 (a ratio's, 1) "
                       "is called real; with one paired seed there is no interval and nothing is called real. "
                       "A time to target counts only seeds where both plans reached the target."))
    blocks.append(Items(real) if real else Text("No difference's interval excludes no effect."))
    return blocks


def class_blocks(data: EvalData) -> list[Block]:
    c = data.table("classes").copy()
    if c.empty:
        return []
    numbers = ["batch", "noise_sigma", "compute_s", "comm_s", "leakage"]
    for col in numbers:
        c[col] = [ci_text(m, lo, hi, col) for m, lo, hi in zip(c[col], c[f"{col}_low"], c[f"{col}_high"])]
    return [ci_table(c, {"plan": "plan", "device_class": "device class", "devices": "devices", "batch": "mean batch",
                         "cuts": "cuts (cut×devices)", "noise_sigma": "mean noise σ",
                         "compute_s": "compute per round (s)", "comm_s": "communication per round (s)",
                         "leakage": f"worst leakage ({metric_label(data.leakage_metric())})"},
                     "Plans per device class", numbers),
            Text("Compute per round: the device's forward and backward pass at its batch and cut; communication "
                 "per round: its smashed data up and their gradient down (the latency model at the fleet's "
                 "rates). Cuts list each cut and how many of the class's devices take it.")]


def why_cuts_blocks(data: EvalData) -> list[Block]:
    """Per bound-based plan: device classes × cuts, the predicted time to target if the class moved
    to that cut, against the plan (and the rounds × latency factors it splits into)."""
    cuts = data.table("cuts")
    if cuts.empty:
        return []
    blocks: list[Block] = []
    for plan, part in cuts.groupby("plan", sort=False):
        wide = over_seeds(part, ["device_class", "cut"], ["time_ratio"], ["chosen"])
        means = part.groupby(["device_class", "cut"], sort=False)[["rounds_ratio", "round_s_ratio"]].mean()
        wide["cell"] = [t + (" ← plan" if "True" in str(ch) else "")
                        for t, ch in zip(wide["time_ratio"], wide["chosen"])]
        wide["split"] = [f"{fmt(means.loc[(k, c), 'rounds_ratio'])} × {fmt(means.loc[(k, c), 'round_s_ratio'])}"
                         for k, c in zip(wide["device_class"], wide["cut"])]
        for value, caption in (("cell", f"Why plan {plan} took its cuts: predicted time to target if one device "
                                        "class moved to each cut, × the plan's"),
                               ("split", f"The same, split: rounds × round latency, each × the plan's ({plan})")):
            grid = wide.pivot(index="device_class", columns="cut", values=value).reset_index()
            grid.columns = [str(c) for c in grid.columns]
            columns = {"device_class": "device class", **{c: f"cut {c}" for c in grid.columns if c != "device_class"}}
            blocks.append(table(grid, columns, caption))
    blocks.append(Text("Each cell moves one device class to that cut (batch sizes kept, clipped to memory), every "
                       "other device keeping its plan, and asks the optimizer's own model: time to target = "
                       "rounds (the calibrated convergence bound) × round latency (the latency model). Above 1: "
                       "slower than the plan. A deeper cut sends less and computes more on the device; it also "
                       "puts more layers under periodic aggregation, which the bound charges in rounds."))
    return blocks
