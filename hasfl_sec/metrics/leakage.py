"""The reconstruction metric that scores a task's leakage in the evaluation's tables.

The evaluation ranks attacks, devices and defenses by one number per reconstruction, higher
meaning more leakage: SSIM for images (Wang et al. 2004), token accuracy for text (the fraction
of positions whose token the attack recovers, docs/privacy.md). Every attack of a modality
reports that modality's metric, so the strongest attack is the one with the largest value.
"""

from __future__ import annotations

__all__ = ["LEAKAGE_METRICS", "leakage_metric", "metric_label"]

#: modality -> the metric of the evaluation's headline, defense table and Pareto front.
LEAKAGE_METRICS: dict[str, str] = {"image": "ssim", "text": "token_accuracy"}

_LABELS = {"ssim": "SSIM", "token_accuracy": "token accuracy"}


def leakage_metric(modality: str) -> str:
    """The leakage metric of ``modality`` ("image" or "text")."""
    return LEAKAGE_METRICS[modality]


def metric_label(metric: str) -> str:
    """How the report names ``metric`` ("SSIM", "token accuracy"); SSIM for an empty name, which
    an evaluation written before text tasks existed leaves in its tables."""
    return _LABELS.get(metric or "ssim", metric)
