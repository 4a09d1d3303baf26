"""Opacus plumbing for the DP-SGD defense (:mod:`hasfl_sec.defenses.dpsgd`).

* :func:`make_private_compatible` -- validate a model with Opacus' ``ModuleValidator`` and
  ``GradSampleModule.validate`` and fix what can be fixed (BatchNorm -> GroupNorm).
* :class:`PerSampleWindow` -- Opacus' per-sample-gradient hooks on a client part for one
  forward/backward/step only.
* Accounting helpers over Opacus' accountants (RDP: Mironov 2017 and Mironov, Talwar & Zhang
  2019's sampled Gaussian mechanism; PRV: Gopi, Lee & Wutschitz 2021; GDP: Dong, Roth & Su
  2019): :func:`dp_sgd_epsilon`, :func:`rdp_epsilon_floor`, :func:`solve_noise_multiplier`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["make_private_compatible", "PerSampleWindow", "make_accountant", "accountant_epsilon",
           "dp_sgd_epsilon", "rdp_epsilon_floor", "history_steps", "solve_noise_multiplier", "MAX_SIGMA"]

logger = logging.getLogger(__name__)

MAX_SIGMA = 1e6  # Opacus' own search limit (opacus.accountants.utils.MAX_SIGMA)


def _opacus_errors(model: nn.Module) -> list[str]:
    """What stops Opacus from computing per-sample gradients for ``model`` (first sentence each)."""
    from opacus.grad_sample import GradSampleModule
    from opacus.validators import ModuleValidator

    probe = model if model.training else copy.deepcopy(model).train()  # validators need train mode
    errors = ModuleValidator.validate(probe, strict=False) + GradSampleModule.validate(probe, strict=False)
    return [str(e).split(". ")[0].strip() for e in errors]


def make_private_compatible(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """``model`` ready for Opacus' per-sample gradients, and one line per layer that was replaced.

    A valid model is returned as is. Otherwise Opacus' ``ModuleValidator.fix`` makes a fixed copy
    (BatchNorm becomes GroupNorm: BatchNorm mixes the samples of a batch, so no per-sample gradient
    exists); the replacements are logged as a warning and stored on the copy as ``opacus_fixes``.

    Raises:
        ConfigError: on ``defense.dpsgd`` if layers remain that Opacus cannot handle.
    """
    from opacus.validators import ModuleValidator

    if not _opacus_errors(model):
        return model, []
    fixed = ModuleValidator.fix(model)
    before = {name: type(m).__name__ for name, m in model.named_modules()}
    fixes = [f"{name}: {before[name]} -> {type(m).__name__}" for name, m in fixed.named_modules()
             if name in before and before[name] != type(m).__name__]
    remaining = _opacus_errors(fixed)
    if remaining:
        raise ConfigError("defense.dpsgd", type(model).__name__, "a model whose trainable layers Opacus can "
                          "compute per-sample gradients for", "; ".join(sorted(set(remaining)))
                          + " -- replace these layers (for example norm layers with running statistics "
                          "by GroupNorm, model.norm=group) or drop dpsgd from defense.use")
    fixed.opacus_fixes = fixes
    logger.warning("dpsgd: replaced %d layer(s) so Opacus can compute per-sample gradients: %s", len(fixes),
                   "; ".join(fixes))
    return fixed, fixes


def make_accountant(mechanism: str, history: list[tuple[float, float, int]] | None = None) -> Any:
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=mechanism)
    acc.history = [tuple(h) for h in history or []]
    return acc


def accountant_epsilon(acc: Any, delta: float, poisson: bool) -> float:
    if not acc.history:
        return 0.0
    if acc.mechanism() == "gdp":
        return float(acc.get_epsilon(delta=delta, poisson=poisson))
    return float(acc.get_epsilon(delta=delta))


def dp_sgd_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                   accountant: str = "rdp") -> float:
    """Epsilon at ``delta`` after ``steps`` DP-SGD steps at ``sample_rate`` with ``noise_multiplier``,
    from a fresh Opacus accountant (``rdp``: Mironov et al. 2019's sampled Gaussian mechanism)."""
    return accountant_epsilon(make_accountant(accountant, [(noise_multiplier, sample_rate, steps)]), delta, True)


def rdp_epsilon_floor(delta: float) -> float:
    """The smallest epsilon Opacus' RDP accountant can state at ``delta``, whatever the noise:
    its RDP-to-DP conversion (Balle et al. 2020) at zero Renyi divergence over its default
    orders (the largest is 63)."""
    from opacus.accountants.analysis.rdp import get_privacy_spent
    from opacus.accountants.rdp import RDPAccountant

    orders = RDPAccountant.DEFAULT_ALPHAS
    eps, _ = get_privacy_spent(orders=orders, rdp=[0.0] * len(orders), delta=delta)
    return float(eps)


def history_steps(history: list[tuple[float, float, int]]) -> int:
    return int(sum(h[2] for h in history))


def solve_noise_multiplier(*, target: float, delta: float, rate: float, steps: int, mechanism: str,
                 history: list[tuple[float, float, int]], tol: float = 0.01, poisson: bool = True) -> float:
    """The smallest noise multiplier (within ``tol`` in epsilon) that keeps the composition of
    ``history`` and ``steps`` further steps at ``rate`` within ``target``; ValueError if none.
    ``poisson`` is what the accountant is told about sampling (GDP's bound depends on it), the same
    as :meth:`DPSGD.report` tells it, so the reported epsilon is the one solved for."""
    if not history and poisson:
        from opacus.accountants.utils import get_noise_multiplier

        return float(get_noise_multiplier(target_epsilon=target, target_delta=delta, sample_rate=rate, steps=steps,
                                          accountant=mechanism, epsilon_tolerance=tol))

    def eps(sigma: float) -> float:  # the bisection of get_noise_multiplier, over the history too
        return accountant_epsilon(make_accountant(mechanism, [*history, (sigma, rate, steps)]), delta, poisson)

    lo, hi = 0.0, 10.0
    eps_hi = eps(hi)
    while eps_hi > target:
        hi *= 2
        if hi > MAX_SIGMA:
            raise ValueError("The privacy budget is too low.")
        eps_hi = eps(hi)
    while target - eps_hi > tol:
        mid = (lo + hi) / 2
        e = eps(mid)
        if e < target:
            hi, eps_hi = mid, e
        else:
            lo = mid
    return hi


class PerSampleWindow(nn.Module):
    """Runs a client part with Opacus' per-sample-gradient hooks attached only from its forward
    pass until :meth:`close` (the optimizer's step hook), so that between rounds the client part
    is a plain module: a copy of it (an attacker's white-box view, a re-plan's new layout) carries
    no hooks that expect captured activations or break ``torch.func`` transforms."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.gsm: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from opacus import GradSampleModule

        if self.gsm is None:
            self.gsm = GradSampleModule(self.module, batch_first=True, loss_reduction="mean", strict=True)
        return self.gsm(x)

    def close(self) -> None:
        """Remove the hooks (and the emptied activation lists) once the step has used them."""
        if self.gsm is None:
            return
        self.gsm.remove_hooks()
        for m in self.module.modules():
            for attr in ("activations", "max_batch_len"):
                if hasattr(m, attr):
                    delattr(m, attr)
        self.gsm = None
