"""The evaluation's tables over training seeds: per device class, the Pareto front and the paired
comparisons (docs/statistics.md).

Inputs are the per-seed tables (``plans`` with each device's measured leakage, ``summary``,
``rounds``: one row per arm and seed). Every figure is a mean over seeds with its 95% Student-t
interval (:mod:`hasfl_sec.stats`). Comparisons are paired: two arms are compared only on the seeds
both finished (and, for a time to target, both reached the target), and the interval is that of the
per-seed differences or log ratios.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

import numpy as np
import pandas as pd

from ..report.tables import metric_label, pareto_front, summary_metric
from ..results import EVAL_TABLES
from ..stats import METHOD, Interval, mean_ci, paired_difference, paired_ratio, summarize
from .hijack_tables import hijack_comparisons

__all__ = ["class_table", "pareto_over_seeds", "comparisons", "accuracy_at", "time_budget", "headline_text",
           "SPEED_REFERENCE", "DEFENSE_REFERENCE"]

#: The plan every other unconstrained plan's speed is compared with, and the undefended reference
#: of every defense arm.
SPEED_REFERENCE = "hasfl"
DEFENSE_REFERENCE = "sfl"


def _cuts(values: Iterable[int]) -> str:
    """``2×5, 4×3``: each cut a class's devices take and how many take it (most common first)."""
    return ", ".join(f"{c}×{n}" for c, n in Counter(int(v) for v in values).most_common())


def _per_seed_classes(plans: pd.DataFrame) -> pd.DataFrame:
    """One row per (plan, seed, device class): its devices, mean batch and noise, cuts and the
    class's worst measured leakage (NaN when none of its devices was audited)."""
    rows = []
    for (plan, seed, cls), g in plans.groupby(["plan", "seed", "device_class"], sort=False):
        leak = pd.to_numeric(g["leakage"], errors="coerce")
        rows.append({"plan": plan, "seed": seed, "device_class": cls, "devices": len(g),
                     "batch": float(g["batch"].mean()), "cuts": _cuts(g["cut"]),
                     "noise_sigma": float(g["noise_sigma"].mean()),
                     "compute_s": float(pd.to_numeric(g["compute_s"], errors="coerce").mean()),
                     "comm_s": float(pd.to_numeric(g["comm_s"], errors="coerce").mean()),
                     "leakage": float(leak.max()) if leak.notna().any() else math.nan})
    return pd.DataFrame(rows)


def class_table(plans: pd.DataFrame) -> pd.DataFrame:
    """``classes.csv``: per plan and device class, the number of devices, the mean batch size,
    noise and per-round compute and communication seconds (each a mean over seeds of the class's
    mean, with its interval), the cuts its devices take (``cut×devices``; seeds that differ are
    joined with ``/``) and the worst measured leakage."""
    per_seed = _per_seed_classes(plans)
    if per_seed.empty:
        return per_seed
    out = summarize(per_seed, ["plan", "device_class"], ["devices", "batch", "noise_sigma", "compute_s", "comm_s",
                                                                 "leakage"], ["cuts"])
    out["devices"] = out["devices"].round().astype(int)
    return out[EVAL_TABLES["classes"]]


def pareto_over_seeds(plans: pd.DataFrame, summary: pd.DataFrame,
                      kinds: tuple[str, ...] = ("plan", "baseline", "private")) -> pd.DataFrame:
    """``pareto.csv``: per (plan, device class), the class's worst measured leakage and the plan's
    measured time to target, each a mean over seeds with its interval. ``on_front`` is computed on
    the means; a plan that missed the target at any seed, or was not audited, is never on it."""
    chosen = summary[summary["kind"].isin(kinds)]
    per_seed = _per_seed_classes(plans[plans["plan"].isin(chosen["plan"])])
    if per_seed.empty:
        return pd.DataFrame()
    cols = ["predicted_time_to_target_s", "measured_time_to_target_s", "final_accuracy"]
    per_seed = per_seed.merge(chosen[["plan", "seed", *cols]], on=["plan", "seed"], how="left")
    out = summarize(per_seed, ["plan", "device_class"], ["leakage", *cols])
    out = out[out["leakage_n"] > 0].reset_index(drop=True)
    if out.empty:
        return out
    complete = out["measured_time_to_target_s_n"] == out["seeds"]
    out["on_front"] = False
    for _, group in out.groupby("device_class"):
        time = group["measured_time_to_target_s"].where(complete[group.index])
        out.loc[group.index, "on_front"] = pareto_front(group["leakage"], time)
    return out[EVAL_TABLES["pareto"]]


def time_budget(summary: pd.DataFrame, given: float | None,
                kinds: tuple[str, ...] = ("plan", "baseline")) -> float:
    """The simulated time at which plans' accuracies are compared: ``given``, else the shortest
    simulated training time of any finished arm of ``kinds`` at any seed."""
    if given is not None:
        return float(given)
    times = pd.to_numeric(summary.loc[summary["kind"].isin(kinds), "sim_time_s"], errors="coerce")
    return float(times.min()) if times.notna().any() else math.nan


def accuracy_at(rounds: pd.DataFrame, budget_s: float) -> dict[tuple[str, int], float]:
    """(plan, seed) -> the test accuracy of the last evaluated round at simulated time <= ``budget_s``
    (NaN when no round was evaluated by then)."""
    out: dict[tuple[str, int], float] = {}
    for (plan, seed), g in rounds.groupby(["plan", "seed"], sort=False):
        done = g[(g["sim_time_s"] <= budget_s) & g["test_accuracy"].notna()]
        out[(str(plan), int(seed))] = float(done["test_accuracy"].iloc[-1]) if len(done) else math.nan
    return out


def _by_seed(summary: pd.DataFrame, plan: str, column: str) -> dict[int, float]:
    rows = summary[summary["plan"] == plan]
    return {int(s): float(v) for s, v in zip(rows["seed"], pd.to_numeric(rows[column], errors="coerce"))}


def _row(comparison: str, plan: str, reference: str, metric: str, ci: Interval, scale: str) -> dict:
    return {"comparison": comparison, "plan": plan, "reference": reference, "metric": metric, "scale": scale,
            "estimate": ci.mean, "low": ci.low, "high": ci.high, "pairs": ci.n, "significant": ci.significant,
            "method": f"paired, {METHOD}" + (", log scale" if scale == "ratio" else "")}


def _speed(summary: pd.DataFrame, acc: dict[tuple[str, int], float]) -> list[dict]:
    """HASFL against every other unconstrained plan: its speed-up in time to target (the other's
    time over HASFL's), and its accuracy advantage (points) at the time budget and at the end."""
    rows = []
    ref = SPEED_REFERENCE
    hasfl_time = _by_seed(summary, ref, "measured_time_to_target_s")
    hasfl_acc = {s: a for (p, s), a in acc.items() if p == ref}
    hasfl_final = _by_seed(summary, ref, "final_accuracy")
    for other in summary.loc[summary["kind"].isin(["plan", "baseline"]), "plan"].unique():
        if other == ref:
            continue
        rows.append(_row("speed", ref, other, "speedup_time_to_target",
                         paired_ratio(_by_seed(summary, other, "measured_time_to_target_s"), hasfl_time), "ratio"))
        other_acc = {s: a for (p, s), a in acc.items() if p == other}
        rows.append(_row("speed", ref, other, "accuracy_at_budget_points",
                         _points(paired_difference(hasfl_acc, other_acc)), "difference"))
        rows.append(_row("speed", ref, other, "final_accuracy_points",
                         _points(paired_difference(hasfl_final, _by_seed(summary, other, "final_accuracy"))),
                         "difference"))
    return rows


def _points(ci: Interval) -> Interval:
    """An accuracy difference in percentage points."""
    return Interval(100 * ci.mean, 100 * ci.low, 100 * ci.high, ci.n, 0.0)


def _against(summary: pd.DataFrame, kind: str, reference: str, comparison: str) -> list[dict]:
    """Every arm of ``kind`` against ``reference``: accuracy (points), strongest-attack leakage
    and, for private plans, time to target (a ratio: the arm's over the reference's)."""
    rows = []
    for arm in summary.loc[summary["kind"] == kind, "plan"].unique():
        rows.append(_row(comparison, arm, reference, "final_accuracy_points", _points(paired_difference(
            _by_seed(summary, arm, "final_accuracy"), _by_seed(summary, reference, "final_accuracy"))),
            "difference"))
        rows.append(_row(comparison, arm, reference, f"max_leakage_{summary_metric(summary)}", paired_difference(
            _by_seed(summary, arm, "max_leakage"), _by_seed(summary, reference, "max_leakage")), "difference"))
        if kind == "private":
            rows.append(_row(comparison, arm, reference, "time_to_target_ratio", paired_ratio(
                _by_seed(summary, arm, "measured_time_to_target_s"),
                _by_seed(summary, reference, "measured_time_to_target_s")), "ratio"))
    return rows


def comparisons(summary: pd.DataFrame, rounds: pd.DataFrame, budget_s: float,
                active: pd.DataFrame | None = None, hijacks: pd.DataFrame | None = None) -> pd.DataFrame:
    """``comparisons.csv``: the paired comparisons of the report (see module doc): HASFL's speed-up
    and accuracy advantage over every other unconstrained plan, each private plan against HASFL,
    each defense setting against the undefended ``sfl`` arm, and (with the active cells' rows and
    runs) the hijacking's cost in accuracy and each defense against the hijacking server
    (:func:`~.hijack_tables.hijack_comparisons`). Rows
    whose reference is missing are left out."""
    plans = set(summary["plan"])
    rows: list[dict] = []
    if SPEED_REFERENCE in plans:
        rows += _speed(summary, accuracy_at(rounds, budget_s) if np.isfinite(budget_s) else {})
        rows += _against(summary, "private", SPEED_REFERENCE, "privacy")
    if DEFENSE_REFERENCE in plans:
        rows += _against(summary, "defense", DEFENSE_REFERENCE, "defense")
    if active is not None:
        rows += [_row("hijack", plan, ref, metric, ci, "difference")
                 for plan, ref, metric, ci in hijack_comparisons(active, hijacks, summary)]
    return pd.DataFrame(rows)


def _pm(ci: Interval) -> str:
    if math.isnan(ci.mean):
        return "–"
    return f"{ci.mean:.4g}" + ("" if math.isnan(ci.low) else f" ± {ci.half_width:.2g}")


def headline_text(summary: pd.DataFrame, comps: pd.DataFrame) -> str:
    """The console's summary of an evaluation: per plan, accuracy, time to target and strongest
    leakage (means ± 95% half-widths over seeds), then HASFL's speed-ups with their intervals."""
    leak = f"max {metric_label(summary_metric(summary))}"
    lines = [f"{'plan':24s} {'seeds':>5s} {'final accuracy':>16s} {'time to target (s)':>22s} {leak:>20s}"]
    for plan, g in summary.groupby("plan", sort=False):
        lines.append(f"{plan:24s} {len(g):5d} {_pm(mean_ci(g['final_accuracy'])):>16s} "
                     f"{_pm(mean_ci(g['measured_time_to_target_s'])):>22s} {_pm(mean_ci(g['max_leakage'])):>20s}")
    speed = comps[comps["metric"] == "speedup_time_to_target"] if not comps.empty else comps
    for r in speed.itertuples():
        interval = "" if math.isnan(r.low) else f" [{r.low:.3g}, {r.high:.3g}]"
        verdict = "real" if r.significant else "not settled"
        lines.append(f"HASFL speed-up over {r.reference}: {r.estimate:.3g}x{interval} over {r.pairs} paired "
                     f"seed(s) ({verdict})")
    return "\n".join(lines)
