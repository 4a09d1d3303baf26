"""The warm-up that estimates the bound constants, and the constants a config plans from.

:func:`estimate_bound` trains a few rounds and measures per-block gradient variance and second
moments with per-sample gradients; :func:`bound_for` loads ``optimizer.bound_file`` or warms up,
then calibrates to the target accuracy (:mod:`hasfl_sec.planning.calibrate`)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..config import ExperimentConfig, TrainConfig
from ..data.datasets import ImageDataset
from ..errors import ConfigError, check
from ..models import SplitModel
from ..seeding import torch_generator
from ..sfl.plan import Plan
from ..sfl.trainer import SFLTrainer
from .bound import BoundConstants
from .calibrate import calibrate_bound, default_pilots

__all__ = ["estimate_bound", "per_block_gradient_stats", "bound_for"]

logger = logging.getLogger(__name__)


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


def bound_for(cfg: ExperimentConfig, model: SplitModel, dataset: ImageDataset, parts: Sequence[np.ndarray],
              device: torch.device) -> BoundConstants:
    """The bound constants of a config: from ``optimizer.bound_file`` or a fresh warm-up."""
    o = cfg.optimizer
    if o.bound_file:
        bound = BoundConstants.load(o.bound_file)
        check(bound.num_devices == len(parts) and bound.num_blocks == model.num_blocks
              and bound.lr == cfg.train.lr and bound.interval == cfg.train.agg_interval, "optimizer.bound_file",
              o.bound_file, f"constants for {len(parts)} devices, a {model.num_blocks}-block model, "
              f"lr {cfg.train.lr} and I = {cfg.train.agg_interval}")
    else:
        bound = estimate_bound(model, dataset, parts, cfg.train, seed=cfg.seed, warmup_rounds=o.warmup_rounds,
                               probe_size=o.probe_size, warmup_batch=o.warmup_batch, beta_scale=o.beta_scale,
                               drift_const=o.drift_const, device=device)
    calibrated_for = ((bound.meta or {}).get("calibration") or {}).get("target_accuracy")
    if o.target_accuracy is not None and calibrated_for != o.target_accuracy:
        bound = calibrate_bound(bound, model, dataset, parts, cfg.train, seed=cfg.seed,
                                target_accuracy=o.target_accuracy, max_rounds=o.pilot_rounds,
                                pilots=default_pilots(model, o.b_max, cfg.train.agg_interval), device=device)
    return bound
