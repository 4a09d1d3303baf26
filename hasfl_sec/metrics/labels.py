"""Label-inference metrics: how well an attacker recovers private labels.

* ``label_accuracy``: label inference accuracy as reported by SecretFlow, ExPLoit (Kariyappa &
  Qureshi, "ExPLoit: Extracting Private Labels in Split Learning", SaTML 2023) and SDAR (Zhu et
  al., "Passive Inference Attacks on Split Learning via Adversarial Regularization", NDSS 2024).
* ``label_auc``: leak-AUC, the ROC-AUC of an attack score (e.g. gradient norm or cosine) against
  the true label, from Li et al., "Label Leakage and Protection in Two-party Split Learning",
  ICLR 2022 (also AIJack). Computed with ``sklearn.metrics.roc_auc_score``; for [n, K] scores the
  multi-class version is the one-vs-rest macro average (Provost & Domingos 2000; sklearn's
  ``multi_class="ovr", average="macro"``), computed class by class so that the scores need not be
  probabilities.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from ._arrays import to_numpy

__all__ = ["label_accuracy", "label_auc"]

logger = logging.getLogger(__name__)


def label_accuracy(pred: Any, true: Any) -> float:
    """Fraction of correctly inferred labels.

    ``pred`` is either predicted labels [n] or class scores [n, K] (arg-maxed per row).
    """
    p = to_numpy(pred)
    t = to_numpy(true).reshape(-1)
    if p.ndim == 2:
        p = p.argmax(axis=1)
    p = p.reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred and true must hold the same number of labels; got {p.shape} and {t.shape}")
    if len(t) == 0:
        raise ValueError("label_accuracy needs at least one label")
    return float(np.mean(p == t))


def label_auc(scores: Any, true: Any) -> float:
    """Leak-AUC: ROC-AUC of attack ``scores`` against the true labels.

    Args:
        scores: [n] scores for a binary label (higher = more likely the positive class 1), or
            [n, K] per-class scores for K-class labels 0..K-1 (one-vs-rest macro AUC over the
            classes present in ``true``).
        true: [n] true labels (0/1 for binary scores).
    """
    s = to_numpy(scores)
    t = to_numpy(true).reshape(-1)
    if len(s) != len(t):
        raise ValueError(f"scores and true must have the same length; got {len(s)} and {len(t)}")
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1):
        return float(roc_auc_score(t, s.reshape(-1)))
    if s.ndim != 2:
        raise ValueError(f"scores must be [n] or [n, K]; got shape {s.shape}")
    k = s.shape[1]
    labels = t.astype(np.int64)
    if not np.array_equal(labels, t) or labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"with [n, {k}] scores, true labels must be integers in 0..{k - 1}")
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError("label_auc needs at least two distinct true labels")
    if len(present) < k:
        logger.debug("label_auc: classes %s absent from the labels are skipped",
                     sorted(set(range(k)) - set(present.tolist())))
    aucs = [roc_auc_score(labels == c, s[:, c]) for c in present]
    return float(np.mean(aucs))
