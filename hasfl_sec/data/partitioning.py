"""The partition of a dataset's training indices across the devices of a fleet.

:func:`partition` splits the training indices among ``N`` devices with a scheme from
:data:`PARTITIONS`:

* ``iid`` -- a seeded random permutation cut into ``N`` near-equal parts;
* ``dirichlet`` -- label skew controlled by a concentration ``alpha`` (smaller is more skewed),
  following Hsu, Qi and Brown (2019), "Measuring the effects of non-identical data distribution
  for federated visual classification", arXiv:1909.06335. We use the common per-class form of
  that scheme: for each class, the proportions going to the ``N`` devices are drawn from
  ``Dir(alpha * 1_N)``.

**Small data sets** (the rule that keeps a partition from dead-ending; docs/design.md, section 8):

1. ``data.min_samples_per_device`` is capped at what the data allows: with ``n`` training samples
   and ``N`` devices, ``min(min_size, n // N)``, with a warning when the cap bites. Only ``n < N``
   (not even one sample per device) is a :class:`~hasfl_sec.errors.ConfigError`.
2. A Dirichlet draw that leaves a device below the minimum is redrawn, up to
   :data:`DIRICHLET_RETRIES` times. Draws are seeded by ``(seed, draw number)``, so a partition
   whose draws met the minimum is exactly what it was before the repair existed.
3. If none of the draws meets it (the bundled LFW subset: 160 training images over 20 devices,
   8 each), the draw fewest samples short is repaired: exactly that many samples move, one at a
   time, from devices above the minimum to those below it, and each short device receives the
   classes its own Dirichlet shares asked for. A warning says how many moved.

Repairing rather than lowering the minimum further, or raising ``alpha``, is deliberate: the
skew the user asked for stays that of an actual Dir(alpha) draw except for the fewest samples
needed, and a repaired draw is still seeded and deterministic.

The module is not named ``partition`` on purpose: a submodule of that name would be shadowed by
the ``hasfl_sec.data.partition`` function the package exports (``tests/test_architecture.py``
checks that no package exports a name of one of its submodules).
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Iterator

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

#: How many Dirichlet draws :func:`partition` tries before repairing the closest one.
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
        min_size: every device gets at least this many samples (at most ``n // num_devices``).

    Returns:
        One sorted int64 index array per device; together they hold every index once.

    Raises:
        ConfigError: bad scheme, ``num_devices``, ``alpha`` or ``min_size``, or fewer samples
            than devices. Fewer samples than ``num_devices * min_size`` lowers ``min_size`` to
            ``n // num_devices``, with a warning.
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
    min_size = _feasible_min_size(n, int(num_devices), int(min_size))
    parts = fn(y, int(num_devices), alpha=float(alpha), seed=int(seed), min_size=min_size)
    sizes = [len(p) for p in parts]
    logger.info("partition %s over %d devices: samples per device min %d / median %d / max %d",
                scheme, num_devices, min(sizes), int(np.median(sizes)), max(sizes))
    return parts


def _feasible_min_size(n: int, num_devices: int, min_size: int) -> int:
    """``min_size``, or the most the data allows (``n // num_devices``, with a warning) when ``n``
    samples cannot give every device ``min_size``. Only fewer samples than devices is an error: then
    no minimum helps, so the error names the number of devices."""
    if n < num_devices:
        raise ConfigError("fleet.num_devices", num_devices, f"at most {n} devices",
                          f"{n} training samples cannot give {num_devices} devices even 1 sample each, "
                          "whatever data.min_samples_per_device is; use fewer devices or more data")
    if num_devices * min_size <= n:
        return min_size
    allowed = n // num_devices
    fewer = f", or use at most {n // min_size} devices," if n >= min_size else ""
    logger.warning("data.min_samples_per_device lowered from %d to %d: %d training samples cannot give %d devices "
                   "%d samples each (set it to at most %d%s to keep this quiet)",
                   min_size, allowed, n, num_devices, min_size, allowed, fewer)
    return allowed


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
    :data:`DIRICHLET_RETRIES` does (a small data set over many devices), the draw that is fewest
    samples short is repaired (:func:`_top_up`) and a warning says how many samples moved."""
    closest: tuple[list[np.ndarray], np.ndarray] | None = None
    fewest = 0
    for attempt, (parts, wanted) in enumerate(_dirichlet_draws(labels, num_devices, alpha, seed)):
        short = sum(max(0, min_size - len(p)) for p in parts)
        if not short:
            if attempt:
                logger.debug("dirichlet partition met min_size=%d on draw %d", min_size, attempt + 1)
            return parts
        if closest is None or short < fewest:  # first on ties: the earliest draw
            closest, fewest = (parts, wanted), short
    assert closest is not None
    parts, wanted = closest
    below = sum(len(p) < min_size for p in parts)
    repaired = _top_up(labels, parts, wanted, min_size)
    logger.warning("dirichlet partition of %d samples over %d devices (alpha %g) could not give every device %d "
                   "samples in %d draws; repaired the closest draw (%d devices below %d): moved %d samples to "
                   "them from devices above it, each short device getting the classes its own Dirichlet shares "
                   "asked for; every other sample stays where the draw put it.",
                   len(labels), num_devices, alpha, min_size, DIRICHLET_RETRIES, below, min_size, fewest)
    return repaired


def _dirichlet_draws(labels: np.ndarray, num_devices: int, alpha: float,
                     seed: int) -> Iterator[tuple[list[np.ndarray], np.ndarray]]:
    """The :data:`DIRICHLET_RETRIES` seeded draws, each as (one sorted index array per device,
    ``[N, K]`` expected per-class counts ``share * class size``: what the draw asked each device
    for, before rounding). Draw ``k`` uses the RNG derived from ``(seed, k)`` only, so a draw never
    depends on how many came before it."""
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for attempt in range(DIRICHLET_RETRIES):
        rng = numpy_rng(seed, "partition", "dirichlet", attempt)
        buckets: list[list[np.ndarray]] = [[] for _ in range(num_devices)]
        wanted = np.zeros((num_devices, len(by_class)))
        for k, idx in enumerate(by_class):
            idx = rng.permutation(idx)
            shares = np.nan_to_num(rng.dirichlet(np.full(num_devices, alpha)))  # old numpy: NaN at tiny alpha
            wanted[:, k] = shares * len(idx)
            cuts = np.minimum((np.cumsum(shares)[:-1] * len(idx)).astype(np.int64), len(idx))
            for device, chunk in enumerate(np.split(idx, cuts)):
                buckets[device].append(chunk)
        yield [np.sort(np.concatenate(b)).astype(np.int64) for b in buckets], wanted


def _top_up(labels: np.ndarray, parts: list[np.ndarray], wanted: np.ndarray, min_size: int) -> list[np.ndarray]:
    """Move samples, one at a time, until every part has ``min_size``; deterministic.

    Each move fills the smallest part (first on ties). Its class is the one furthest below that
    part's share of ``wanted`` (its label mix as the Dirichlet draw asked for it, a largest-remainder
    rule), so a short device keeps the skew it was drawn with; an empty device gets its drawn mix
    too. The sample comes from the part above ``min_size`` that holds most of that class (its
    largest index), so no part is pushed below the minimum. Exactly ``sum(max(0, min_size - size))``
    samples move; needs ``sum(sizes) >= len(parts) * min_size``.
    """
    classes = np.unique(labels)
    label_class = np.searchsorted(classes, labels)
    k = len(classes)
    # pools[d][c]: part d's indices of class c, ascending, so a move pops the largest
    pools = [[list(p[label_class[p] == c]) for c in range(k)] for p in parts]
    counts = np.array([[len(pool) for pool in part] for part in pools], dtype=np.int64).reshape(len(parts), k)
    target = wanted / np.maximum(wanted.sum(axis=1, keepdims=True), np.finfo(float).tiny)
    while True:
        sizes = counts.sum(axis=1)
        small = int(np.argmin(sizes))
        if sizes[small] >= min_size:
            return [np.sort(np.concatenate([np.asarray(pool, dtype=np.int64) for pool in part])) for part in pools]
        held = np.where((sizes > min_size)[:, None], counts, 0)  # what donors may give
        gap = target[small] * (sizes[small] + 1) - counts[small]
        # most-wanted class first; ties to the class donors hold most of, then the lower class
        order = np.lexsort((np.arange(k), -held.sum(axis=0), -gap))
        c = next(int(c) for c in order if held[:, c].any())
        big = int(np.argmax(held[:, c]))
        pools[small][c].append(pools[big][c].pop())
        counts[big, c] -= 1
        counts[small, c] += 1


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
