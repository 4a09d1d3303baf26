"""Calibrating the convergence bound against short pilot trainings (our method; documented choice).

Theorem 1 estimated literally (:func:`hasfl_sec.planning.warmup.estimate_bound`) is a worst-case bound: on
real models its drift term 1{I>1} C beta^2 gamma^2 I^2 sum G_j^2 is thousands of times larger
than its variance term, so the optimizer would choose by the bound's slack, not by how training
behaves. docs/hasfl.md section 7 notes that the HASFL group tunes such constants so that predictions
match observed curves; we do this explicitly and reproducibly.

The bound's structure is kept: with H = (1/N) sum_i 1/b_i and the measured cumulative second
moment share G(L_c) = sum_{j<=L_c} G_j^2 / sum_j G_j^2, Corollary 1 reads

    1 / R = a0 - a1 H - a2 G(L_c)        (a0, a1, a2 >= 0; a2 = 0 when I = 1)

which is linear in (a0, a1, a2). Each pilot trains a uniform plan (batch b, deepest cut L_c)
with the run's data, model, learning rate and interval until the test accuracy first reaches the
target; its round count gives one equation. Non-negative least squares (scipy ``nnls``) fits the
coefficients, which are written back into :class:`BoundConstants` as the multipliers
``variance_scale`` and ``drift_scale`` and the target ``epsilon_calibrated`` (so that
``bound.rounds(b, L_c, epsilon_calibrated)`` reproduces the fit), leaving the estimated sigma_j^2,
G_j^2, theta, beta untouched for the record.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import nnls

from ..config import TrainConfig
from ..data.datasets import ImageDataset
from ..errors import ConfigError
from ..models import SplitModel
from ..sfl.plan import Plan
from ..sfl.trainer import SFLTrainer
from .bound import BoundConstants

__all__ = ["pilot_rounds", "calibrate_bound", "fit_calibration", "default_pilots"]

logger = logging.getLogger(__name__)


def pilot_rounds(model: SplitModel, dataset: ImageDataset, parts: Sequence[np.ndarray], train: TrainConfig,
                 plan: Plan, *, seed: int, target_accuracy: float, max_rounds: int, eval_every: int = 1,
                 device: torch.device | str = "cpu") -> float:
    """Rounds until the aggregated model's test accuracy first reaches the target (inf if never)."""
    cfg = dataclasses.replace(train, rounds=max_rounds, eval_every=eval_every)
    trainer = SFLTrainer(model, dataset, parts, plan, cfg, seed=seed, clock=lambda t, plan: 0.0, device=device)
    while trainer.round < max_rounds:
        record = trainer.step()
        if record.test_accuracy >= target_accuracy:  # NaN on rounds without evaluation compares False
            return float(record.round)
    return math.inf


def default_pilots(model: SplitModel, b_max: int, interval: int) -> list[tuple[int, int]]:
    """(batch size, deepest cut) of the pilots: three batch sizes at the shallowest cut, and one
    batch size at a middle and at the deepest cut (only when I > 1: with I = 1 the cut does not
    enter the bound), so every coefficient is identified. Duplicates are dropped."""
    small, large = max(1, min(4, b_max)), max(1, min(32, b_max))
    mid = max(1, min(12, b_max))
    if len({small, mid, large}) < 2:
        raise ConfigError("optimizer.b_max", b_max, "at least 2", "the calibration needs two different batch sizes")
    deep = model.num_blocks - 1
    pilots = [(small, 1), (large, 1), (mid, 1)]
    if interval > 1:
        pilots += [(mid, max(1, deep // 2)), (mid, deep)]
    return list(dict.fromkeys(pilots))


def calibrate_bound(bound: BoundConstants, model: SplitModel, dataset: ImageDataset, parts: Sequence[np.ndarray],
                    train: TrainConfig, *, seed: int, target_accuracy: float, max_rounds: int,
                    pilots: Sequence[tuple[int, int]], device: torch.device | str = "cpu") -> BoundConstants:
    """Run the pilots and fit the bound's three coefficients to them (:func:`fit_calibration`)."""
    n = len(parts)
    observed = []
    for b, cut in pilots:
        plan = Plan((b,) * n, (cut,) * n, strategy="pilot")
        r = pilot_rounds(model, dataset, parts, train, plan, seed=seed, target_accuracy=target_accuracy,
                         max_rounds=max_rounds, device=device)
        logger.info("calibration pilot b=%d L_c=%d: %s rounds to accuracy %.3f", b, cut, r, target_accuracy)
        if not math.isfinite(r):
            raise ConfigError("optimizer.target_accuracy", target_accuracy,
                              f"an accuracy the pilot plans reach within optimizer.pilot_rounds={max_rounds}",
                              f"the pilot with batch {b} and cut {cut} did not; lower the target or raise pilot_rounds")
        observed.append((b, cut, r))
    return fit_calibration(bound, observed, target_accuracy=target_accuracy, max_rounds=max_rounds)


def fit_calibration(bound: BoundConstants, observed: Sequence[tuple[int, int, float]], *,
                    target_accuracy: float, max_rounds: int) -> BoundConstants:
    """Constants whose Corollary 1 reproduces 1/R = a0 - a1 H - a2 G(L_c) fitted to ``observed``
    (batch size, deepest cut, rounds) triples of uniform pilot plans."""
    n = bound.num_devices
    g2 = np.asarray(bound.G2, dtype=np.float64)
    share = np.cumsum(g2) / g2.sum() if g2.sum() > 0 else np.zeros_like(g2)
    matrix = np.asarray([[1.0, -1.0 / b, -share[cut - 1] if bound.interval > 1 else 0.0] for b, cut, _ in observed])
    y = np.array([1.0 / r for _, _, r in observed])
    (a0, a1, a2), residual = nnls(matrix, y)
    scale = 2.0 * bound.theta / bound.lr  # Corollary 1: R = (2 theta / gamma) / bracket
    raw = dataclasses.replace(bound, variance_scale=1.0, drift_scale=1.0)
    var_raw = raw.variance_coeff * n  # the variance term is variance_coeff * sum_i 1/b_i = (.. * N) * H
    drift_raw = raw.drift(bound.num_blocks)  # the drift at the full share G = 1 (0 when I = 1)
    calibrated = dataclasses.replace(
        bound,
        variance_scale=(a1 * scale / var_raw) if var_raw > 0 else 0.0,
        drift_scale=(a2 * scale / drift_raw) if drift_raw > 0 else 0.0,
        epsilon_calibrated=a0 * scale,
        meta={**(bound.meta or {}), "calibration": {
            "target_accuracy": target_accuracy, "max_rounds": max_rounds,
            "pilots": [{"batch_size": b, "deepest_cut": c, "rounds": r} for b, c, r in observed],
            "coefficients": {"a0": a0, "a1": a1, "a2": a2}, "residual": residual}},
    )
    fitted = [calibrated.rounds([b] * n, c, a0 * scale) for b, c, _ in observed]
    logger.info("calibration fit: a0=%.4g a1=%.4g a2=%.4g; observed %s, fitted %s", a0, a1, a2,
                [r for _, _, r in observed], [round(f, 1) for f in fitted])
    return calibrated
