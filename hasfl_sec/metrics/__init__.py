"""Leakage metrics: reconstruction quality, label inference and input/activation dependence.

The choice of metrics follows docs/privacy.md section 3: MSE/PSNR and SSIM (Wang et al., IEEE TIP
2004) with breaching's identifiability (IIP) and Hungarian batch ordering (Geiping et al.,
NeurIPS 2020) for reconstructions; label accuracy and leak-AUC (Li et al., ICLR 2022) for labels;
distance correlation (Szekely et al. 2007; Szekely & Rizzo 2014), HSIC (Gretton et al. 2005) and
KSG mutual information (Kraskov et al., PRE 2004) for dependence; and the attack-agnostic dFIL
Fisher-information bound (Maeng, Guo, Kariyappa & Suh, NeurIPS 2023) per cut. See each module for
details.

``METRICS`` maps a name to a :class:`MetricSpec`. ``higher_is_better`` is from the attacker's
point of view: ``True`` means a larger value is a better reconstruction / inference, i.e. more
leakage. ``needs`` says what the metric is computed from:

* ``"images"`` -- an attack's reconstructions against the true images: ``fn(recon, truth)``;
* ``"labels"`` -- an attack's inferred labels or scores against the true labels: ``fn(pred, true)``;
* ``"model"`` -- no attack at all: the client part of the split model (the blocks before the cut)
  and a batch of its inputs, ``fn(client, x, **options)``, returning one value per sample. The
  ``dfil`` metrics (:mod:`.fisher`) are of this kind: an analytic bound on what *any* unbiased
  attacker could reconstruct from the noisy smashed data.

``leakage_metric`` (:mod:`.leakage`) names the one metric per modality (SSIM for images, token
accuracy for text) that the evaluation's headline, defense table and Pareto front rank leakage by.

This package imports neither the attacks nor the trainer, and not torch (``fisher`` imports it on
first use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..registry import Registry
from .dependence import DEPENDENCE, DependenceResult, distance_correlation, hsic, ksg_mutual_information, nhsic
from .fisher import FisherResult, dfil, dfil_mse_bound, dfil_values
from .image import identifiability, image_report, match_batch, mse, psnr, ssim
from .labels import label_accuracy, label_auc
from .leakage import TASK_LEAKAGE_METRICS, leakage_metric

__all__ = [
    "METRICS",
    "MetricSpec",
    "mse",
    "psnr",
    "ssim",
    "match_batch",
    "identifiability",
    "image_report",
    "label_accuracy",
    "label_auc",
    "DEPENDENCE",
    "DependenceResult",
    "distance_correlation",
    "hsic",
    "nhsic",
    "ksg_mutual_information",
    "FisherResult",
    "dfil",
    "dfil_values",
    "dfil_mse_bound",
    "TASK_LEAKAGE_METRICS",
    "leakage_metric",
]


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its function, its direction and what it compares."""

    fn: Callable[..., Any]
    higher_is_better: bool
    needs: str  # "images", "labels" or "model"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


METRICS: Registry[MetricSpec] = Registry("metric", "metrics")

METRICS.register("mse", help="per-image pixel MSE on [0, 1] images")(MetricSpec(mse, False, "images"))
METRICS.register("psnr", help="per-image PSNR in dB (inf for identical images)")(
    MetricSpec(psnr, True, "images")
)
METRICS.register("ssim", help="per-image SSIM, Gaussian 11x11 window, sigma 1.5 (Wang et al. 2004)")(
    MetricSpec(ssim, True, "images")
)
METRICS.register("identifiability", help="fraction of reconstructions nearest to their own source (IIP)")(
    MetricSpec(identifiability, True, "images")
)
METRICS.register("label_accuracy", help="fraction of correctly inferred labels")(
    MetricSpec(label_accuracy, True, "labels")
)
METRICS.register("label_auc", help="leak-AUC: ROC-AUC of attack scores vs true labels (OvR macro)")(
    MetricSpec(label_auc, True, "labels")
)
METRICS.register("dfil", help="per-sample dFIL of the client part: tr(J^T J) / (sigma^2 d) (Maeng et al. 2023)")(
    MetricSpec(dfil_values, True, "model")
)
METRICS.register("dfil_mse_bound", help="per-sample 1/dFIL: unbiased attackers' per-pixel MSE lower bound")(
    MetricSpec(dfil_mse_bound, False, "model")
)
