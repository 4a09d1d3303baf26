"""Constants of HASFL's convergence bound, estimated from a short warm-up (docs/hasfl.md section 3).

Theorem 1 of HASFL (Lin et al., arXiv 2506.08426; docs/hasfl.md 3.2) bounds the averaged squared
gradient norm after R rounds by::

    2 theta / (gamma R)
    + (beta gamma / N^2) sum_i (sum_j sigma_j^2) / b_i
    + 1{I > 1} C beta^2 gamma^2 I^2 sum_{j <= L_c} G_j^2

so reaching a target epsilon takes (Corollary 1)::

    R(b, L_c) = 2 theta / (gamma [eps - (beta gamma / N^2) sum_i S / b_i - 1{I>1} C beta^2 gamma^2 I^2 sum_{j<=L_c} G_j^2])

with S = sum_j sigma_j^2, feasible only while the bracket is positive. Layers j are the model's
blocks (cut c keeps blocks 1..c on the device), so ``sigma2[j-1]`` and ``G2[j-1]`` belong to block j.

Estimators (our choices; the paper's procedure could not be read):

* ``sigma_j^2`` -- per-sample gradient variance of block j, E||g_s,j - g_j||^2 over a fixed probe
  set, computed with ``torch.func`` (vmap of grad) -- and ``G_j^2`` = E||g_s,j||^2. Both are the
  maximum over the warm-up checkpoints (they are bounds in Assumption 2).
* ``theta`` = f(w^0) - f_low with f_low = 0, the lower bound of cross-entropy.
* ``beta`` -- the largest secant estimate ||g(w_{t+1}) - g(w_t)|| / ||w_{t+1} - w_t|| of the
  probe-set gradient along the warm-up trajectory, times ``beta_scale`` (default 1).
* ``C`` = 4, the local-SGD drift constant (docs/hasfl.md reads the garbled coefficient as 4).
* ``grad_norm0`` = ||g(w^0)||^2 on the probe set: targets are given relative to it
  (``epsilon = target_ratio * grad_norm0``), which is easier to choose than an absolute epsilon.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..results import atomic_write_text

__all__ = ["BoundConstants"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoundConstants:
    """The constants of Theorem 1 for one model, data set, learning rate, N and I.

    Attributes:
        sigma2: per-block per-sample gradient variance sigma_j^2 (j = 1..L).
        G2: per-block per-sample gradient second moment G_j^2.
        theta: initial optimality gap f(w^0) - f*.
        beta: smoothness constant.
        grad_norm0: squared norm of the probe-set gradient at w^0 (reference for targets).
        lr: learning rate gamma.
        num_devices: N.
        interval: aggregation interval I.
        drift_const: C in the drift term.
        variance_scale, drift_scale: calibration multipliers of the variance and drift terms
            (1 = Theorem 1 as estimated; see :mod:`hasfl_sec.planning.calibrate`).
        epsilon_calibrated: the epsilon that corresponds to the calibration's target accuracy,
            or None for uncalibrated constants.
        meta: how the constants were estimated (free-form, for the record).
    """

    sigma2: tuple[float, ...]
    G2: tuple[float, ...]
    theta: float
    beta: float
    grad_norm0: float
    lr: float
    num_devices: int
    interval: int
    drift_const: float = 4.0
    variance_scale: float = 1.0
    drift_scale: float = 1.0
    epsilon_calibrated: float | None = None
    meta: dict[str, Any] | None = None

    @property
    def num_blocks(self) -> int:
        """L, the number of layers (blocks) the constants cover."""
        return len(self.sigma2)

    @property
    def variance_coeff(self) -> float:
        """k = beta gamma sum_j sigma_j^2 / N^2, so the variance term is k sum_i 1/b_i."""
        return self.variance_scale * self.beta * self.lr * float(sum(self.sigma2)) / self.num_devices**2

    def drift(self, deepest_cut: int) -> float:
        """1{I>1} C beta^2 gamma^2 I^2 sum_{j <= L_c} G_j^2."""
        if self.interval <= 1:
            return 0.0
        return (self.drift_scale * self.drift_const * (self.beta * self.lr * self.interval) ** 2
                * float(sum(self.G2[:deepest_cut])))

    def epsilon(self, target_ratio: float) -> float:
        """The absolute target epsilon for a target given relative to ||g(w^0)||^2."""
        return float(target_ratio) * self.grad_norm0

    def margin(self, batch_sizes: Sequence[float], deepest_cut: int, epsilon: float,
               multipliers: Sequence[float] | None = None) -> float:
        """The bracket of Corollary 1; R is finite only where it is positive.

        ``multipliers`` m_i scale each device's variance term (smashed-data noise adds variance,
        :mod:`hasfl_sec.privacy.noise_cost`): the term is variance_coeff * sum_i m_i / b_i.
        """
        b = np.asarray(batch_sizes, dtype=np.float64)
        m = np.ones_like(b) if multipliers is None else np.asarray(multipliers, dtype=np.float64)
        inv = float(np.sum(m / b))
        return epsilon - self.variance_coeff * inv - self.drift(deepest_cut)

    def rounds(self, batch_sizes: Sequence[float], deepest_cut: int, epsilon: float,
               multipliers: Sequence[float] | None = None) -> float:
        """Predicted rounds R to reach ``epsilon`` (``inf`` when the plan cannot reach it)."""
        m = self.margin(batch_sizes, deepest_cut, epsilon, multipliers)
        return 2.0 * self.theta / (self.lr * m) if m > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the constants as JSON (atomically)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BoundConstants":
        """Read constants written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError("optimizer.bound_file", str(path), "a JSON file written by hasfl-sec optimize")
        try:
            values = json.loads(path.read_text())
            values["sigma2"] = tuple(float(v) for v in values["sigma2"])
            values["G2"] = tuple(float(v) for v in values["G2"])
            for key in ("theta", "beta", "grad_norm0", "lr", "drift_const", "variance_scale", "drift_scale"):
                if key in values:
                    values[key] = float(values[key])
            values["num_devices"], values["interval"] = int(values["num_devices"]), int(values["interval"])
            if not isinstance(values.get("meta") or {}, dict):
                raise TypeError("meta must be a mapping")
            return cls(**values)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError("optimizer.bound_file", str(path), "a bound JSON written by hasfl-sec optimize",
                              str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


