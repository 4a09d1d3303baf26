"""Dependence between private inputs X [n, d_x] and smashed data Z [n, d_z].

Every trailing axis is flattened, so images [n, C, H, W] and activations of any shape can be
passed directly. Estimators:

* Distance correlation: Szekely, Rizzo & Bakirov, "Measuring and testing dependence by
  correlation of distances", Ann. Statist. 35(6), 2007 (double-centred, biased V-statistic), and
  the bias-corrected U-centred version of Szekely & Rizzo, "Partial distance correlation with
  methods for dissimilarities", Ann. Statist. 42(6), 2014. Used as leakage metric by NoPeek
  (Vepakomma et al. 2020). O(n^2) memory: fine for n <= 2048.
* HSIC: Gretton, Bousquet, Smola & Schoelkopf, "Measuring statistical dependence with
  Hilbert-Schmidt norms", ALT 2005; Gaussian kernels with median-heuristic bandwidth, biased
  estimator (1/n^2) tr(KHLH), and the normalised nHSIC = HSIC(x,y)/sqrt(HSIC(x,x) HSIC(y,y))
  (the kernel analogue of CKA, Kornblith et al. 2019).
* KSG mutual information: estimator 1 of Kraskov, Stoegbauer & Grassberger, "Estimating mutual
  information", Phys. Rev. E 69, 066138 (2004), max-norm, in nats. kNN MI is strongly biased
  beyond ~10 dimensions, so ``project_to`` offers a seeded Gaussian random projection
  (Johnson-Lindenstrauss) of each variable first.

``DEPENDENCE`` registers every estimator under a short name; each entry returns a
:class:`DependenceResult` that records the parameters actually used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist
from scipy.special import digamma

from ..registry import Registry
from ._arrays import as_samples

if TYPE_CHECKING:
    import torch

__all__ = [
    "DependenceResult",
    "DEPENDENCE",
    "distance_correlation",
    "distance_correlation_torch",
    "hsic",
    "nhsic",
    "ksg_mutual_information",
]

logger = logging.getLogger(__name__)


@dataclass
class DependenceResult:
    """One dependence estimate: its value, the estimator's registry name and its parameters."""

    value: float
    estimator: str
    params: dict[str, Any] = field(default_factory=dict)


DEPENDENCE: Registry[Callable[..., DependenceResult]] = Registry(
    "dependence estimator", "metrics.dependence"
)


def _paired(x: Any, y: Any, min_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Both variables as [n, d] float64 arrays with the same n >= ``min_n``."""
    a, b = as_samples(x, "x"), as_samples(y, "y")
    if len(a) != len(b):
        raise ValueError(f"x and y must hold the same number of samples; got {len(a)} and {len(b)}")
    if len(a) < min_n:
        raise ValueError(f"this estimator needs at least {min_n} samples; got {len(a)}")
    return a, b


# ----------------------------------------------------------------------------- distance correlation


def _double_centred(d: Any) -> Any:
    """A_ij = a_ij - mean_i - mean_j + grand mean (Szekely et al. 2007); numpy or torch."""
    return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()


def _u_centred(d: Any) -> Any:
    """U-centred distance matrix with zero diagonal (Szekely & Rizzo 2014, eq. 2.1); torch."""
    import torch

    n = len(d)
    rows = d.sum(1, keepdim=True) / (n - 2)
    cols = d.sum(0, keepdim=True) / (n - 2)
    out = d - rows - cols + d.sum() / ((n - 1) * (n - 2))
    return out * (1 - torch.eye(n, dtype=d.dtype, device=d.device))  # zero diagonal, autograd-safe


def distance_correlation_torch(x: "torch.Tensor", y: "torch.Tensor", *, unbiased: bool = True,
                               squared: bool = True) -> "torch.Tensor":
    """Differentiable distance correlation of x [n, ...] and y [n, ...], as a 0-dim tensor.

    The estimator of :func:`distance_correlation` (which calls this one in float64), written in
    torch so that it can be a training loss (NoPeek, Vepakomma et al. 2020). Pairwise distances
    are computed exactly (no matrix-product shortcut). With ``squared=False`` the square root is
    taken of dCor^2 clamped at 1e-12, so the gradient stays finite for independent data.
    Needs n >= 4 (unbiased) or n >= 2 (biased). A constant variable gives 0 (with zero gradient).
    """
    import torch

    a = x.flatten(1) if x.dim() > 1 else x.reshape(-1, 1)
    b = (y.flatten(1) if y.dim() > 1 else y.reshape(-1, 1)).to(a.dtype)
    if len(a) != len(b):
        raise ValueError(f"x and y must hold the same number of samples; got {len(a)} and {len(b)}")
    if len(a) < (4 if unbiased else 2):
        raise ValueError(f"this estimator needs at least {4 if unbiased else 2} samples; got {len(a)}")
    centre = _u_centred if unbiased else _double_centred
    da = centre(torch.cdist(a, a, compute_mode="donot_use_mm_for_euclid_dist"))
    db = centre(torch.cdist(b, b, compute_mode="donot_use_mm_for_euclid_dist"))
    # The common normalisation (1/n^2 or 1/(n(n-3))) cancels in the ratio.
    xy, xx, yy = (da * db).sum(), (da * da).sum(), (db * db).sum()
    if float(xx.detach()) <= 0.0 or float(yy.detach()) <= 0.0:
        return xy * 0.0
    r2 = xy / torch.sqrt(xx * yy)
    return r2 if squared else r2.clamp_min(1e-12).sqrt()


def distance_correlation(x: Any, y: Any, unbiased: bool = True, squared: bool = True) -> float:
    """Distance correlation between x [n, ...] and y [n, ...].

    Args:
        unbiased: ``True`` gives the bias-corrected estimate R*_n of dCor^2 (Szekely & Rizzo 2014),
            which is ~0 (and may be slightly negative) for independent data; ``False`` gives the
            V-statistic of Szekely et al. (2007), which is positive and biased upwards for small n.
        squared: return dCor^2 (default: the quantity the unbiased estimator is unbiased for).
            With ``False`` the square root is taken; a negative R*_n is clamped to 0 first.

    Returns 1 for y = x (or any similarity transform of x) and 0 when either variable is constant.
    Computed by :func:`distance_correlation_torch` in float64 (one implementation for the metric
    and the NoPeek loss).
    """
    import torch

    a, b = _paired(x, y, min_n=4 if unbiased else 2)
    r2 = float(distance_correlation_torch(torch.from_numpy(a), torch.from_numpy(b), unbiased=unbiased))
    return float(r2 if squared else np.sqrt(max(r2, 0.0)))


# ------------------------------------------------------------------------------------------- HSIC


def median_bandwidth(x: Any) -> float:
    """Median heuristic: the median pairwise Euclidean distance (1.0 if all points coincide)."""
    a = as_samples(x, "x")
    d = cdist(a, a)
    off = d[np.triu_indices(len(a), k=1)]
    off = off[off > 0]
    return float(np.median(off)) if len(off) else 1.0


def _centred_gram(a: np.ndarray, sigma: float | None) -> tuple[np.ndarray, float]:
    """H K H for the Gaussian kernel exp(-|u - v|^2 / (2 sigma^2)), and the sigma used."""
    if sigma is None:
        sigma = median_bandwidth(a)
    if not sigma > 0:
        raise ValueError(f"kernel bandwidth must be positive; got {sigma}")
    k = np.exp(-cdist(a, a, "sqeuclidean") / (2.0 * sigma * sigma))
    return _double_centred(k), float(sigma)


def _hsic_parts(
    x: Any, y: Any, sigma_x: float | None, sigma_y: float | None
) -> tuple[float, float, float, dict[str, Any]]:
    """HSIC(x,y), HSIC(x,x), HSIC(y,y) (biased, 1/n^2) and the parameters used."""
    a, b = _paired(x, y, min_n=2)
    kc, sx = _centred_gram(a, sigma_x)
    lc, sy = _centred_gram(b, sigma_y)
    n2 = float(len(a)) ** 2
    # tr(K H L H) = sum((HKH) * L) = sum((HKH) * (HLH)) because H is idempotent and symmetric.
    parts = (float((kc * lc).sum()) / n2, float((kc * kc).sum()) / n2, float((lc * lc).sum()) / n2)
    params = {"sigma_x": sx, "sigma_y": sy, "n": len(a), "d_x": a.shape[1], "d_y": b.shape[1]}
    return (*parts, params)


def hsic(x: Any, y: Any, sigma_x: float | None = None, sigma_y: float | None = None) -> float:
    """Biased HSIC estimate (1/n^2) tr(K H L H) with Gaussian kernels (Gretton et al. 2005).

    ``sigma_x`` / ``sigma_y`` default to the median heuristic. Gretton et al. normalise by
    (n-1)^2 instead of n^2; the difference vanishes for large n and cancels in :func:`nhsic`.
    """
    return _hsic_parts(x, y, sigma_x, sigma_y)[0]


def nhsic(x: Any, y: Any, sigma_x: float | None = None, sigma_y: float | None = None) -> float:
    """Normalised HSIC in [0, 1]: HSIC(x,y) / sqrt(HSIC(x,x) HSIC(y,y)); 0 if either is constant."""
    xy, xx, yy, _ = _hsic_parts(x, y, sigma_x, sigma_y)
    if xx <= 0.0 or yy <= 0.0:
        return 0.0
    return float(xy / np.sqrt(xx * yy))


# -------------------------------------------------------------------------------------------- KSG


def _project(a: np.ndarray, dim: int | None, rng: np.random.Generator) -> np.ndarray:
    """Seeded Gaussian random projection to ``dim`` features when the variable has more."""
    if dim is None or a.shape[1] <= dim:
        return a
    r = rng.standard_normal((a.shape[1], dim)) / np.sqrt(dim)
    return a @ r


def _standardise(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance columns plus 1e-10-scale seeded jitter to break distance ties."""
    a = a - a.mean(0, keepdims=True)
    std = a.std(0, keepdims=True)
    a = a / np.where(std > 0, std, 1.0)
    return a + 1e-10 * rng.standard_normal(a.shape)


def _ksg(x: Any, y: Any, k: int, project_to: int | None, seed: int) -> tuple[float, dict[str, Any]]:
    """KSG estimator 1 and the parameters actually used (see :func:`ksg_mutual_information`)."""
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    if project_to is not None and (not isinstance(project_to, (int, np.integer)) or project_to < 1):
        raise ValueError(f"project_to must be None or a positive integer; got {project_to!r}")
    a, b = _paired(x, y, min_n=k + 1)
    n = len(a)
    rng = np.random.default_rng(seed)
    params: dict[str, Any] = {
        "k": int(k), "seed": seed, "n": n, "project_to": project_to,
        "d_x": a.shape[1], "d_y": b.shape[1],
    }
    a, b = _project(a, project_to, rng), _project(b, project_to, rng)
    params["d_x_used"], params["d_y_used"] = a.shape[1], b.shape[1]
    if params["d_x_used"] + params["d_y_used"] > 20:
        logger.warning("KSG in %d joint dimensions is strongly biased; set project_to <= 10",
                       params["d_x_used"] + params["d_y_used"])
    a, b = _standardise(a, rng), _standardise(b, rng)

    joint = np.hstack([a, b])
    # Distance (max-norm) to the k-th neighbour in the joint space; index 0 is the point itself.
    eps = cKDTree(joint).query(joint, k=k + 1, p=np.inf)[0][:, k]
    # Neighbours strictly closer than eps in each marginal space, excluding the point itself.
    radius = np.nextafter(eps, 0.0)
    n_x = cKDTree(a).query_ball_point(a, radius, p=np.inf, return_length=True) - 1
    n_y = cKDTree(b).query_ball_point(b, radius, p=np.inf, return_length=True) - 1
    mi = digamma(k) + digamma(n) - np.mean(digamma(n_x + 1) + digamma(n_y + 1))
    return float(mi), params


def ksg_mutual_information(
    x: Any, y: Any, k: int = 3, project_to: int | None = None, seed: int = 0
) -> float:
    """Mutual information I(x; y) in nats by KSG estimator 1 (Kraskov et al. 2004), max-norm.

    I = psi(k) + psi(n) - < psi(n_x + 1) + psi(n_y + 1) >, where n_x, n_y count the points strictly
    within the distance to the k-th joint neighbour in each marginal space. Columns are
    standardised and jittered at the 1e-10 scale (seeded) to break ties. With ``project_to``, each
    variable with more features is first mapped to ``project_to`` dims by a seeded Gaussian random
    projection (use <= 10; kNN MI is badly biased in high dimension). May be slightly negative for
    independent data.
    """
    return _ksg(x, y, k, project_to, seed)[0]


# --------------------------------------------------------------------------------------- registry


@DEPENDENCE.register("dcor", help="distance correlation squared (unbiased by default), Szekely et al. 2007/2014")
def _dcor_entry(x: Any, y: Any, unbiased: bool = True, squared: bool = True) -> DependenceResult:
    a, b = _paired(x, y, min_n=1)
    value = distance_correlation(a, b, unbiased=unbiased, squared=squared)
    params = {"unbiased": unbiased, "squared": squared, "n": len(a), "d_x": a.shape[1], "d_y": b.shape[1]}
    return DependenceResult(value, "dcor", params)


@DEPENDENCE.register("hsic", help="biased Gaussian-kernel HSIC, median-heuristic bandwidth, Gretton et al. 2005")
def _hsic_entry(x: Any, y: Any, sigma_x: float | None = None, sigma_y: float | None = None) -> DependenceResult:
    xy, _, _, params = _hsic_parts(x, y, sigma_x, sigma_y)
    return DependenceResult(xy, "hsic", params)


@DEPENDENCE.register("nhsic", help="normalised HSIC, HSIC(x,y)/sqrt(HSIC(x,x) HSIC(y,y)), in [0, 1]")
def _nhsic_entry(x: Any, y: Any, sigma_x: float | None = None, sigma_y: float | None = None) -> DependenceResult:
    xy, xx, yy, params = _hsic_parts(x, y, sigma_x, sigma_y)
    value = float(xy / np.sqrt(xx * yy)) if xx > 0 and yy > 0 else 0.0
    return DependenceResult(value, "nhsic", params)


@DEPENDENCE.register("ksg", help="KSG kNN mutual information in nats (Kraskov et al. 2004), optional projection")
def _ksg_entry(x: Any, y: Any, k: int = 3, project_to: int | None = None, seed: int = 0) -> DependenceResult:
    value, params = _ksg(x, y, k, project_to, seed)
    return DependenceResult(value, "ksg", params)
