"""The report's content: one :class:`~hasfl_sec.report.doc.Section` per topic, from an eval's tables.

Sections, in order (a section whose tables are absent or empty is left out, and the lead says so
in one line):

1. Plans -- per plan, the per-device batch size, cut, noise and predicted leakage.
2. Training -- summary per plan, predicted against measured time to target, accuracy figure.
3. Leakage per split -- per plan, cut and attack: SSIM/PSNR/MSE or label accuracy, each attack's
   threat model beside its numbers; attack-independent dependence figures.
4. Reconstructions -- the audits' grids of originals and reconstructions.
5. Defenses -- accuracy cost against leakage reduction, adaptive against unaware attackers.
6. Pareto front -- leakage against time to target per device class.
7. Failed cells -- the cells of the evaluation that did not finish, each with its reason (only
   when there are some).
8. Notes -- the eval's notes, timings, settings and versions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .doc import Block, Document, Figure, Heading, Items, Section, Table, Text, fmt, table
from .tables import EvalData

__all__ = ["SECTIONS", "build_document", "CONFIG_SUMMARY"]

#: section key -> title, in report order.
SECTIONS = {
    "plans": "Plans",
    "training": "Training",
    "leakage": "Leakage per split",
    "reconstructions": "Reconstructions",
    "defenses": "Defenses",
    "pareto": "Pareto front",
    "failed": "Failed cells",
    "notes": "Notes",
}

#: config entries shown in the header (dotted path -> label).
CONFIG_SUMMARY = {
    "data.dataset": "dataset", "data.image_size": "image size", "data.partition": "partition",
    "data.alpha": "Dirichlet alpha", "model.name": "model", "fleet.num_devices": "devices",
    "fleet.heterogeneity": "heterogeneity", "fleet.file": "fleet file", "train.rounds": "rounds",
    "train.agg_interval": "aggregation interval I", "train.lr": "learning rate",
    "optimizer.target_accuracy": "target accuracy", "channel.model": "channel", "defense.use": "defenses",
    "seed": "seed",
}

_RECON = ["ssim", "psnr", "mse", "identifiability", "label_accuracy", "label_auc"]
_INDEPENDENT = ["dcor", "nhsic", "ksg", "dfil", "dfil_mse_bound"]
_ABSENT_REASON = {"plans": ["plans"], "training": ["summary", "rounds"], "leakage": ["leakage"],
                  "defenses": ["defenses"], "pareto": ["pareto"]}


def _lookup(config: dict, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _lead(data: EvalData, absent: list[str]) -> list[Block]:
    meta = data.meta
    blocks: list[Block] = []
    facts = [f"created {meta['created']}" if meta.get("created") else "",
             f"eval wall time {fmt(float(meta['wall_time_s']))} s" if meta.get("wall_time_s") is not None else "",
             f"{len(data.plans())} plan(s): {', '.join(data.plans())}" if data.plans() else ""]
    blocks.append(Text("; ".join(f for f in facts if f) or "no plans"))
    config = meta.get("config") or {}
    rows = []
    for dotted, label in CONFIG_SUMMARY.items():
        value = _lookup(config, dotted)
        if value is None or value == []:
            continue
        rows.append([label, _plain(value)])
    if rows:
        blocks.append(Table(["setting", "value"], rows, [False, False], "Configuration summary"))
    if absent:
        blocks.append(Text("Not in this report (no data): " + "; ".join(absent) + "."))
    return blocks


def _plans(data: EvalData) -> list[Block]:
    plans = data.table("plans")
    blocks: list[Block] = []
    cols = {"device": "device", "device_class": "class", "batch": "batch", "cut": "cut", "cut_name": "cut block",
            "noise_sigma": "noise σ", "predicted_leakage": "predicted leakage", "compute_flops": "compute (FLOP/s)",
            "uplink_bps": "uplink (bit/s)"}
    for plan, part in plans.groupby("plan", sort=False):
        first = part.iloc[0]
        label = f"{plan} (strategy {first['strategy'] or '–'}"
        if first["budget_metric"]:
            label += f", budget {first['budget_metric']} ≤ {fmt(first['budget'])}"
        blocks.append(Heading(label + ")"))
        blocks.append(table(part.sort_values("device"), cols))
    return blocks


def _training(data: EvalData, figures: list[str]) -> list[Block]:
    blocks: list[Block] = []
    summary = data.table("summary")
    if not summary.empty:
        blocks.append(table(summary, {
            "plan": "plan", "strategy": "strategy", "defense": "defense", "final_accuracy": "final accuracy",
            "rounds": "rounds", "sim_time_s": "simulated time (s)", "wall_time_s": "wall time (s)",
            "max_leakage": "max leakage (SSIM)", "strongest_attack": "strongest attack"}, "Summary per plan"))
        tt = summary.copy()
        pred, meas = tt["predicted_time_to_target_s"].astype(float), tt["measured_time_to_target_s"].astype(float)
        tt["relative_error"] = (pred - meas) / meas
        blocks.append(table(tt, {
            "plan": "plan", "target_accuracy": "target accuracy", "predicted_rounds": "predicted rounds",
            "predicted_time_to_target_s": "predicted time to target (s)",
            "measured_rounds": "measured rounds", "measured_time_to_target_s": "measured time to target (s)",
            "relative_error": "relative error"},
            "Predicted against measured time to target (simulated clock)"))
        blocks.append(Text("Relative error = (predicted − measured) / measured; – where the plan has no "
                           "prediction or never reached the target."))
    if "accuracy_vs_time.png" in figures:
        blocks.append(Figure("figures/accuracy_vs_time.png", "Test accuracy against simulated training time."))
    return blocks


def _pivot(part: pd.DataFrame, metrics: list[str], index: list[str]) -> pd.DataFrame:
    part = part.assign(value=part["value"].astype(float))
    wide = part.groupby([*index, "metric"], dropna=False, sort=True)["value"].mean().unstack("metric")
    order = [m for m in metrics if m in wide.columns]
    return wide[order].reset_index()


def _leakage(data: EvalData, figures: list[str]) -> list[Block]:
    leak = data.table("leakage")
    leak = leak[leak["metric"] != "wall_time_s"]
    blocks: list[Block] = []
    attacks = leak[leak["attack"] != "none"][["attack", "threat_model"]].drop_duplicates("attack")
    if not attacks.empty:
        blocks.append(table(attacks.sort_values("attack"), {"attack": "attack", "threat_model": "threat model"},
                            "Threat models of the attacks"))
    index = ["cut", "device", "batch", "attack"]
    if leak["defense"].nunique() > 1:
        index.append("defense")
    for plan, part in leak.groupby("plan", sort=False):
        blocks.append(Heading(f"Plan {plan}"))
        attacked = part[part["attack"] != "none"]
        if not attacked.empty:
            wide = _pivot(attacked, _RECON, index)
            wide = wide.merge(attacks, on="attack", how="left")
            metric_cols = [m for m in _RECON if m in wide.columns]
            blocks.append(table(wide, {**{c: c for c in [*index, *metric_cols]}, "threat_model": "threat model"},
                                f"Attacks on plan {plan} (means over images and seeds)"))
        independent = part[part["attack"] == "none"]
        if not independent.empty:
            wide = _pivot(independent, _INDEPENDENT, [c for c in index if c != "attack"])
            blocks.append(table(wide, list(wide.columns),
                                f"Attack-independent dependence on plan {plan} (dCor, nHSIC, KSG MI, dFIL bound)"))
    if "leakage_vs_cut.png" in figures:
        blocks.append(Figure("figures/leakage_vs_cut.png", "SSIM against cut depth per attack; markers are plans."))
    return blocks


def _reconstructions(data: EvalData, grids: list[str]) -> list[Block]:
    plans = sorted(data.plans(), key=len, reverse=True)
    blocks: list[Block] = []
    for name in grids:
        stem = name.removeprefix("reconstructions_").removesuffix(".png")
        caption = stem
        for plan in plans:
            if stem.startswith(f"{plan}_"):
                caption = f"plan {plan}, attack {stem[len(plan) + 1:]}: originals (top) and reconstructions"
                break
        blocks.append(Figure(f"figures/{name}", caption))
    return blocks


def _defenses(data: EvalData, figures: list[str]) -> list[Block]:
    d = data.table("defenses").copy()
    d["base_attack"] = d["attack"].str.removesuffix("+adaptive")
    d["attacker"] = np.where(d["adaptive"], "adaptive", "unaware")
    base = (d[d["defense"].isin(["none", ""])].groupby(["base_attack", "cut"], as_index=False)["ssim"].mean()
            .rename(columns={"ssim": "ssim_undefended"}))
    d = d.merge(base, on=["base_attack", "cut"], how="left")
    d["ssim_reduction"] = d["ssim_undefended"].astype(float) - d["ssim"].astype(float)
    d = d.sort_values(["defense", "strength", "attack", "adaptive"], kind="stable")
    blocks: list[Block] = [table(d, {
        "defense": "defense", "setting": "setting", "cut": "cut", "accuracy": "accuracy",
        "accuracy_drop": "accuracy drop (points)", "attack": "attack", "attacker": "attacker", "ssim": "SSIM",
        "ssim_reduction": "SSIM reduction", "psnr": "PSNR", "mse": "MSE", "epsilon": "ε"},
        "Accuracy cost against leakage reduction")]
    blocks.append(Text("SSIM reduction is relative to the undefended model (defense none) under the same "
                       "attack and cut; an adaptive attacker is trained on defended data, an unaware one is not."))
    if "defenses.png" in figures:
        blocks.append(Figure("figures/defenses.png", "Accuracy drop against SSIM per defense."))
    return blocks


def _pareto(data: EvalData, figures: list[str]) -> list[Block]:
    p = data.table("pareto").sort_values(["device_class", "leakage"], kind="stable")
    blocks: list[Block] = [table(p, {
        "plan": "plan", "device_class": "device class", "leakage": "leakage (SSIM)",
        "measured_time_to_target_s": "measured time to target (s)",
        "predicted_time_to_target_s": "predicted time to target (s)", "final_accuracy": "final accuracy",
        "on_front": "on front"}, "Leakage against time to target per device class")]
    blocks.append(Text("On front: no other plan has both lower-or-equal leakage and lower-or-equal measured "
                       "time to target (one strictly lower) for that device class."))
    if "pareto.png" in figures:
        blocks.append(Figure("figures/pareto.png", "Pareto front of leakage against time to target."))
    return blocks


def _failed(data: EvalData) -> list[Block]:
    return [table(data.table("failed"), {"plan": "cell", "kind": "kind", "reason": "reason"},
                  "Cells that did not finish (missing from every other table)"),
            Text("Run the same evaluation again into the same output (with --overwrite) to compute just "
                 "these: finished cells are reused.")]


def _plain(value: object) -> str:
    """A setting's value as short text: mappings as ``k: v`` pairs, lists comma-separated."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items()) or "–"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value) or "–"
    return fmt(value)


def _notes(data: EvalData) -> list[Block]:
    meta = data.meta
    blocks: list[Block] = []
    notes = [str(n) for n in meta.get("notes") or []]
    if notes:
        blocks.append(Items(notes))
    timings = meta.get("timings") or {}
    if timings:
        frame = pd.DataFrame({"step": list(timings), "seconds": [float(v) for v in timings.values()]})
        blocks.append(table(frame, ["step", "seconds"], "Timings (wall clock)"))
    for key, caption in (("settings", "Eval settings"), ("versions", "Versions")):
        values = meta.get(key) or {}
        if values:
            rows = [[str(k), _plain(v)] for k, v in values.items()]
            blocks.append(Table([key.rstrip("s"), "value"], rows, [False, False], caption))
    return blocks or [Text("No notes.")]


def build_document(data: EvalData, figures: list[str], grids: list[str]) -> Document:
    """The report of ``data``; ``figures`` are the generated figure files, ``grids`` the
    ``reconstructions_*.png`` files (both names inside ``figures/``)."""
    have = {"plans": data.has("plans"), "training": data.has("summary") or data.has("rounds"),
            "leakage": data.has("leakage"), "reconstructions": bool(grids), "defenses": data.has("defenses"),
            "pareto": data.has("pareto"), "failed": data.has("failed"), "notes": True}
    builders = {
        "plans": lambda: _plans(data), "training": lambda: _training(data, figures),
        "leakage": lambda: _leakage(data, figures), "reconstructions": lambda: _reconstructions(data, grids),
        "defenses": lambda: _defenses(data, figures), "pareto": lambda: _pareto(data, figures),
        "failed": lambda: _failed(data), "notes": lambda: _notes(data),
    }
    sections = []
    for key in SECTIONS:
        blocks = builders[key]() if have[key] else []
        have[key] = bool(blocks)
        if blocks:
            sections.append(Section(key, SECTIONS[key], blocks))
    absent = []
    for key in SECTIONS:
        if not have[key] and key != "failed":  # no failed cells is not missing data
            why = [data.missing[t] for t in _ABSENT_REASON.get(key, []) if t in data.missing]
            absent.append(f"{SECTIONS[key]} ({', '.join(why) or 'no figures/reconstructions_*.png'})")
    title = f"hasfl-sec report: {data.meta.get('name') or data.path.name}"
    return Document(title, _lead(data, absent), sections)
