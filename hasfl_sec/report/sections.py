"""The report's content: one :class:`~hasfl_sec.report.doc.Section` per topic, from an eval's tables.

Sections, in order (a section whose tables are absent or empty is left out, and the lead says so
in one line). Every figure is a mean over training seeds ± the half-width of its 95% interval
(:mod:`~hasfl_sec.report.seeds`):

0. Headline -- paired comparisons over seeds: HASFL's speed-up over each baseline, private plans
   against HASFL, defenses against the undefended plan; whether each interval excludes no effect.
1. Plans -- per plan and device class, the batch sizes, cuts, noise and measured leakage; then per
   device.
2. Training -- summary per plan, predicted against measured time to target, accuracy figure.
3. Leakage per split -- per plan, cut and attack: SSIM/PSNR/MSE, token accuracy or label accuracy,
   each attack's threat model beside its numbers; attack-independent dependence figures.
4. Reconstructions -- the audits' grids of originals and reconstructions.
5. Defenses -- accuracy cost against leakage reduction, adaptive against unaware attackers.
6. A malicious edge server -- what a hijacking server reconstructs against rounds, per cut, device
   class and defense, and the devices' detectors (:mod:`~hasfl_sec.report.active`).
7. Pareto front -- leakage against time to target per device class.
8. Failed cells -- the cells of the evaluation that did not finish, each with its reason (only
   when there are some).
9. Notes -- the eval's notes, timings, settings and versions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .active import active_blocks
from .doc import Block, Document, Figure, Heading, Items, Section, Table, Text, fmt, table
from .headline import class_blocks, headline_blocks, why_cuts_blocks
from .seeds import ci_legend, ci_table, over_seeds, seed_count, with_ci
from .tables import EvalData, defense_leakage, metric_label
from .transformer import transformer_blocks

__all__ = ["SECTIONS", "build_document", "CONFIG_SUMMARY"]

#: section key -> title, in report order.
SECTIONS = {
    "headline": "Headline: paired comparisons over seeds",
    "plans": "Plans",
    "transformer": "A transformer: the open question",
    "training": "Training",
    "leakage": "Leakage per split",
    "reconstructions": "Reconstructions",
    "defenses": "Defenses",
    "active": "A malicious edge server",
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

_RECON = ["ssim", "psnr", "mse", "identifiability", "token_accuracy", "rouge_l", "secret_recovery",
          "secret_token_accuracy", "label_accuracy", "label_auc"]
_INDEPENDENT = ["dcor", "nhsic", "ksg", "dfil", "dfil_mse_bound"]
_ABSENT_REASON = {"headline": ["comparisons"], "plans": ["plans"], "training": ["summary", "rounds"],
                  "leakage": ["leakage"],
                  "defenses": ["defenses"], "active": ["hijack", "detectors"], "pareto": ["pareto"]}


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
    seeds = (meta.get("settings") or {}).get("seeds")
    if isinstance(seeds, list) and seeds:
        rows.append(["training seeds", _plain(seeds)])
    if rows:
        blocks.append(Table(["setting", "value"], rows, [False, False], "Configuration summary"))
    if absent:
        blocks.append(Text("Not in this report (no data): " + "; ".join(absent) + "."))
    return blocks


def _plans(data: EvalData) -> list[Block]:
    plans = data.table("plans")
    blocks: list[Block] = class_blocks(data) + why_cuts_blocks(data)
    numbers = ["batch", "noise_sigma", "predicted_leakage", "leakage", "compute_flops", "uplink_bps", "compute_s",
               "comm_s"]
    cols = {"device": "device", "device_class": "class", "batch": "batch", "cut": "cut", "cut_name": "cut block",
            "noise_sigma": "noise σ", "predicted_leakage": "predicted leakage", "leakage": "measured leakage",
            "compute_flops": "compute (FLOP/s)", "uplink_bps": "uplink (bit/s)", "compute_s": "compute/round (s)",
            "comm_s": "comm./round (s)"}
    for plan, part in plans.groupby("plan", sort=False):
        first = part.iloc[0]
        label = f"{plan} (strategy {first['strategy'] or '–'}"
        if first["budget_metric"]:
            label += f", budget {first['budget_metric']} ≤ {fmt(first['budget'])}"
        blocks.append(Heading(label + ")"))
        wide = over_seeds(part, ["device", "device_class"], numbers, ["cut", "cut_name"]).sort_values("device")
        blocks.append(ci_table(wide, cols, "", numbers))
    blocks.append(Text(ci_legend(seed_count(plans)) + " A cut that differs across seeds lists each seed's, "
                       f"joined with /. Measured leakage: the strongest attack's {metric_label(data.leakage_metric())} "
                       "at the device that represents the device's (cut, noise) in the audit."))
    return blocks


def _training(data: EvalData, figures: list[str]) -> list[Block]:
    blocks: list[Block] = []
    summary = data.table("summary")
    if not summary.empty:
        numbers = ["final_accuracy", "rounds", "sim_time_s", "wall_time_s", "max_leakage"]
        wide = over_seeds(summary, ["plan"], numbers, ["strategy", "defense", "strongest_attack"])
        blocks.append(ci_table(wide, {
            "plan": "plan", "strategy": "strategy", "defense": "defense", "seeds": "seeds",
            "final_accuracy": "final accuracy", "rounds": "rounds", "sim_time_s": "simulated time (s)",
            "wall_time_s": "wall time (s)", "max_leakage": f"max leakage ({metric_label(data.leakage_metric())})",
            "strongest_attack": "strongest attack"}, "Summary per plan", numbers))
        tt = summary.copy()
        pred, meas = tt["predicted_time_to_target_s"].astype(float), tt["measured_time_to_target_s"].astype(float)
        tt["relative_error"] = (pred - meas) / meas
        tt["reached"] = meas.notna().astype(float)
        numbers = ["predicted_rounds", "predicted_time_to_target_s", "measured_rounds", "measured_time_to_target_s",
                   "relative_error"]
        wide = over_seeds(tt, ["plan"], numbers, ["target_accuracy"])
        reached = tt.groupby("plan", sort=False)["reached"].agg(["sum", "count"])
        wide["reached"] = [f"{int(reached.loc[p, 'sum'])}/{int(reached.loc[p, 'count'])}" for p in wide["plan"]]
        blocks.append(ci_table(wide, {
            "plan": "plan", "target_accuracy": "target accuracy", "reached": "seeds at target",
            "predicted_rounds": "predicted rounds", "predicted_time_to_target_s": "predicted time to target (s)",
            "measured_rounds": "measured rounds", "measured_time_to_target_s": "measured time to target (s)",
            "relative_error": "relative error"},
            "Predicted against measured time to target (simulated clock)", numbers))
        blocks.append(Text(ci_legend(seed_count(summary)) + " Relative error = (predicted − measured) / measured, "
                           "per seed; – where the plan has no prediction or never reached the target; measured "
                           "times are over the seeds that reached it."))
    if "accuracy_vs_time.png" in figures:
        blocks.append(Figure("figures/accuracy_vs_time.png",
                             "Test accuracy against simulated training time (mean over seeds, 95% band)."))
    return blocks


def _pivot(part: pd.DataFrame, metrics: list[str], index: list[str]) -> pd.DataFrame:
    """One row per ``index``, one column per metric: the mean over seeds (each seed's value the
    mean over its rows: devices, images and attack seeds) ± its 95% interval."""
    part = part.assign(value=part["value"].astype(float))
    long = over_seeds(part[part["metric"].isin(metrics)], [*index, "metric"], ["value"])
    wide = long.pivot_table(index=index, columns="metric", values="value", aggfunc="first", dropna=False)
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
    index = ["cut", "attack"]
    if leak["defense"].nunique() > 1:
        index.append("defense")
    for plan, part in leak.groupby("plan", sort=False):
        blocks.append(Heading(f"Plan {plan}"))
        attacked = part[part["attack"] != "none"]
        if not attacked.empty:
            wide = _pivot(attacked, _RECON, index)
            wide = wide.merge(attacks, on="attack", how="left")
            metric_cols = [m for m in _RECON if m in wide.columns]
            blocks.append(ci_table(wide, {**{c: c for c in [*index, *metric_cols]}, "threat_model": "threat model"},
                                   f"Attacks on plan {plan} (per seed: means over images and attack seeds)",
                                   metric_cols))
        independent = part[part["attack"] == "none"]
        if not independent.empty:
            wide = _pivot(independent, _INDEPENDENT, [c for c in index if c != "attack"])
            blocks.append(ci_table(wide, {c: c for c in wide.columns},
                                   f"Attack-independent dependence on plan {plan} (dCor, nHSIC, KSG MI, dFIL bound)",
                                   _INDEPENDENT))
    blocks.append(Text(ci_legend(seed_count(leak))))
    if "leakage_vs_cut.png" in figures:
        label = metric_label(data.leakage_metric())
        blocks.append(Figure("figures/leakage_vs_cut.png", f"{label[:1].upper() + label[1:]} against cut "
                                                           "depth per attack (means over seeds, 95% error bars); "
                                                           "markers are plans."))
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
    d = defense_leakage(data.table("defenses"))
    d = d if "seed" in d.columns else d.assign(seed=0)
    d["base_attack"] = d["attack"].str.removesuffix("+adaptive")
    d["attacker"] = np.where(d["adaptive"], "adaptive", "unaware")
    base = (d[d["defense"].isin(["none", ""])].groupby(["seed", "base_attack", "cut"], as_index=False)["leakage"]
            .mean().rename(columns={"leakage": "undefended"}))
    d = d.merge(base, on=["seed", "base_attack", "cut"], how="left")
    d["reduction"] = d["undefended"].astype(float) - d["leakage"].astype(float)
    label = metric_label(data.leakage_metric())
    image = data.leakage_metric() == "ssim"  # PSNR and MSE score images only
    numbers = ["accuracy", "accuracy_drop", "leakage", "reduction", *(["psnr", "mse"] if image else []), "epsilon"]
    wide = over_seeds(d, ["defense", "setting", "strength", "cut", "attack", "attacker"], numbers)
    wide = wide.sort_values(["defense", "strength", "attack", "attacker"], kind="stable")
    blocks: list[Block] = [ci_table(wide, {
        "defense": "defense", "setting": "setting", "cut": "cut", "accuracy": "accuracy",
        "accuracy_drop": "accuracy drop (points)", "attack": "attack", "attacker": "attacker", "leakage": label,
        "reduction": f"{label} reduction", "psnr": "PSNR", "mse": "MSE", "epsilon": "ε"},
        "Accuracy cost against leakage reduction", numbers)]
    blocks.append(Text(ci_legend(seed_count(d)) + f" {label[:1].upper() + label[1:]} reduction is relative to the "
                       "undefended model (defense none) under the same attack and cut at the same seed; an "
                       "adaptive attacker is trained on defended data, an unaware one is not. The headline's "
                       "defense rows say which changes are real."))
    if "defenses.png" in figures:
        blocks.append(Figure("figures/defenses.png", f"Accuracy drop against {label} per defense (means over "
                                                     "seeds, 95% error bars)."))
    return blocks


def _pareto(data: EvalData, figures: list[str]) -> list[Block]:
    numbers = ["leakage", "measured_time_to_target_s", "predicted_time_to_target_s", "final_accuracy"]
    p = with_ci(data.table("pareto").sort_values(["device_class", "leakage"], kind="stable"), numbers)
    blocks: list[Block] = [ci_table(p, {
        "plan": "plan", "device_class": "device class", "seeds": "seeds",
        "leakage": f"leakage ({metric_label(data.leakage_metric())})",
        "measured_time_to_target_s": "measured time to target (s)",
        "predicted_time_to_target_s": "predicted time to target (s)", "final_accuracy": "final accuracy",
        "on_front": "on front"}, "Leakage against time to target per device class", numbers)]
    blocks.append(Text("Means over seeds ± 95% interval half-widths. On front (computed on the means): no other "
                       "plan has both lower-or-equal mean leakage and lower-or-equal mean measured time to target "
                       "(one strictly lower) for that device class; a plan that missed the target at any seed is "
                       "never on it. Overlapping intervals mean the ranking between two plans is not settled."))
    if "pareto.png" in figures:
        blocks.append(Figure("figures/pareto.png", "Pareto front of leakage against time to target (95% error "
                                                   "bars over seeds)."))
    return blocks


def _failed(data: EvalData) -> list[Block]:
    return [table(data.table("failed"), {"plan": "arm", "seed": "seed", "kind": "kind", "reason": "reason"},
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
    have = {"headline": data.has("comparisons"), "plans": data.has("plans"), "transformer": True,
            "training": data.has("summary") or data.has("rounds"),
            "leakage": data.has("leakage"), "reconstructions": bool(grids), "defenses": data.has("defenses"),
            "active": data.has("hijack") or data.has("detectors"),
            "pareto": data.has("pareto"), "failed": data.has("failed"), "notes": True}
    builders = {
        "headline": lambda: headline_blocks(data), "plans": lambda: _plans(data),
        "transformer": lambda: transformer_blocks(data),
        "training": lambda: _training(data, figures),
        "leakage": lambda: _leakage(data, figures), "reconstructions": lambda: _reconstructions(data, grids),
        "defenses": lambda: _defenses(data, figures), "active": lambda: active_blocks(data, figures),
        "pareto": lambda: _pareto(data, figures),
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
        if not have[key] and key not in ("failed", "transformer"):  # not missing data: none failed, a CNN
            why = [data.missing[t] for t in _ABSENT_REASON.get(key, []) if t in data.missing]
            absent.append(f"{SECTIONS[key]} ({', '.join(why) or 'no figures/reconstructions_*.png'})")
    title = f"hasfl-sec report: {data.meta.get('name') or data.path.name}"
    return Document(title, _lead(data, absent), sections)
