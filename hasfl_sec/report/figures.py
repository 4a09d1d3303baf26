"""The report's figures, drawn from an eval directory's tables with matplotlib (Agg).

Each function draws one figure into ``path`` and returns True, or returns False without writing
anything when its table has nothing to draw. Output is byte-for-byte reproducible: a fixed style,
figures made without pyplot's global state, and no ``Software``/date metadata in the PNG.

* :func:`accuracy_vs_time` -- test accuracy against simulated time per plan (``rounds.csv``)
* :func:`leakage_vs_cut` -- leakage (SSIM for images, token accuracy for text) against cut depth per
  attack, a marker per plan (``leakage.csv``)
* :func:`defense_tradeoff` -- accuracy drop against leakage per defense, adaptive vs unaware attackers
* :func:`pareto` -- leakage against measured and predicted time to target per device class
* :func:`hijack_curves` -- a malicious server's reconstruction error against rounds (``active.csv``)
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

from ..stats import mean_ci  # noqa: E402
from .tables import EvalData, defense_leakage, leakage_frame, metric_label  # noqa: E402

__all__ = ["FIGURES", "draw_figures", "accuracy_vs_time", "leakage_vs_cut", "defense_tradeoff", "pareto",
           "hijack_curves"]

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


def _step_mean(part: Any, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean accuracy over seeds on ``grid`` (each seed's accuracy at t = its last evaluation by t)
    and its 95% interval; NaN where fewer than one seed (no interval: fewer than two) has a value."""
    curves = []
    for _, seed in part.groupby("seed", sort=True):
        seed = seed.sort_values("sim_time_s")
        idx = np.searchsorted(seed["sim_time_s"].to_numpy(float), grid, side="right") - 1
        acc = seed["test_accuracy"].to_numpy(float)
        curves.append(np.where(idx >= 0, acc[np.clip(idx, 0, None)], np.nan))
    stats = [mean_ci(col) for col in np.array(curves).T]
    return (np.array([s.mean for s in stats]), np.array([s.low for s in stats]), np.array([s.high for s in stats]))


def accuracy_vs_time(data: EvalData, path: Path) -> bool:
    """Test accuracy against simulated training time, one line per plan (the mean over seeds, its
    95% interval as a band, clipped to [0, 1]); the target as a line. The time axis is logarithmic
    when the plans' times span more than a factor of 20."""
    rounds = data.table("rounds")
    rounds = rounds[rounds["test_accuracy"].notna()]
    if rounds.empty:
        return False
    rounds = rounds if "seed" in rounds.columns else rounds.assign(seed=0)
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.subplots()
    marks = _markers(data.plans())
    positive = rounds.loc[rounds["sim_time_s"] > 0, "sim_time_s"]
    log_x = not positive.empty and float(positive.max()) > 20 * float(positive.min())
    for plan, part in rounds.groupby("plan", sort=False):
        times = part.loc[part["sim_time_s"] > 0, "sim_time_s"] if log_x else part["sim_time_s"]
        if times.empty:
            continue
        lo, hi = float(times.min()), float(times.max())
        grid = np.geomspace(lo, hi, 120) if log_x and hi > lo else np.linspace(0.0, hi, 120)
        mean, low, high = _step_mean(part, grid)
        line, = ax.plot(grid, mean, marker=marks.get(plan, "o"), markevery=20, markersize=3, label=plan)
        # an accuracy lies in [0, 1]: a t interval over few seeds can reach past it
        ax.fill_between(grid, np.clip(low, 0, 1), np.clip(high, 0, 1), color=line.get_color(), alpha=0.15,
                        linewidth=0)
    if log_x:  # plans' training times differ by orders of magnitude
        ax.set_xscale("log")
    targets = data.table("summary")["target_accuracy"].astype(float).dropna().unique()
    for target in sorted(targets):
        ax.axhline(target, color="0.4", linestyle=":", linewidth=1)
        ax.annotate(f"target {target:.3g}", (0, target), xycoords=("axes fraction", "data"), fontsize=7,
                    color="0.3", xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("simulated time (s, latency model)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy against simulated training time (mean over seeds, 95% band)")
    ax.legend(loc="lower right", ncols=2)
    _save(fig, path)
    return True


def leakage_vs_cut(data: EvalData, path: Path) -> bool:
    """The leakage metric (:meth:`EvalData.leakage_metric`) of each attack's reconstructions against
    the cut, a colour per attack, a marker per plan (its mean over seeds); the line joins the
    per-cut means over seeds, with 95% error bars."""
    metric = data.leakage_metric()
    rows = leakage_frame(data.table("leakage"), metric)
    if rows.empty:
        return False
    rows = rows.assign(cut=rows["cut"].astype(float))
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.subplots()
    marks = _markers(data.plans())
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    rows = rows if "seed" in rows.columns else rows.assign(seed=0)
    for k, (attack, part) in enumerate(rows.groupby("attack", sort=True)):
        color = colors[k % len(colors)]
        by_seed = part.groupby(["cut", "seed"])["value"].mean().reset_index()
        stats = {cut: mean_ci(g["value"]) for cut, g in by_seed.groupby("cut")}
        cuts = np.array(sorted(stats))
        mean = np.array([stats[c].mean for c in cuts])
        err = np.array([stats[c].half_width for c in cuts])
        ax.errorbar(cuts, mean, yerr=np.nan_to_num(err), color=color, linewidth=1.2, capsize=3, label=attack)
        for plan, pts in part.groupby(["plan", "cut"], sort=False)["value"].mean().reset_index().groupby("plan"):
            ax.scatter(pts["cut"], pts["value"], color=color, marker=marks.get(plan, "o"), s=22, zorder=3)
    for plan, marker in marks.items():
        if plan in set(rows["plan"]):
            ax.scatter([], [], color="0.3", marker=marker, s=22, label=f"plan {plan}")
    ax.set_xlabel("cut (blocks on the device)")
    ax.set_ylabel(f"{metric_label(metric)} of reconstruction (higher = more leakage)")
    ax.set_title("Reconstruction leakage against cut depth")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="best", ncols=2)
    _save(fig, path)
    return True


def _defense_points(sub: Any) -> dict[str, np.ndarray]:
    """Per strength: the strongest attack's leakage and the accuracy drop, means over seeds with the
    half-widths of their 95% intervals."""
    per_seed = (sub.groupby(["strength", "seed"], as_index=False, dropna=False)
                .agg(leakage=("leakage", "max"), drop=("accuracy_drop", "first")))
    out: dict[str, list[float]] = {"strength": [], "leakage": [], "leakage_err": [], "drop": [], "drop_err": []}
    for strength, g in per_seed.groupby("strength", dropna=False, sort=True):
        leak, drop = mean_ci(g["leakage"]), mean_ci(g["drop"])
        for key, value in (("strength", strength), ("leakage", leak.mean), ("leakage_err", leak.half_width),
                           ("drop", drop.mean), ("drop_err", drop.half_width)):
            out[key].append(float(value))
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def defense_tradeoff(data: EvalData, path: Path) -> bool:
    """Accuracy drop against the strongest attack's leakage for each defense setting (means over seeds,
    95% error bars): hollow markers and dashed lines for attackers unaware of the defense, filled
    markers and solid lines for an attacker who knows it (the strongest of every variant, adaptive or
    not: knowing the defense, it may still pick an unaware attack)."""
    table = defense_leakage(data.table("defenses"))
    table = table[table["leakage"].notna()]
    if table.empty:
        return False
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.subplots()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    table = table if "seed" in table.columns else table.assign(seed=0)
    reference = table["defense"].isin(["none", ""])
    if reference.any():
        ref = table[reference].groupby("seed").agg(leakage=("leakage", "max"),
                                                   accuracy_drop=("accuracy_drop", "first"))
        leak, drop = mean_ci(ref["leakage"]), mean_ci(ref["accuracy_drop"])
        ax.errorbar([leak.mean], [drop.mean], xerr=np.nan_to_num([leak.half_width]), color="black", marker="*",
                    markersize=10, capsize=3, zorder=4, label="undefended")
    for k, (defense, part) in enumerate(table[~reference].groupby("defense", sort=True)):
        color = colors[k % len(colors)]
        for adaptive in (False, True):
            sub = part if adaptive else part[~part["adaptive"].astype(bool)]
            if adaptive and not part["adaptive"].astype(bool).any():
                continue  # no adaptive variant: the unaware line is the whole story
            points = _defense_points(sub)
            kind = "adaptive" if adaptive else "unaware"
            ax.errorbar(points["leakage"], points["drop"], xerr=np.nan_to_num(points["leakage_err"]),
                        yerr=np.nan_to_num(points["drop_err"]), color=color, linestyle="-" if adaptive else "--",
                        marker="o", markerfacecolor=color if adaptive else "white", markersize=5, capsize=2,
                        label=f"{defense} ({kind})")
    ax.set_xlabel(f"strongest attack's {metric_label(data.leakage_metric())} (lower = less leakage)")
    ax.set_ylabel("accuracy drop (points vs undefended)")
    ax.set_title("Defenses: accuracy cost against leakage")
    ax.legend(loc="best")
    _save(fig, path)
    return True


def _class_markers(classes: list[str]) -> dict[str, str]:
    """A marker per device class: the compute tertiles keep theirs, named classes take the others."""
    free = [m for m in _MARKERS if m not in _CLASS_MARKERS.values()]
    named = [c for c in classes if c not in _CLASS_MARKERS]
    out = {c: _CLASS_MARKERS[c] for c in classes if c in _CLASS_MARKERS}
    out.update({c: free[i % len(free)] for i, c in enumerate(named)})
    return out


def _half(row: Any, column: str) -> list[float] | None:
    """The half-width of a Pareto point's 95% interval in ``column`` (None without one)."""
    low, high = row.get(f"{column}_low", np.nan), row.get(f"{column}_high", np.nan)
    if low is None or high is None or not np.isfinite(float(low)) or not np.isfinite(float(high)):
        return None
    return [(float(high) - float(low)) / 2.0]


def pareto(data: EvalData, path: Path) -> bool:
    """Leakage against measured (left) and predicted (right) time to target, a marker per device
    class, each point a mean over seeds with 95% error bars; plans on the measured front (computed
    on the means) are ringed and joined by a step line."""
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
    class_marker = _class_markers(sorted(set(table["device_class"].astype(str))))
    for ax, column, title in ((axes[0], "measured_time_to_target_s", "measured"),
                              (axes[1], "predicted_time_to_target_s", "predicted")):
        for _, row in table.iterrows():
            x = float(row[column])
            if not np.isfinite(x):
                continue
            marker = class_marker.get(str(row["device_class"]), "o")
            color = plan_color.get(row["plan"], "0.3")
            ax.errorbar([x], [row["leakage"]], xerr=_half(row, column), yerr=_half(row, "leakage"), color=color,
                        marker=marker, markersize=5, capsize=2, linewidth=0.8, zorder=3)
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
    axes[0].set_ylabel(f"leakage (strongest attack's {metric_label(data.leakage_metric())})")
    for plan, color in plan_color.items():
        if plan in set(table["plan"]):
            axes[1].scatter([], [], color=color, marker="s", s=22, label=plan)
    for cls, marker in class_marker.items():
        axes[1].scatter([], [], color="0.4", marker=marker, s=22, label=f"{cls} devices")
    axes[1].scatter([], [], facecolors="none", edgecolors="crimson", s=60, label="on the front")
    axes[1].legend(loc="best")
    _save(fig, path)
    return True


def _round_curve(part: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rounds measured at every seed, and the mean MSE over seeds at each (a seed's devices averaged
    first) with its 95% interval. A round measured at some seeds only (a detector's alarm) would
    average another set of seeds, so it is left out of the curve."""
    per_seed = part.groupby(["round", "seed"], as_index=False)["mse"].mean()
    per_seed = per_seed[per_seed.groupby("round")["seed"].transform("nunique") == per_seed["seed"].nunique()]
    rounds, means, lows, highs = [], [], [], []
    for r, g in per_seed.groupby("round", sort=True):
        ci = mean_ci(g["mse"])
        rounds.append(float(r))
        means.append(ci.mean)
        lows.append(ci.low)
        highs.append(ci.high)
    return np.array(rounds), np.array(means), np.array(lows), np.array(highs)


def _band(ax: Any, part: Any, label: str, color: str, style: str = "-") -> None:
    rounds, mean, low, high = _round_curve(part)
    ax.plot(rounds, mean, style, color=color, marker="o", markersize=2.5, label=label)
    if np.isfinite(low).any():  # an MSE is >= 0: the t interval's lower end is clipped there
        ax.fill_between(rounds, np.clip(low, 0, None), high, color=color, alpha=0.15, linewidth=0)


def hijack_curves(data: EvalData, path: Path) -> bool:
    """The hijacking server's reconstruction MSE against rounds (means over seeds, 95% bands): left,
    the undefended attacked arm per cut and device class; right, every attacked arm (its hijacked
    devices averaged). Dashed: the attacker's guess without the attack (the mean of its images)."""
    active = data.table("active")
    active = active[active["mse"].notna()]
    if active.empty:
        return False
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    undefended = active[active["defense"].isin(["none", ""])]
    reference = undefended if not undefended.empty else active[active["plan"] == active["plan"].iloc[0]]
    fig = Figure(figsize=(9.0, 3.6))
    left, right = fig.subplots(1, 2, sharey=True)
    groups = list(reference.groupby(["cut", "device_class"], sort=True))
    for k, ((cut, cls), part) in enumerate(groups):
        _band(left, part, f"cut {int(cut)}, {cls} devices", colors[k % len(colors)])
    _band(left, reference.assign(mse=reference["baseline_mse"]), "guess (mean image)", "0.4", "--")
    left.set_title(f"{reference['plan'].iloc[0]}: per cut and device class")
    for k, (plan, part) in enumerate(active.groupby("plan", sort=False)):
        _band(right, part, str(plan), colors[k % len(colors)])
    _band(right, active.assign(mse=active["baseline_mse"]), "guess (mean image)", "0.4", "--")
    right.set_title("per attacked arm (defenses)")
    for ax in (left, right):
        ax.set_xlabel("round")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=6)
    left.set_ylabel("reconstruction MSE ([0, 1] pixels)")
    _save(fig, path)
    return True


#: generated figures: file name -> (drawing function, caption).
FIGURES: dict[str, tuple[Callable[[EvalData, Path], bool], str]] = {
    "accuracy_vs_time.png": (accuracy_vs_time, "Test accuracy against simulated training time, per plan."),
    "leakage_vs_cut.png": (leakage_vs_cut, "Leakage of reconstructions (SSIM for images, token accuracy for "
                                           "text) against the cut, per attack; markers distinguish plans, "
                                           "lines join per-cut means."),
    "defenses.png": (defense_tradeoff, "Accuracy drop against the strongest attack's leakage per defense "
                                       "setting; solid/filled = an attacker who knows the defense, "
                                       "dashed/hollow = attackers unaware of it."),
    "pareto.png": (pareto, "Leakage against measured (left) and predicted (right) time to target; "
                           "ringed points are on the Pareto front of their device class."),
    "hijack.png": (hijack_curves, "The hijacking server's reconstruction MSE against rounds: per cut and "
                                  "device class without a defense (left), per defense (right); dashed: its "
                                  "guess without the attack."),
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
