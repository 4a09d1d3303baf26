"""Reconstruction-quality metrics for images recovered by an attacker.

Images are float arrays or torch tensors of shape [n, C, H, W] (an [n, H, W] array is read as
C = 1) with pixels in [0, 1]; inputs are clipped to [0, 1] before scoring. Every metric is
computed per image and returned as an array of length n.

* MSE and PSNR, ``10 log10(range^2 / MSE)``, via scikit-image; PSNR is ``inf`` for identical
  images.
* SSIM as defined by Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error
  visibility to structural similarity", IEEE TIP 13(4), 2004: Gaussian-weighted window
  (sigma 1.5, 11x11), population covariances, via ``skimage.metrics.structural_similarity``.
* ``match_batch`` re-orders a jointly reconstructed batch by Hungarian assignment, following
  ``order_batch`` / ``_compute_batch_order`` in breaching (Geiping et al., "Inverting Gradients
  -- How easy is it to break privacy in federated learning?", NeurIPS 2020; breaching repository,
  github.com/JonasGeiping/breaching). breaching matches on LPIPS; we use pixel MSE, which needs no
  pretrained weights.
* ``identifiability`` is the image identifiability precision (IIP) of breaching (Geiping et al.;
  also Yin et al., "See through Gradients", CVPR 2021): the fraction of reconstructions whose
  nearest truth image, here under pixel MSE, is their own source.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from ._arrays import to_numpy

__all__ = ["mse", "psnr", "ssim", "match_batch", "identifiability", "image_report", "SSIM_SIGMA"]

logger = logging.getLogger(__name__)

#: Gaussian window width of Wang et al. (2004); with skimage's truncate=3.5 this is an 11x11 window.
SSIM_SIGMA = 1.5
_SSIM_WIN = 11


def _as_images(x: Any, name: str) -> np.ndarray:
    """``x`` as a clipped float64 array [n, C, H, W]."""
    arr = to_numpy(x)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must be images [n, C, H, W] (or [n, H, W]); got shape {arr.shape}")
    return np.clip(arr, 0.0, 1.0)


def _pair(recon: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both batches as images of identical shape; ValueError naming both shapes otherwise."""
    r, t = _as_images(recon, "recon"), _as_images(truth, "truth")
    if r.shape != t.shape:
        raise ValueError(
            f"recon and truth must have the same shape [n, C, H, W]; got recon {r.shape} "
            f"and truth {t.shape}"
        )
    return r, t


def mse(recon: Any, truth: Any) -> np.ndarray:
    """Per-image mean squared error on [0, 1] pixels (lower = closer reconstruction)."""
    r, t = _pair(recon, truth)
    return np.array([mean_squared_error(ti, ri) for ri, ti in zip(r, t)], dtype=np.float64)


def psnr(recon: Any, truth: Any, data_range: float = 1.0) -> np.ndarray:
    """Per-image PSNR in dB, ``10 log10(data_range^2 / MSE)``; ``inf`` where MSE is 0."""
    if data_range <= 0:
        raise ValueError(f"data_range must be positive; got {data_range}")
    r, t = _pair(recon, truth)
    out = np.empty(len(r), dtype=np.float64)
    for i, (ri, ti) in enumerate(zip(r, t)):
        if mean_squared_error(ti, ri) == 0.0:
            out[i] = np.inf  # skimage would divide by zero with a RuntimeWarning
        else:
            out[i] = peak_signal_noise_ratio(ti, ri, data_range=data_range)
    return out


def _ssim_win_size(height: int, width: int) -> int:
    """The 11-pixel window of Wang et al., or the largest odd size that fits a smaller image.

    With ``gaussian_weights=True`` scikit-image always filters with the sigma-1.5 Gaussian
    (reflect padding); ``win_size`` only sets how many border pixels are cropped before averaging
    and must not exceed the image. Images narrower than 11 pixels (e.g. 8x8 digits) therefore get
    the largest odd window that fits, so the score is averaged over the whole (small) image.
    """
    side = min(height, width)
    if side >= _SSIM_WIN:
        return _SSIM_WIN
    win = side if side % 2 == 1 else side - 1
    return max(win, 1)


def ssim(recon: Any, truth: Any, data_range: float = 1.0) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004): Gaussian window sigma 1.5, population covariance.

    Multi-channel images are scored per channel and averaged (``channel_axis``). See
    :func:`_ssim_win_size` for images smaller than 11x11.
    """
    if data_range <= 0:
        raise ValueError(f"data_range must be positive; got {data_range}")
    r, t = _pair(recon, truth)
    _, channels, height, width = r.shape
    win = _ssim_win_size(height, width)
    if win != _SSIM_WIN:
        logger.debug("SSIM on %dx%d images: border-crop window reduced to %d", height, width, win)
    kwargs: dict[str, Any] = dict(
        data_range=data_range,
        gaussian_weights=True,
        sigma=SSIM_SIGMA,
        use_sample_covariance=False,
        win_size=win,
    )
    out = np.empty(len(r), dtype=np.float64)
    for i, (ri, ti) in enumerate(zip(r, t)):
        if channels == 1:
            out[i] = structural_similarity(ti[0], ri[0], **kwargs)
        else:
            out[i] = structural_similarity(ti, ri, channel_axis=0, **kwargs)
    return out


def _pairwise_mse(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Matrix [n_recon, n_truth] of pixel MSE between every reconstruction and every truth image."""
    a = recon.reshape(len(recon), -1)
    b = truth.reshape(len(truth), -1)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0) / a.shape[1]


def match_batch(recon: Any, truth: Any) -> np.ndarray:
    """Permutation ``perm`` such that ``recon[perm[k]]`` is the best match of ``truth[k]``.

    Minimises the total pixel MSE with the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``), as breaching's ``order_batch`` does with LPIPS.
    ``recon`` may hold more images than ``truth``; surplus reconstructions stay unmatched.
    """
    r, t = _as_images(recon, "recon"), _as_images(truth, "truth")
    if r.shape[1:] != t.shape[1:]:
        raise ValueError(
            f"recon and truth must have the same image shape [C, H, W]; got recon {r.shape} "
            f"and truth {t.shape}"
        )
    if len(r) < len(t):
        raise ValueError(f"need at least as many reconstructions ({len(r)}) as truth images ({len(t)})")
    cost = _pairwise_mse(r, t).T  # [n_truth, n_recon]
    truth_idx, recon_idx = linear_sum_assignment(cost)
    perm = np.empty(len(t), dtype=np.int64)
    perm[truth_idx] = recon_idx
    return perm


def identifiability(recon: Any, truth: Any) -> float:
    """Fraction of reconstructions whose nearest truth image (pixel MSE) is their own source.

    ``recon[i]`` is the reconstruction of ``truth[i]``; apply :func:`match_batch` first when the
    order of a jointly reconstructed batch is unknown. Chance level is ``1 / n``. Ties are
    resolved towards the lower index, so a reconstruction equidistant from several images only
    counts if its source comes first.
    """
    r, t = _pair(recon, truth)
    nearest = np.argmin(_pairwise_mse(r, t), axis=1)
    return float(np.mean(nearest == np.arange(len(r))))


def image_report(recon: Any, truth: Any, data_range: float = 1.0) -> dict[str, np.ndarray]:
    """Per-image ``mse``, ``psnr`` and ``ssim`` in one dict."""
    return {
        "mse": mse(recon, truth),
        "psnr": psnr(recon, truth, data_range=data_range),
        "ssim": ssim(recon, truth, data_range=data_range),
    }
