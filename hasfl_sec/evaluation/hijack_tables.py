"""The malicious edge server's tables over seeds: ``hijack.csv``, ``detectors.csv`` and its comparisons.

From the active cells' per-seed rows (``active.csv``: the attacker's reconstruction scores per
measured round and hijacked device; ``detections.csv``: each detector's outcome per device) and
each cell's final accuracy:

* ``hijack.csv`` -- per active arm, cut and device class: the attacker's reconstruction at the last
  measured round (MSE, SSIM, PSNR), the error of the attacker's guess without the attack (the mean
  of its own images), the first measured round at which the reconstruction beat that guess, and
  the run's final accuracy; means over seeds with 95% Student-t intervals (:mod:`hasfl_sec.stats`).
  Under a defense, also the paired change of the final MSE against the undefended attacked arm
  (same cut and class, same seeds): a positive, significant change means the defense slows the
  attacker.
* ``detectors.csv`` -- per active arm and detector: how many hijacked device-runs it caught, at which
  round, what the attacker reconstructed by then ("what leaked before it was caught"), and its
  false alarms on the devices the server treated honestly. Rates carry Wilson 95% intervals over
  device-runs (devices of one run share a model, so these intervals are optimistic).
* comparison rows (``comparisons.csv``, kind ``hijack``): each defense against the undefended
  attacked arm, the final MSE and SSIM averaged over the hijacked devices of a seed, paired over seeds.
"""

from __future__ import annotations

import math

import pandas as pd

from ..results import EVAL_TABLES
from ..stats import Interval, mean_ci, paired_difference, summarize

__all__ = ["hijack_table", "detector_table", "hijack_comparisons", "reference_arm", "wilson"]

_KEYS = ["plan", "attack", "defense", "setting"]


def reference_arm(active: pd.DataFrame) -> dict[str, str]:
    """Per active arm, its undefended counterpart: the arm of the same attack with defense ``none``
    (itself for an undefended arm; missing when that arm did not finish)."""
    runs = active.drop_duplicates("plan")
    undefended = runs[runs["defense"].astype(str).isin(["none", ""])]
    by_attack = dict(zip(undefended["attack"], undefended["plan"]))
    return {p: by_attack[a] for p, a in zip(runs["plan"], runs["attack"]) if a in by_attack}


def _final(active: pd.DataFrame) -> pd.DataFrame:
    """Per arm, seed and hijacked device: the last measured round's scores, and the first measured
    round whose reconstruction beat the guess (NaN: never)."""
    frame = active.sort_values(["plan", "seed", "device", "round"], kind="stable")
    last = frame.groupby(["plan", "seed", "device"], sort=False).tail(1).copy()
    beat = frame[pd.to_numeric(frame["mse"]) < pd.to_numeric(frame["baseline_mse"])]
    first = beat.groupby(["plan", "seed", "device"], sort=False)["round"].min().rename("below_guess_round")
    return last.merge(first.reset_index(), on=["plan", "seed", "device"], how="left")


def hijack_table(active: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """``hijack.csv`` (see the module doc); ``accuracy`` has ``plan``, ``seed``, ``final_accuracy``."""
    if active.empty:
        return pd.DataFrame(columns=EVAL_TABLES["hijack"])
    final = _final(active).merge(accuracy[["plan", "seed", "final_accuracy"]], on=["plan", "seed"], how="left")
    final = final.rename(columns={"final_accuracy": "accuracy"})
    numbers = ["mse", "ssim", "psnr", "baseline_mse", "below_guess_round", "accuracy", "round"]
    groups = [*_KEYS, "cut", "device_class"]
    per_seed = final.groupby([*groups, "seed"], sort=False, dropna=False)[numbers].mean(numeric_only=True)
    per_seed = per_seed.reset_index()
    out = summarize(per_seed, groups, numbers)
    reference = reference_arm(active)
    changes = []
    for row in out.itertuples():
        ref = reference.get(row.plan)
        if ref is None or ref == row.plan:
            changes.append(mean_ci([], null=0.0))
            continue
        mine, theirs = (per_seed[(per_seed["plan"] == p) & (per_seed["cut"] == row.cut)
                                 & (per_seed["device_class"] == row.device_class)] for p in (row.plan, ref))
        changes.append(paired_difference(dict(zip(mine["seed"], mine["mse"])),
                                         dict(zip(theirs["seed"], theirs["mse"]))))
    out["mse_change"] = [c.mean for c in changes]
    out["mse_change_low"] = [c.low for c in changes]
    out["mse_change_high"] = [c.high for c in changes]
    out["mse_change_n"] = [c.n for c in changes]
    out["mse_change_significant"] = [c.significant for c in changes]
    return out.reindex(columns=EVAL_TABLES["hijack"])


def wilson(successes: int, trials: int) -> tuple[float, float, float]:
    """A proportion and its Wilson 95% score interval (NaNs without trials)."""
    if trials == 0:
        return math.nan, math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    return successes / trials, float(ci.low), float(ci.high)


def _over_seeds(rows: pd.DataFrame, column: str) -> dict[str, float]:
    """A column's per-seed means, then their mean and 95% interval over seeds."""
    per_seed = rows.groupby("seed")[column].apply(lambda s: pd.to_numeric(s, errors="coerce").mean())
    ci = mean_ci(per_seed)
    return {column: ci.mean, f"{column}_low": ci.low, f"{column}_high": ci.high, f"{column}_n": ci.n}


def detector_table(detections: pd.DataFrame) -> pd.DataFrame:
    """``detectors.csv`` (see the module doc)."""
    if detections.empty:
        return pd.DataFrame(columns=EVAL_TABLES["detectors"])
    frame = detections.copy()
    frame["caught"] = pd.to_numeric(frame["detected_round"], errors="coerce").notna()
    frame["hijacked"] = frame["hijacked"].astype(str).str.lower().isin(["true", "1"])
    rows = []
    for key, part in frame.groupby([*[k for k in _KEYS if k != "attack"], "detector"], sort=False, dropna=False):
        row = dict(zip([*[k for k in _KEYS if k != "attack"], "detector"], key))
        hijacked, honest = part[part["hijacked"]], part[~part["hijacked"]]
        caught = hijacked[hijacked["caught"]]
        rate, low, high = wilson(int(caught.shape[0]), int(hijacked.shape[0]))
        alarms, a_low, a_high = wilson(int(honest["caught"].sum()), int(honest.shape[0]))
        row.update({"seeds": int(part["seed"].nunique()), "hijacked_runs": int(hijacked.shape[0]),
                    "caught": int(caught.shape[0]), "caught_rate": rate, "caught_low": low, "caught_high": high,
                    "honest_runs": int(honest.shape[0]), "false_alarms": int(honest["caught"].sum()),
                    "false_alarm_rate": alarms, "false_alarm_low": a_low, "false_alarm_high": a_high})
        for column in ("detected_round", "mse_at_detection", "ssim_at_detection"):
            stats = _over_seeds(caught, column) if not caught.empty else {}
            name = "detection_round" if column == "detected_round" else column
            row.update({k.replace(column, name): v for k, v in stats.items()})
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=EVAL_TABLES["detectors"])


def _seed_means(active: pd.DataFrame, plan: str, column: str) -> dict[int, float]:
    """Per seed, ``column`` at the last measured round, averaged over the arm's hijacked devices."""
    final = _final(active[active["plan"] == plan])
    return {int(s): float(v) for s, v in final.groupby("seed")[column].mean().items()}


def hijack_comparisons(active: pd.DataFrame, runs: pd.DataFrame | None = None,
                       summary: pd.DataFrame | None = None) -> list[tuple[str, str, str, Interval]]:
    """``(arm, reference, metric, interval)`` rows, paired over seeds: each undefended attacked arm's
    final accuracy against its plan trained with an honest server (``final_accuracy_points``: what
    the hijacking costs the task, the one sign an operator sees without a detector), from ``runs``
    (the active cells' ``plan``, ``seed``, ``strategy``, ``attack``, ``final_accuracy``): the honest
    arm, with the same detectors, else the plain plan of ``summary``; and each
    defended attacked arm against the undefended one, its final MSE (``hijack_mse``) and SSIM
    (``hijack_ssim``)."""
    if active.empty:
        return []
    rows = []
    if runs is not None and not runs.empty:
        undefended = set(reference_arm(active).values())
        controls = runs[runs["attack"] == "none"]  # the same plan and detectors with an honest server
        for (plan, strategy), part in runs.groupby(["plan", "strategy"], sort=False):
            honest = controls[controls["strategy"] == strategy]
            if honest.empty and summary is not None and not summary.empty:  # no honest arm: the plain plan
                honest = summary[summary["plan"] == strategy]
            if plan in undefended and not honest.empty:
                ci = paired_difference(dict(zip(part["seed"], 100 * part["final_accuracy"].astype(float))),
                                       dict(zip(honest["seed"], 100 * honest["final_accuracy"].astype(float))))
                rows.append((plan, str(honest["plan"].iloc[0]), "final_accuracy_points", ci))
    for plan, ref in reference_arm(active).items():
        if plan == ref:
            continue
        for metric, column in (("hijack_mse", "mse"), ("hijack_ssim", "ssim")):
            ci = paired_difference(_seed_means(active, plan, column), _seed_means(active, ref, column))
            rows.append((plan, ref, metric, ci))
    return rows
