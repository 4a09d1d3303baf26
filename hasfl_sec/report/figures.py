"""The report's figures, drawn from an eval directory's tables with matplotlib (Agg).

Each function draws one figure into ``path`` and returns True, or returns False without writing
anything when its table has nothing to draw. Output is byte-for-byte reproducible: a fixed style,
figures made without pyplot's global state, and no ``Software``/date metadata in the PNG.

* :func:`accuracy_vs_time` -- test accuracy against simulated time per plan (``rounds.csv``)
* :func:`leakage_vs_cut` -- SSIM against cut depth per attack, a marker per plan (``leakage.csv``)
* :func:`defense_tradeoff` -- accuracy drop against SSIM per defense, adaptive vs unaware attackers
* :func:`pareto` -- leakage against measured and predicted time to target per device class
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.style  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .tables import EvalData, leakage_frame  # noqa: E402

__all__ = ["FIGURES", "draw_figures", "accuracy_vs_time", "leakage_vs_cut", "defense_tradeoff", "pareto"]

logger = logging.getLogger(__name__)

_RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 7,
    "savefig.dpi": 110,
    "svg.hashsalt": "hasfl-sec",
}
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
_CLASS_MARKERS = {"slow": "v", "medium": "o", "fast": "^"}


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def _markers(names: list[str]) -> dict[str, str]:
    return {name: _MARKERS[i % len(_MARKERS)] for i, name in enumerate(names)}


def accuracy_vs_time(data: EvalData, path: Path) -> bool:
    """Test accuracy against simulated training time, one line per plan; the target as a line."""
    rounds = data.table("rounds")
    rounds = rounds[rounds["test_accuracy"].notna()]
    if rounds.empty:
        return False
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.subplots()
    marks = _markers(data.plans())
    for plan, part in rounds.groupby("plan", sort=False):
        part = part.sort_values("round")
        ax.plot(part["sim_time_s"], part["test_accuracy"], marker=marks.get(plan, "o"), markersize=3, label=plan)
    targets = data.table("summary")["target_accuracy"].astype(float).dropna().unique()
    for target in sorted(targets):
        ax.axhline(target, color="0.4", linestyle=":", linewidth=1)
        ax.annotate(f"target {target:.3g}", (0, target), xycoords=("axes fraction", "data"), fontsize=7,
                    color="0.3", xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("simulated time (s, latency model)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy against simulated training time")
    ax.legend(loc="lower right")
    _save(fig, path)
    return True


def leakage_vs_cut(data: EvalData, path: Path) -> bool:
    """SSIM of each attack's reconstructions against the cut, a colour per attack, a marker per plan;
    the line joins the per-cut means over plans and devices."""
    rows = leakage_frame(data.table("leakage"), "ssim")
    if rows.empty:
        return False
    rows = rows.assign(cut=rows["cut"].astype(float))
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.subplots()
    marks = _markers(data.plans())
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (attack, part) in enumerate(rows.groupby("attack", sort=True)):
        color = colors[k % len(colors)]
        mean = part.groupby("cut")["value"].mean()
        ax.plot(mean.index, mean.values, color=color, linewidth=1.2, label=attack)
        for plan, pts in part.groupby("plan", sort=False):
            ax.scatter(pts["cut"], pts["value"], color=color, marker=marks.get(plan, "o"), s=22, zorder=3)
    for plan, marker in marks.items():
        if plan in set(rows["plan"]):
            ax.scatter([], [], color="0.3", marker=marker, s=22, label=f"plan {plan}")
    ax.set_xlabel("cut (blocks on the device)")
    ax.set_ylabel("SSIM of reconstruction (higher = more leakage)")
    ax.set_title("Reconstruction leakage against cut depth")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="best", ncols=2)
    _save(fig, path)
    return True


def defense_tradeoff(data: EvalData, path: Path) -> bool:
    """Accuracy drop against the strongest attack's SSIM for each defense setting: hollow markers
    and dashed lines for attackers unaware of the defense, filled markers and solid lines for an
    attacker who knows it (the strongest of every variant, adaptive or not: knowing the defense, it
    may still pick an unaware attack)."""
    table = data.table("defenses")
    table = table[table["ssim"].notna()]
    if table.empty:
        return False
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.subplots()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    reference = table["defense"].isin(["none", ""])
    if reference.any():
        ref = table[reference]
        ax.scatter([ref["ssim"].max()], [ref["accuracy_drop"].iloc[0]], color="black", marker="*", s=90, zorder=4,
                   label="undefended")
    for k, (defense, part) in enumerate(table[~reference].groupby("defense", sort=True)):
        color = colors[k % len(colors)]
        for adaptive in (False, True):
            sub = part if adaptive else part[~part["adaptive"].astype(bool)]
            if adaptive and not part["adaptive"].astype(bool).any():
                continue  # no adaptive variant: the unaware line is the whole story
            sub = (sub.groupby("strength", as_index=False, dropna=False)
                   .agg(ssim=("ssim", "max"), accuracy_drop=("accuracy_drop", "first"))
                   .sort_values("strength", na_position="first"))
            kind = "adaptive" if adaptive else "unaware"
            ax.plot(sub["ssim"], sub["accuracy_drop"], color=color, linestyle="-" if adaptive else "--",
                    marker="o", markerfacecolor=color if adaptive else "white", markersize=5,
                    label=f"{defense} ({kind})")
    ax.set_xlabel("strongest attack's SSIM (lower = less leakage)")
    ax.set_ylabel("accuracy drop (points vs undefended)")
    ax.set_title("Defenses: accuracy cost against leakage")
    ax.legend(loc="best")
    _save(fig, path)
    return True


def pareto(data: EvalData, path: Path) -> bool:
    """Leakage against measured (left) and predicted (right) time to target, a marker per device
    class; plans on the measured front are ringed and joined by a step line."""
    table = data.table("pareto")
    table = table[table["leakage"].notna()]
    times = ("measured_time_to_target_s", "predicted_time_to_target_s")
    finite = {c: np.isfinite(table[c].astype(float)) for c in times}
    if table.empty or not any(f.any() for f in finite.values()):
        return False
    fig = Figure(figsize=(8.0, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    plan_color = {p: colors[i % len(colors)] for i, p in enumerate(data.plans())}
    for ax, column, title in ((axes[0], "measured_time_to_target_s", "measured"),
                              (axes[1], "predicted_time_to_target_s", "predicted")):
        for _, row in table.iterrows():
            x = float(row[column])
            if not np.isfinite(x):
                continue
            marker = _CLASS_MARKERS.get(str(row["device_class"]), "o")
            ax.scatter([x], [row["leakage"]], color=plan_color.get(row["plan"], "0.3"), marker=marker, s=30, zorder=3)
            if row["on_front"]:
                ax.scatter([x], [row["leakage"]], facecolors="none", edgecolors="crimson", s=110, linewidths=1.4,
                           zorder=4)
        for cls, part in table[table["on_front"]].groupby("device_class", sort=True):
            part = part[np.isfinite(part[column].astype(float))].sort_values(column)
            if len(part) > 1:
                ax.step(part[column], part["leakage"], where="post", color="crimson", linewidth=0.8, alpha=0.6)
        if not finite[column].any():
            ax.text(0.5, 0.5, "no plan reached the target" if title == "measured" else "no predictions",
                    transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.set_xlabel(f"{title} time to target (s, simulated)")
        ax.set_title(f"leakage vs {title} time")
    axes[0].set_ylabel("leakage (strongest attack's SSIM)")
    for plan, color in plan_color.items():
        if plan in set(table["plan"]):
            axes[1].scatter([], [], color=color, marker="s", s=22, label=plan)
    for cls, marker in _CLASS_MARKERS.items():
        if cls in set(table["device_class"]):
            axes[1].scatter([], [], color="0.4", marker=marker, s=22, label=f"{cls} devices")
    axes[1].scatter([], [], facecolors="none", edgecolors="crimson", s=60, label="on the front")
    axes[1].legend(loc="best")
    _save(fig, path)
    return True


#: generated figures: file name -> (drawing function, caption).
FIGURES: dict[str, tuple[Callable[[EvalData, Path], bool], str]] = {
    "accuracy_vs_time.png": (accuracy_vs_time, "Test accuracy against simulated training time, per plan."),
    "leakage_vs_cut.png": (leakage_vs_cut, "SSIM of reconstructions against the cut, per attack; markers "
                                           "distinguish plans, lines join per-cut means."),
    "defenses.png": (defense_tradeoff, "Accuracy drop against the strongest attack's SSIM per defense "
                                       "setting; solid/filled = an attacker who knows the defense, "
                                       "dashed/hollow = attackers unaware of it."),
    "pareto.png": (pareto, "Leakage against measured (left) and predicted (right) time to target; "
                           "ringed points are on the Pareto front of their device class."),
}


def draw_figures(data: EvalData, out_dir: Path) -> list[str]:
    """Draw every figure that has data into ``out_dir``; returns the file names written."""
    written = []
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        for name, (draw, _) in FIGURES.items():
            if draw(data, out_dir / name):
                written.append(name)
                logger.debug("figure %s written", name)
    return written
