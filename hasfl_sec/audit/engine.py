"""The per-split audit: run every attack on what each device exchanged at its cut, and score it.

Flow (docs/design.md section 3): traces of victim devices (:mod:`hasfl_sec.audit.victims`) -> each attack sees
only :func:`~hasfl_sec.attacks.base.observe`-filtered records and a
:func:`~hasfl_sec.attacks.base.make_context` granted by its threat model -> the metrics compare its
output with the ground truth, which only this module holds -> one tidy long table.

Two entry points:

* :func:`audit_run` audits a finished ``hasfl-sec train`` run: it continues the run from its
  checkpoint for a few rounds with the tap attached and attacks the devices at the cuts the plan
  used; cuts the plan did not use (``cuts="all"`` or a list) are attacked on the run's aggregated
  model through a simulated device.
* :func:`audit_model` profiles a bare model over its cuts without a fleet: the model is trained
  centrally (or loaded from a state-dict checkpoint) and every cut is attacked through a simulated
  device.

Every attack runs per (device, cut) on ``images`` victim images for each seed; per-image metrics
are summarised as mean, standard deviation and count over images and seeds. Attack-independent
figures (distance correlation, nHSIC, KSG mutual information on random projections, the dFIL
Fisher bound) are computed on the same victim images and reported with ``attack = "none"``
(:mod:`hasfl_sec.audit.scoring`).

Defenses. The records are what crossed the cut, so every trace already reflects the run's defense
(replayed devices apply it, simulated ones too). Against a defended run an attack that can adapt
(``Params.adaptive``) runs twice (``AuditConfig.adaptive = "auto"``): unaware, as published, and
adaptive, knowing the defense and its parameters but not the victims' draws (docs/privacy.md section
5, feature 8); the rows are named ``<attack>`` and ``<attack>+adaptive``. Where knowing the
defense changes nothing the attack computes (:meth:`~hasfl_sec.attacks.base.Attack.adapts_to`;
for example rMLE under unclipped zero-mean noise) the one plain row stands for both.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.base import Attack, AttackContext, Reconstruction, make_context, observe
from ..defenses.base import Defense
from ..errors import ConfigError
from ..metrics import DEPENDENCE, match_batch
from ..metrics.text import match_sequences
from ..results import LEAKAGE_COLUMNS
from ..seeding import derive_seed
from ..sfl.protocol import Exchange, GroundTruth
from ..sfl.splitstep import cut_gradient
from .config import ADAPTIVE_MODES, PRESETS, AuditConfig, AuditEnv
from .scoring import head, independent_figures, leakage_row, score
from .variants import Variant, build_attack, plan_variants
from .victims import RoundView, Trace

__all__ = ["AuditResult", "audit_traces", "check_attacks", "run_attack", "trace_rounds_needed"]

logger = logging.getLogger(__name__)


@dataclass
class AuditResult:
    """The leakage table, a few images per attack for figures, and what was skipped and why."""

    frame: pd.DataFrame
    samples: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]]
    skipped: list[str]
    meta: dict[str, Any]


def check_attacks(audit: AuditConfig, labels_shared: bool) -> None:
    """Build every requested attack once, refusing unknown names, bad params, and threat models the
    recorded run cannot serve; one-line :class:`ConfigError` before any work is done."""
    if audit.images < 1:
        raise ConfigError("--images", audit.images, "an integer >= 1")
    if not audit.seeds:
        raise ConfigError("--seeds", audit.seeds, "at least one seed")
    if audit.adaptive not in ADAPTIVE_MODES:
        raise ConfigError("--adaptive", audit.adaptive, ADAPTIVE_MODES)
    if audit.preset not in PRESETS:
        raise ConfigError("--preset", audit.preset, tuple(PRESETS))
    for name, params in audit.attack_params.items():
        if "adaptive" in params:
            raise ConfigError("--attack-param", f"{name}.adaptive={params['adaptive']}",
                              "--adaptive auto|off|only (the audit sets each variant's adaptive flag)")
    unknown = set(audit.attack_params) - set(audit.attack_names())
    if unknown:
        raise ConfigError("--attack-param", sorted(unknown)[0], "parameters of an attack being run: "
                          + ", ".join(audit.attack_names()))
    for name in audit.attack_names():
        attack = build_attack(name, audit)
        if "labels" in attack.threat_model.observes and not labels_shared:
            raise ConfigError("--attacks", name, "attacks that the run's records support",
                              f"{name} observes labels but the run did not share them; "
                              "re-train with --set train.share_labels=true")
    for name in audit.dependence:
        DEPENDENCE.get(name)


# grouping ----------------------------------------------------------------------------------------
@dataclass
class _Group:
    views: list[RoundView]  # the rounds of one reconstruct() call; views[0] sets the weights
    exchanges: list[Exchange]
    truths: list[GroundTruth]
    uploads: list[Any]


def _groups(trace: Trace, unit: str, images: int) -> list[_Group]:
    """The reconstruct() calls for an attack of this ``unit``, covering ``images`` victim images."""
    groups, have = [], 0
    if unit == "round":
        for view in trace.rounds:
            if have >= images:
                break
            ex, tr = head(view, images - have)
            have += len(tr.inputs)
            groups.append(_Group([view], [ex], [tr], []))
    elif unit == "trace":
        views, exchanges, truths = [], [], []
        for view in trace.rounds:
            if have >= images:
                break
            ex, tr = head(view, images - have)
            have += len(tr.inputs)
            views.append(view)
            exchanges.append(ex)
            truths.append(tr)
        groups = [_Group(views, exchanges, truths, [])] if views else []
    elif unit == "period":
        for period in trace.periods():
            if have >= images:
                break
            have += sum(len(v.truth.inputs) for v in period)
            groups.append(_Group(period, [v.exchange for v in period], [v.truth for v in period],
                                 [trace.uploads[period[-1].round]]))
    else:
        raise ValueError(f"unknown attack unit {unit!r}")
    return groups


def trace_rounds_needed(batch: int, images: int, interval: int) -> int:
    """Rounds to record so that every attack unit reaches ``images``: whole periods of I rounds."""
    return max(1, math.ceil(math.ceil(images / batch) / interval)) * interval


# running one attack --------------------------------------------------------------------------------
def _defended_cut_gradient(client: nn.Module, server: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           defense: Defense, round: int, device: int) -> torch.Tensor:
    """A sybil's cut gradient through the defended split step: its uplink transformed as the
    victim device's is (its parameters, the attacker's draws), the gradient at what the server
    received, then the downlink transform."""
    with torch.no_grad():
        a = defense.transform_smashed(client(x), round=round, device=device)
    a = a.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(server(a), y), a)
    return defense.transform_grad(grad, round=round, device=device).detach()


def _context(attack: Attack, view: RoundView, trace: Trace, env: AuditEnv, seed: int) -> AttackContext:
    client, server = view.client, view.server

    def sybil(x: torch.Tensor, y: torch.Tensor, defense: Defense | None = None) -> torch.Tensor:
        x, y = x.to(env.device), y.to(env.device)
        if defense is None:
            return cut_gradient(client, server, x, y)[1]
        return _defended_cut_gradient(client, server, x, y, defense, view.round, trace.device)

    # the attacker's draws: its own stream per attack seed and round, never the victims'
    defense = env.attacker_copy(derive_seed(seed, "attacker-defense", view.round))
    return make_context(attack.threat_model, client=client, fresh_client=lambda: env.fresh_client(trace.cut),
                        input_shape=env.input_shape, num_classes=env.num_classes, cut=trace.cut,
                        victim=trace.device, auxiliary=env.auxiliary, auxiliary_labels=env.auxiliary_labels,
                        sybil_grad=sybil, defense=defense, client_optimizer=env.client_optimizer,
                        device=env.device, seed=seed)


def _aligned(rec: Reconstruction, truths: Sequence[GroundTruth], unit: str, secret_mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(recon, truth_inputs, truth_labels, secrets)`` row by row; a jointly reconstructed
    (per-period) batch is first reordered within each exchange (Hungarian on pixel MSE, or on
    agreeing tokens for text).
    ``secrets`` is each row's planted-secret mask, read from ``secret_mask`` (the training split's,
    for text tasks with secrets) at the victim's index; None without secrets."""
    by_key = {t.key: t for t in truths}
    rows = [(by_key[k], p) for k, p in zip(rec.keys, rec.positions)]
    truth = torch.stack([t.inputs[p] for t, p in rows])
    labels = torch.stack([t.labels[p] for t, p in rows])
    secrets = None
    if secret_mask is not None and secret_mask.any():
        secrets = secret_mask[torch.stack([t.index[p] for t, p in rows]).cpu()]
    recon = None if rec.inputs is None else rec.inputs.detach().cpu()
    if recon is not None and unit == "period":
        matched = recon.clone()
        match = match_batch if recon.is_floating_point() else match_sequences
        for key in dict.fromkeys(rec.keys):
            rows_of = [i for i, k in enumerate(rec.keys) if k == key]
            matched[rows_of] = recon[rows_of][match(recon[rows_of], truth[rows_of])]
        recon = matched
    return recon, truth, labels, secrets


def run_attack(attack: Attack, trace: Trace, env: AuditEnv, images: int, seed: int
               ) -> tuple[list[Reconstruction], list[GroundTruth]] | str:
    """One attack on one trace with one seed: its reconstructions and the ground truth behind them,
    or why it does not apply. Each :class:`~hasfl_sec.attacks.base.Attack.unit` gets the client
    weights its threat model speaks of (see :func:`_groups`)."""
    torch.manual_seed(seed)
    groups = _groups(trace, attack.unit, images)
    if not groups:
        return f"{attack.name} at cut {trace.cut}: no complete {attack.unit} was recorded"
    first = _context(attack, groups[0].views[0], trace, env, seed)
    reason = attack.applies(first)
    if reason:
        return f"{attack.name}: {reason}"
    attack.fit(first)
    recs, truths = [], []
    for g in groups:
        ctx = first if g is groups[0] else _context(attack, g.views[0], trace, env, seed)
        recs.append(attack.reconstruct(observe(g.exchanges, g.uploads, attack.threat_model), ctx))
        truths.extend(g.truths)
    return recs, truths


def _attack_trace(variant: Variant, trace: Trace, env: AuditEnv, audit: AuditConfig
                  ) -> tuple[Attack, dict[str, list[float]], tuple[torch.Tensor, torch.Tensor] | None, str | None,
                             float]:
    """Run one attack on one trace for every seed: the attack (as built), per-metric values, sample
    images, skip reason, seconds."""
    values: dict[str, list[float]] = {}
    sample = None
    start = time.perf_counter()
    for s in audit.seeds:
        attack = build_attack(variant.attack, audit, env, adaptive=variant.adaptive)
        # keyed by the attack, not the variant: unaware and adaptive start from the same draws
        outcome = run_attack(attack, trace, env, audit.images,
                             derive_seed(env.seed, "audit", variant.attack, trace.device, trace.cut, s))
        if isinstance(outcome, str):
            return attack, {}, None, outcome, 0.0
        recs, truths = outcome
        for rec in recs:
            recon, truth, labels, secrets = _aligned(rec, truths, attack.unit, env.secret_mask)
            for k, v in score(rec, recon, truth, labels, secrets).items():
                values.setdefault(k, []).extend(v)
            if sample is None and recon is not None:
                sample = (truth[: audit.grid_images], recon[: audit.grid_images])
    return attack, values, sample, None, time.perf_counter() - start


def audit_traces(traces: Sequence[Trace], env: AuditEnv, audit: AuditConfig, *, progress: bool = False) -> AuditResult:
    """Run every attack of ``audit`` on every trace and return the leakage table."""
    variants, notes = plan_variants(audit, env)
    for note in notes.values():
        logger.info("adaptive: %s", note)
    tasks = [(t, v) for t in traces for v in [None, *variants]]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc="audit", unit="attack")
    rows, samples, skipped, timings = [], {}, [], {}
    seeds = ",".join(str(s) for s in audit.seeds)
    try:
        for trace, variant in tasks:
            name = None if variant is None else variant.row
            if bar is not None:
                bar.set_postfix(cut=trace.cut, device=trace.device, attack=name or "dependence")
            if variant is None:
                start = time.perf_counter()
                for metric, vals, info in independent_figures(trace, env, audit):
                    rows.append(leakage_row(env, trace, "none", metric, vals, seeds, "attack-independent", info))
                timings["none"] = timings.get("none", 0.0) + time.perf_counter() - start
            else:
                attack, values, sample, reason, seconds = _attack_trace(variant, trace, env, audit)
                if reason:
                    if reason not in skipped:
                        skipped.append(reason)
                        logger.warning("skipped %s", reason)
                else:
                    params = dataclasses.asdict(attack.params)
                    threat = attack.threat_model.describe()
                    for metric, vals in values.items():
                        if vals:
                            rows.append(leakage_row(env, trace, name, metric, vals, seeds, threat, params))
                    rows.append(leakage_row(env, trace, name, "wall_time_s", [seconds], seeds, threat, params))
                    timings[name] = timings.get(name, 0.0) + seconds
                    if sample is not None:
                        samples[(trace.device, trace.cut, name)] = sample
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    frame = pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)
    threats = {v.row: build_attack(v.attack, audit, env, adaptive=v.adaptive).threat_model.describe()
               for v in variants}
    meta = {"run_id": env.run_id, "attacks": threats, "defense": env.defense,
            "adaptive": {"mode": audit.adaptive, "same_as_unaware": notes}, "preset": audit.preset,
            "attack_seconds": timings, "skipped": skipped, "images": audit.images, "seeds": audit.seeds,
            **({"vocab": list(env.vocab)} if env.vocab else {}),
            "traces": [{"device": t.device, "cut": t.cut, "batch": t.batch, "source": t.source,
                        "rounds": [v.round for v in t.rounds]} for t in traces]}
    return AuditResult(frame, samples, skipped, meta)
