"""The reconstruction metric that scores a task's leakage in the evaluation's tables.

The evaluation ranks attacks, devices and defenses by one number per reconstruction, higher
meaning more leakage: SSIM for images (Wang et al. 2004), token accuracy for text (the fraction
of positions whose token the attack recovers, docs/privacy.md). Every attack of a modality
reports that modality's metric, so the strongest attack is the one with the largest value. The
report names them (:func:`hasfl_sec.report.tables.metric_label`).
"""

from __future__ import annotations

__all__ = ["TASK_LEAKAGE_METRICS", "leakage_metric"]

#: modality -> the metric of the evaluation's headline, defense table and Pareto front.
TASK_LEAKAGE_METRICS: dict[str, str] = {"image": "ssim", "text": "token_accuracy"}


def leakage_metric(modality: str) -> str:
    """The leakage metric of ``modality`` ("image" or "text")."""
    return TASK_LEAKAGE_METRICS[modality]

