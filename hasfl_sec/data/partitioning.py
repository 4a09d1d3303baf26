"""The partition of a dataset's training indices across the devices of a fleet.

:func:`partition` splits the training indices among ``N`` devices with a scheme from
:data:`PARTITIONS`:

* ``iid`` -- a seeded random permutation cut into ``N`` near-equal parts;
* ``dirichlet`` -- label skew controlled by a concentration ``alpha`` (smaller is more skewed),
  following Hsu, Qi and Brown (2019), "Measuring the effects of non-identical data distribution
  for federated visual classification", arXiv:1909.06335. We use the common per-class form of
  that scheme: for each class, the proportions going to the ``N`` devices are drawn from
  ``Dir(alpha * 1_N)``. A draw that leaves a device below ``data.min_samples_per_device`` is
  redrawn; on a data set too small for that to succeed (the bundled LFW subset's 160 training
  images over 20 devices), the best of the draws is topped up by moving single samples from the
  largest device to the smallest, with a warning saying how many moved, rather than stopping.
  Only fewer samples than devices times the minimum is an error.

The module is not named ``partition`` on purpose: a submodule of that name would be shadowed by
the ``hasfl_sec.data.partition`` function the package exports (``tests/test_architecture.py``
checks that no package exports a name of one of its submodules).
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError
from ..registry import Registry
from ..seeding import numpy_rng

__all__ = ["PARTITIONS", "partition", "partition_summary", "DIRICHLET_RETRIES"]

logger = logging.getLogger(__name__)

Partitioner = Callable[..., list[np.ndarray]]
PARTITIONS: Registry[Partitioner] = Registry("partition scheme", "data.partition")

#: How many Dirichlet draws :func:`partition` tries before giving up on ``min_size``.
DIRICHLET_RETRIES = 100


def partition(labels: np.ndarray | torch.Tensor, num_devices: int, *, scheme: str = "iid", alpha: float = 0.5,
              seed: int = 0, min_size: int = 1) -> list[np.ndarray]:
    """Split the training set among ``num_devices`` devices.

    Args:
        labels: the ``[n]`` integer training labels.
        num_devices: number of devices N.
        scheme: a name in :data:`PARTITIONS` (``iid`` or ``dirichlet``).
        alpha: Dirichlet concentration (``dirichlet`` only); must be finite and > 0.
        seed: master seed; the same seed gives identical partitions.
        min_size: every device gets at least this many samples.

    Returns:
        One sorted int64 index array per device; together they hold every index once.

    Raises:
        ConfigError: bad scheme, ``num_devices``, ``alpha`` or ``min_size``, or fewer samples
            than ``num_devices * min_size``.
    """
    fn = PARTITIONS.get(scheme)
    y = _labels_array(labels)
    n = len(y)
    if isinstance(num_devices, bool) or not isinstance(num_devices, (int, np.integer)) or num_devices < 1:
        raise ConfigError("fleet.num_devices", num_devices, "an integer >= 1")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ConfigError("data.min_samples_per_device", min_size, "an integer >= 1")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError("data.alpha", alpha, "a finite number > 0")
    if num_devices * min_size > n:
        raise ConfigError("fleet.num_devices", num_devices, f"at most {n // min_size} devices",
                          f"{n} training samples cannot give {num_devices} devices {min_size} samples each; "
                          "lower data.min_samples_per_device or use fewer devices")
    parts = fn(y, int(num_devices), alpha=float(alpha), seed=int(seed), min_size=int(min_size))
    sizes = [len(p) for p in parts]
    logger.info("partition %s over %d devices: samples per device min %d / median %d / max %d",
                scheme, num_devices, min(sizes), int(np.median(sizes)), max(sizes))
    return parts


def _labels_array(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise ValueError(f"labels must be a 1-D integer array, got {y.dtype} array of shape {y.shape}")
    return y.astype(np.int64, copy=False)


@PARTITIONS.register("iid", help="uniform random split into near-equal parts (no label skew)")
def partition_iid(labels: np.ndarray, num_devices: int, *, alpha: float, seed: int, min_size: int) -> list[np.ndarray]:
    """A seeded permutation of all indices cut into ``num_devices`` near-equal parts."""
    perm = numpy_rng(seed, "partition", "iid").permutation(len(labels))
    return [np.sort(part).astype(np.int64) for part in np.array_split(perm, num_devices)]


@PARTITIONS.register("dirichlet",
                     help="label skew: class shares ~ Dir(alpha) over devices (Hsu et al. 2019); small alpha = skewed")
def partition_dirichlet(labels: np.ndarray, num_devices: int, *, alpha: float, seed: int,
                        min_size: int) -> list[np.ndarray]:
    """Per class, split its shuffled indices by proportions ~ Dir(alpha * ones(N)); redraw (with a
    fresh derived seed) until every device has ``min_size`` samples. If no draw in
    :data:`DIRICHLET_RETRIES` does (a small data set over many devices), the draw whose smallest
    device is largest is repaired (:func:`_top_up`) and a warning says how many samples moved."""
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    best: list[np.ndarray] = []
    for attempt in range(DIRICHLET_RETRIES):
        rng = numpy_rng(seed, "partition", "dirichlet", attempt)
        buckets: list[list[np.ndarray]] = [[] for _ in range(num_devices)]
        for idx in by_class:
            idx = rng.permutation(idx)
            shares = np.nan_to_num(rng.dirichlet(np.full(num_devices, alpha)))  # old numpy: NaN at tiny alpha
            cuts = np.minimum((np.cumsum(shares)[:-1] * len(idx)).astype(np.int64), len(idx))
            for device, chunk in enumerate(np.split(idx, cuts)):
                buckets[device].append(chunk)
        parts = [np.sort(np.concatenate(b)).astype(np.int64) for b in buckets]
        smallest = min(len(p) for p in parts)
        if smallest >= min_size:
            if attempt:
                logger.debug("dirichlet partition met min_size=%d on draw %d", min_size, attempt + 1)
            return parts
        if not best or smallest > min(len(p) for p in best):
            best = parts
    before = min(len(p) for p in best)
    parts, moved = _top_up(labels, best, min_size)
    logger.warning("dirichlet partition (alpha %g): no draw in %d gave each of %d devices %d samples (at best %d); "
                   "moved %d samples, one at a time, from the largest device (its most common class) to the "
                   "smallest, so every device has %d. The label skew of the draw is otherwise kept.", alpha,
                   DIRICHLET_RETRIES, num_devices, min_size, before, moved, min_size)
    return parts


def _top_up(labels: np.ndarray, parts: list[np.ndarray], min_size: int) -> tuple[list[np.ndarray], int]:
    """Move samples until every part has ``min_size``: each move takes the largest part's (first on
    ties) most common class's last index and gives it to the smallest part (first on ties), so the
    label skew changes as little as one sample at a time allows. Deterministic; needs
    ``sum(sizes) >= len(parts) * min_size``."""
    parts = [list(p) for p in parts]
    moved = 0
    while True:
        sizes = [len(p) for p in parts]
        small = int(np.argmin(sizes))
        if sizes[small] >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts], moved
        big = int(np.argmax(sizes))
        counts = np.bincount(labels[parts[big]])
        majority = int(np.argmax(counts))
        pick = max(i for i in parts[big] if labels[i] == majority)
        parts[big].remove(pick)
        parts[small].append(pick)
        moved += 1


def partition_summary(labels: np.ndarray | torch.Tensor, parts: list[np.ndarray], num_classes: int) -> pd.DataFrame:
    """One row per device: ``device``, ``n_samples`` and ``class_<k>`` counts for every class."""
    y = _labels_array(labels)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    counts = np.zeros((len(parts), num_classes), dtype=np.int64)
    for device, part in enumerate(parts):
        counts[device] = np.bincount(y[part], minlength=num_classes)
    frame = pd.DataFrame(counts, columns=[f"class_{k}" for k in range(num_classes)])
    frame.insert(0, "n_samples", [len(p) for p in parts])
    frame.insert(0, "device", np.arange(len(parts)))
    return frame
