"""Constants of HASFL's convergence bound, estimated from a short warm-up (HASFL.md section 3).

Theorem 1 of HASFL (Lin et al., arXiv 2506.08426; HASFL.md 3.2) bounds the averaged squared
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
* ``C`` = 4, the local-SGD drift constant (HASFL.md reads the garbled coefficient as 4).
* ``grad_norm0`` = ||g(w^0)||^2 on the probe set: targets are given relative to it
  (``epsilon = target_ratio * grad_norm0``), which is easier to choose than an absolute epsilon.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .config import TrainConfig
from .datasets import ImageDataset
from .errors import ConfigError
from .models import SplitModel
from .plan import Plan
from .results import atomic_write_text
from .seeding import torch_generator

__all__ = ["BoundConstants", "estimate_bound", "per_block_gradient_stats"]

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
            (1 = Theorem 1 as estimated; see :mod:`hasfl_sec.calibrate`).
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


def _block_of_param(model: SplitModel) -> dict[str, int]:
    """Parameter name (as in ``model.named_parameters()``) -> block index."""
    out = {}
    for j, block in enumerate(model.blocks):
        for name, _ in block.named_parameters():
            out[f"blocks.{j}.{name}"] = j
    return out


def per_block_gradient_stats(model: SplitModel, x: torch.Tensor, y: torch.Tensor,
                             chunk: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per-block sigma_j^2 and G_j^2 from per-sample gradients, plus the mean gradient and loss.

    Per-sample gradients come from ``torch.func.vmap(grad(...))``; ``chunk`` bounds memory.
    Returns ``(sigma2[L], G2[L], mean_grad_flat, mean_loss)``.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    block_of = _block_of_param(model)
    L = model.num_blocks

    def loss_fn(p: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xs.unsqueeze(0),))
        return F.cross_entropy(out, ys.unsqueeze(0))

    per_sample = vmap(grad(loss_fn), in_dims=(None, 0, 0))
    n = len(y)
    sq = np.zeros(L)
    sums = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, n, chunk):
        g = per_sample(params, x[start:start + chunk], y[start:start + chunk])
        for k, v in g.items():
            sq[block_of[k]] += float(v.pow(2).sum())
            sums[k] += v.sum(0)
    with torch.no_grad():
        loss = float(F.cross_entropy(model(x), y))
    mean = {k: s / n for k, s in sums.items()}
    G2 = sq / n
    mean_sq = np.zeros(L)
    for k, m in mean.items():
        mean_sq[block_of[k]] += float(m.pow(2).sum())
    sigma2 = np.maximum(G2 - mean_sq, 0.0)  # E||g_s - g||^2 = E||g_s||^2 - ||g||^2
    flat = torch.cat([mean[k].flatten() for k in params])
    return sigma2, G2, flat.numpy(force=True), loss


def _flat_params(model: nn.Module) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).numpy(force=True)


def estimate_bound(
    model: SplitModel,
    dataset: ImageDataset,
    parts: Sequence[np.ndarray],
    train: TrainConfig,
    *,
    seed: int,
    warmup_rounds: int = 5,
    probe_size: int = 256,
    warmup_batch: int = 16,
    beta_scale: float = 1.0,
    drift_const: float = 4.0,
    device: torch.device | str = "cpu",
) -> BoundConstants:
    """Estimate :class:`BoundConstants` from ``warmup_rounds`` rounds of real SFL training.

    The warm-up trains a copy of ``model`` under a uniform plan (``warmup_batch`` samples per
    device, cut 1) with the run's learning rate and interval; after every round the global model
    is measured on a fixed, seeded probe set of ``probe_size`` training samples.
    """
    from .trainer import SFLTrainer  # the trainer is only needed for the warm-up

    if warmup_rounds < 1:
        raise ConfigError("optimizer.warmup_rounds", warmup_rounds, "an integer >= 1")
    if probe_size < 2:
        raise ConfigError("optimizer.probe_size", probe_size, "an integer >= 2")
    n = len(parts)
    gen = torch_generator(seed, "bound-probe")
    probe = torch.randperm(len(dataset.y_train), generator=gen)[:probe_size]
    x = dataset.x_train[probe].to(device)
    y = dataset.y_train[probe].to(device)
    plan = Plan(tuple([warmup_batch] * n), tuple([1] * n), strategy="warm-up")
    warm_cfg = dataclasses.replace(train, rounds=warmup_rounds, eval_every=warmup_rounds + 1)
    trainer = SFLTrainer(model, dataset, parts, plan, warm_cfg, seed=seed, clock=lambda t, plan: 0.0, device=device)

    def measure() -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
        # eval mode: dropout would make per-sample gradients random (and vmap refuses randomness)
        g_model = copy.deepcopy(model).to(device).eval()
        g_model.load_state_dict(_global_state(trainer))
        s2, g2, g, loss = per_block_gradient_stats(g_model, x, y)
        return s2, g2, g, loss, _flat_params(g_model)

    s2, g2, g, loss0, w = measure()
    sigma2, G2, grad0 = s2, g2, g
    betas = []
    for _ in range(warmup_rounds):
        trainer.step()
        s2, g2, g_new, _, w_new = measure()
        sigma2, G2 = np.maximum(sigma2, s2), np.maximum(G2, g2)
        dw = float(np.linalg.norm(w_new - w))
        if dw > 0:
            betas.append(float(np.linalg.norm(g_new - g)) / dw)
        g, w = g_new, w_new
    if not betas:
        raise ConfigError("train.lr", train.lr, "a learning rate that moves the model during warm-up")
    bound = BoundConstants(
        sigma2=tuple(float(v) for v in sigma2), G2=tuple(float(v) for v in G2), theta=float(loss0),
        beta=max(betas) * beta_scale, grad_norm0=float(np.dot(grad0, grad0)), lr=train.lr, num_devices=n,
        interval=train.agg_interval, drift_const=drift_const,
        meta={"warmup_rounds": warmup_rounds, "probe_size": probe_size, "warmup_batch": warmup_batch,
              "beta_scale": beta_scale, "beta_secants": betas, "seed": seed},
    )
    logger.info("bound: theta %.3g, beta %.3g, sum sigma^2 %.3g, sum G^2 %.3g, ||g0||^2 %.3g",
                bound.theta, bound.beta, sum(bound.sigma2), sum(bound.G2), bound.grad_norm0)
    return bound


def _global_state(trainer: Any) -> dict[str, torch.Tensor]:
    """The trainer's aggregated model as a state dict of ``model`` (same block order)."""
    seq = trainer.global_model()
    return {f"blocks.{k}": v for k, v in seq.state_dict().items()}
