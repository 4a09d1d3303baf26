"""Leakage metrics: reconstruction quality, label inference and input/activation dependence.

The choice of metrics follows PRIVACY.md section 3: MSE/PSNR and SSIM (Wang et al., IEEE TIP
2004) with breaching's identifiability (IIP) and Hungarian batch ordering (Geiping et al.,
NeurIPS 2020) for reconstructions; label accuracy and leak-AUC (Li et al., ICLR 2022) for labels;
distance correlation (Szekely et al. 2007; Szekely & Rizzo 2014), HSIC (Gretton et al. 2005) and
KSG mutual information (Kraskov et al., PRE 2004) for dependence. See each module for details.

``METRICS`` maps a name to a :class:`MetricSpec`. ``higher_is_better`` is from the attacker's
point of view: ``True`` means a larger value is a better reconstruction / inference, i.e. more
leakage. ``needs`` says whether the metric compares ``"images"`` or ``"labels"``.
This package imports neither the attacks nor the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..registry import Registry
from .dependence import (
    DEPENDENCE,
    DependenceResult,
    distance_correlation,
    hsic,
    ksg_mutual_information,
    nhsic,
)
from .image import identifiability, image_report, match_batch, mse, psnr, ssim
from .labels import label_accuracy, label_auc

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
]


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its function, its direction and what it compares."""

    fn: Callable[..., Any]
    higher_is_better: bool
    needs: str  # "images" or "labels"

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
