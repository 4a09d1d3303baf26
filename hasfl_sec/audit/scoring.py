"""The audit's scoring: per-attack metrics, attack-independent figures, and the long table's rows.

Split from :mod:`hasfl_sec.audit.engine` (which runs the attacks) so that what is measured and how a row
of ``leakage.csv`` is laid out live in one place. Metrics compare an attack's output with the
ground truth, which only the audit holds (Breaching's separation of the user's data from the
attacker's view, Geiping et al. 2020). Attack-independent figures are computed on the victim
images and on what crossed the cut (defended smashed data when the run has a defense):
distance correlation (Szekely et al. 2007), nHSIC (Gretton et al. 2005), KSG mutual information on
random projections (Kraskov et al. 2004), and the dFIL bound (Maeng et al., NeurIPS 2023).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..attacks.base import Reconstruction
from ..metrics import DEPENDENCE, identifiability, image_report, label_accuracy, label_auc
from ..metrics.fisher import dfil
from ..metrics.text import text_report
from ..seeding import derive_seed
from ..sfl.protocol import Exchange, GroundTruth
from .config import AuditConfig, AuditEnv
from .victims import RoundView, Trace

__all__ = ["head", "score", "independent_figures", "leakage_row"]

def head(view: RoundView, k: int) -> tuple[Exchange, GroundTruth]:
    """The first ``k`` samples of a round's exchange and truth."""
    ex, tr = view.exchange, view.truth
    cut = lambda t: None if t is None else t[:k]  # noqa: E731
    return (dataclasses.replace(ex, smashed=cut(ex.smashed), labels=cut(ex.labels), grad=cut(ex.grad)),
            dataclasses.replace(tr, inputs=tr.inputs[:k], labels=tr.labels[:k], index=tr.index[:k]))


def score(rec: Reconstruction, recon: torch.Tensor | None, truth: torch.Tensor,
          labels: torch.Tensor, secrets: torch.Tensor | None = None) -> dict[str, list[float]]:
    """Per-image reconstruction metrics and per-call label metrics of one reconstruction; for text
    (token ids), per-sequence token accuracy and ROUGE-L and, given the planted ``secrets`` mask,
    per-secret recovery (:mod:`hasfl_sec.metrics.text`)."""
    out: dict[str, list[float]] = {}
    if recon is not None and not recon.is_floating_point():
        for name, values in text_report(recon, truth, secrets).items():
            out[name] = [float(v) for v in values]
    elif recon is not None:
        for name, per_image in image_report(recon, truth).items():
            out[name] = [float(v) for v in per_image]
        out["identifiability"] = [identifiability(recon, truth)] if len(truth) > 1 else []
    if rec.labels is not None:
        out["label_accuracy"] = [label_accuracy(rec.labels, labels)]
        if rec.label_scores is not None:
            try:
                out["label_auc"] = [label_auc(rec.label_scores, labels)]
            except ValueError:  # a single class among the victims' labels: AUC undefined
                pass
    return out


def independent_figures(trace: Trace, env: "AuditEnv", audit: "AuditConfig"
                        ) -> list[tuple[str, list[float], dict[str, Any]]]:
    """Dependence estimates and the dFIL bound on the trace's first ``images`` victim images.

    The dependence estimators see the recorded (defended) smashed data; dFIL is a property of the
    client part alone, with its own reference noise (``dfil_relative_sigma``). For text the inputs
    enter the estimators one-hot encoded; dFIL, a bound on reconstructing real-valued inputs, is not
    computed for token ids.
    """
    views = [head(v, audit.images) for v in trace.rounds]
    x = torch.cat([t.inputs for _, t in views])[: audit.images]
    z = torch.cat([e.smashed for e, _ in views])[: audit.images]
    text = not x.is_floating_point()
    features = F.one_hot(x, env.num_classes).flatten(1).float() if text else x  # token ids as one-hot
    out = []
    for name in audit.dependence:
        params = dict(audit.dependence_params.get(name, {}))
        if name == "ksg":
            params.setdefault("seed", derive_seed(env.seed, "ksg", trace.cut))
        if len(x) < 4:
            continue
        res = DEPENDENCE.get(name)(features.numpy(), z.numpy(), **params)
        out.append((name, [float(res.value)], {"estimator": res.estimator, **res.params}))
    if audit.dfil_relative_sigma is not None and not text:  # no Jacobian with respect to token ids
        gen = torch.Generator().manual_seed(derive_seed(env.seed, "dfil", trace.cut))
        fisher = dfil(trace.rounds[0].client, x.to(env.device), relative_sigma=audit.dfil_relative_sigma,
                      generator=gen)
        info = {"sigma": float(fisher.sigma), "relative_sigma": audit.dfil_relative_sigma, "method": fisher.method}
        out.append(("dfil", fisher.dfil.tolist(), info))
        out.append(("dfil_mse_bound", fisher.mse_bound.tolist(), info))
    return out


def leakage_row(env: "AuditEnv", trace: Trace, attack: str, metric: str, values: Sequence[float], seeds: str,
                threat: str, params: dict[str, Any]) -> dict[str, Any]:
    """One row of ``leakage.csv``: mean, std (of the finite values) and count of ``values``."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)] if np.isfinite(arr).any() else arr
    return {"run_id": env.run_id, "phase": "audit", "round": trace.trained_rounds, "device": trace.device,
            "cut": trace.cut, "batch": trace.batch, "attack": attack, "defense": env.defense, "metric": metric,
            "value": float(np.mean(arr)) if len(arr) else float("nan"),
            "std": float(np.std(finite)) if len(finite) > 1 else 0.0, "n": int(len(arr)), "seeds": seeds,
            "source": trace.source, "threat_model": threat, "params": json.dumps(params, sort_keys=True, default=str)}
