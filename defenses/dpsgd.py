"""DP-SGD on each device's client-side sub-model, with Opacus.

DP-SGD (Abadi et al., "Deep learning with differential privacy", CCS 2016): each device clips the
gradient of every one of its samples to L2 norm ``max_grad_norm``, sums them, adds Gaussian noise
of standard deviation ``noise_multiplier * max_grad_norm`` and divides by its expected batch size
before its SGD step. Per-sample gradients come from Opacus' ``GradSampleModule`` and clipping and
noise from its ``DPOptimizer`` (Yousefpour et al., "Opacus: user-friendly differential privacy
library in PyTorch", 2021); each device's privacy loss is tracked by its own Opacus accountant.

What the guarantee covers: device i's client-side parameters -- every update it makes and every
upload to the fed server -- with respect to one sample of device i's data (add/remove adjacency,
as Opacus' accountants assume). Devices hold disjoint data, so the run's epsilon is the largest
device epsilon (parallel composition). It does *not* cover the smashed data and labels a device
sends to the edge server every round: those leave the device before any noise is added (combine
with the ``noise`` defense for them; Gawron & Stubbings 2022 show a hijacking server is not
stopped by client-side DP-SGD).

Split-learning specifics:

* The edge server's loss is each device's *mean* cross-entropy over its batch, so the cut
  gradient is d mean_loss_i / d smashed. Opacus is therefore told ``loss_reduction="mean"`` (its
  hooks multiply back by the actual batch size to recover per-sample gradients) and the expected
  batch size (q_i |D_i| with Poisson sampling, b_i otherwise), which the sum of clipped gradients
  is divided by.
* The sampling rate is q_i = b_i / |D_i| (capped at 1), the number of steps is ``train.rounds``
  (one step per device per round). With ``poisson`` (default) and an epsilon claimed, the trainer
  draws Poisson batches at rate q_i, which the accountants' amplification by subsampling
  assumes; batches vary in size and may be empty -- Opacus then still adds noise and counts the
  step. Without Poisson sampling the reported epsilon is the one Opacus would report too, but the
  fixed-size without-replacement sampler does not meet its assumption.
* Per-sample clipping bounds one sample's influence only if each sample's loss depends on that
  sample alone: BatchNorm is replaced (:func:`make_private_compatible`), and NoPeek, whose loss
  couples the samples of a batch, cannot be combined with DP-SGD.

Example::

    --set defense.use=[dpsgd] --set defense.dpsgd.target_epsilon=8 --set defense.dpsgd.max_grad_norm=1
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..seeding import derive_seed
from .base import Defense, DefenseContext
from .opacus_utils import (
    MAX_SIGMA,
    PerSampleWindow,
    accountant_epsilon,
    history_steps,
    make_accountant,
    make_private_compatible,
    rdp_epsilon_floor,
    solve_noise_multiplier,
)
from .params import check_fields, choice, flag, fraction, nonnegative, positive, rng_seed
from .registry import DEFENSES

__all__ = ["DPSGD", "ACCOUNTANTS"]

logger = logging.getLogger(__name__)

ACCOUNTANTS = ("rdp", "prv", "gdp")


@DEFENSES.register("dpsgd", help="DP-SGD on each device's client sub-model with Opacus (Abadi et al. 2016)")
class DPSGD(Defense):
    """DP-SGD (Abadi et al., CCS 2016) on every device's client part, with Opacus.

    Params:
        noise_multiplier: sigma, noise std over ``max_grad_norm``; null when ``target_epsilon``
            is given (null with no target: no noise, no privacy claim).
        target_epsilon: the epsilon each device must reach after ``train.rounds`` steps; the
            noise multiplier is solved per device (its own sampling rate) with Opacus'
            ``get_noise_multiplier``. Give at most one of the two.
        max_grad_norm: per-sample L2 clipping bound C; null (with no noise) makes the defense
            the identity.
        delta: the delta of every epsilon (default 1e-5).
        poisson: Poisson sampling of each device's batch at rate q_i = b_i / |D_i| whenever an
            epsilon is claimed (default true).
        accountant: Opacus accountant: ``rdp`` (Renyi DP, Mironov 2017; default), ``prv``
            (privacy random variables, Gopi et al. 2021) or ``gdp`` (Gaussian DP, Dong et al.
            2019; experimental in Opacus, one sample rate per run).
        seed: seed of the per-device noise generators.

    :meth:`report` gives per device (``.device<i>``) the noise multiplier, the sample rate, the
    epsilon spent so far and the epsilon at the end of training (the accountant's history plus
    the remaining rounds at the current rate), and their maxima over devices (``epsilon``,
    ``epsilon_final``), all from the configured Opacus accountant at ``delta``.
    """

    @dataclass
    class Params:
        noise_multiplier: float | None = nonnegative(None, note="or null (no noise, or solved from target_epsilon)")
        target_epsilon: float | None = positive(None)
        max_grad_norm: float | None = positive(1.0, note="or null for no clipping")  # C of Abadi et al. (2016)
        delta: float = fraction(1e-5)  # an (epsilon, delta) guarantee needs delta < 1 (Dwork & Roth 2014)
        poisson: bool = flag(True)
        accountant: str = choice("rdp", ACCOUNTANTS)
        seed: int = rng_seed(0)

    name = "dpsgd"
    incompatible_with = {"nopeek": "NoPeek's distance-correlation loss couples the samples of a batch, so "
                                   "clipping each sample's gradient no longer bounds that sample's influence"}

    def __init__(self, params: "DPSGD.Params | None" = None) -> None:
        self.params = p = params if params is not None else self.Params()
        f = "defense.dpsgd."
        check_fields(p, f)  # each field's range, declared in Params; what follows combines fields
        if p.noise_multiplier is not None and p.target_epsilon is not None:
            raise ConfigError(f + "target_epsilon", p.target_epsilon, "null when defense.dpsgd.noise_multiplier "
                              "is set", "give either the noise multiplier or the epsilon to reach, not both")
        if p.max_grad_norm is None and (p.target_epsilon is not None or (p.noise_multiplier or 0) > 0):
            raise ConfigError(f + "max_grad_norm", None, "a number > 0 when noise is added",
                              "the noise std is noise_multiplier * max_grad_norm, and without clipping "
                              "no noise level bounds a sample's influence")
        #: whether Opacus is used at all, and whether an epsilon is claimed
        self.active = p.max_grad_norm is not None
        self.claims = self.active and (p.target_epsilon is not None or (p.noise_multiplier or 0) > 0)
        if self.active and not self.claims:
            logger.info("dpsgd: clipping only (no noise multiplier or target epsilon): no privacy claim")
        self.context: DefenseContext | None = None
        self.sigmas: dict[int, float] = {}
        self.rates: dict[int, float] = {}
        self.expected: dict[int, float] = {}
        self.accountants: dict[int, Any] = {}
        self.model_fixes: list[str] = []
        self._generators: dict[int, torch.Generator] = {}
        self._windows: dict[int, PerSampleWindow] = {}
        self._optimizers: dict[int, Any] = {}

    # setup ----------------------------------------------------------------------------------------
    def prepare_model(self, model: nn.Module) -> nn.Module:
        if not self.active:
            return model
        fixed, fixes = make_private_compatible(model)
        self.model_fixes = list(getattr(fixed, "opacus_fixes", fixes))
        return fixed

    def sample_rates(self, context: DefenseContext) -> tuple[float, ...] | None:
        if not (self.claims and self.params.poisson):
            return None
        return tuple(min(1.0, b / n) for b, n in zip(context.batch_sizes, context.part_sizes))

    def _accountant_of(self, device: int) -> Any:
        if device not in self.accountants:
            self.accountants[device] = make_accountant(self.params.accountant)
        return self.accountants[device]

    def prepare(self, context: DefenseContext) -> None:
        self.context = context
        self._windows, self._optimizers = {}, {}
        if not self.active:
            return
        p = self.params
        for i, (b, n) in enumerate(zip(context.batch_sizes, context.part_sizes)):
            rate = min(1.0, b / n)
            if b > n:
                logger.warning("dpsgd: device %d's batch size %d exceeds its %d samples; sampling rate capped at 1",
                               i, b, n)
            history = self._accountant_of(i).history
            if p.accountant == "gdp" and history and history[-1][1] != rate:
                raise ConfigError("defense.dpsgd.accountant", p.accountant, ["rdp", "prv"], f"the Gaussian "
                                  f"accountant needs one sample rate per run; a re-plan changed device {i}'s")
            self.rates[i] = rate
            self.expected[i] = rate * n if context.sample_rates is not None else float(b)
            self.sigmas[i] = self._noise_for(i, rate, context.rounds) if self.claims else 0.0
        logger.info("dpsgd: noise multipliers %s at sample rates %s (%s accountant, delta %g)",
                    [round(self.sigmas[i], 4) for i in sorted(self.sigmas)],
                    [round(self.rates[i], 4) for i in sorted(self.rates)], p.accountant, p.delta)

    def _noise_for(self, device: int, rate: float, rounds: int) -> float:
        p = self.params
        if p.target_epsilon is None:
            return float(p.noise_multiplier or 0.0)
        history = list(self._accountant_of(device).history)
        remaining = rounds - history_steps(history)
        if remaining <= 0:  # training is over; nothing left to calibrate
            return self.sigmas.get(device, 0.0)
        if p.accountant == "rdp" and p.target_epsilon <= (floor := rdp_epsilon_floor(p.delta)) + 0.01:
            # refused at once: Opacus' search would double sigma up to 1e6 for minutes first
            raise ConfigError("defense.dpsgd.target_epsilon", p.target_epsilon, f"an epsilon above {floor:.4g}",
                              f"the RDP accountant cannot state less at delta {p.delta:g} with any noise; raise "
                              "target_epsilon or delta, or use defense.dpsgd.accountant=prv")
        try:
            return solve_noise_multiplier(target=p.target_epsilon, delta=p.delta, rate=rate, steps=remaining,
                                          mechanism=p.accountant, history=history,
                                          poisson=self.context.sample_rates is not None)
        except ValueError:
            raise ConfigError("defense.dpsgd.target_epsilon", p.target_epsilon, "an epsilon reachable with a noise "
                              f"multiplier below {MAX_SIGMA:g}", f"device {device} samples at rate {rate:.4g} for "
                              f"{remaining} steps; raise target_epsilon or delta, or lower the batch size or "
                              "train.rounds") from None

    def _generator(self, device: int) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator().manual_seed(derive_seed(self.params.seed, "dpsgd", device))
        return self._generators[device]

    def wrap_client(self, module: nn.Module, *, device: int) -> nn.Module:
        if not self.active:
            return module
        from opacus.grad_sample import GradSampleModule

        errors = GradSampleModule.validate(module, strict=False)
        if errors:
            raise ConfigError("defense.dpsgd", type(module).__name__, "a client part Opacus can compute per-sample "
                              "gradients for", str(errors[0]).split(". ")[0])
        # The first layer's input (the data) needs no gradient, so torch warns that the full
        # backward hook Opacus puts there fires on outputs only -- which is all Opacus needs.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with "
                                "respect to module outputs since no inputs require gradients", category=UserWarning)
        self._windows[device] = window = PerSampleWindow(module)
        return window

    def unwrap_client(self, module: nn.Module, *, device: int) -> nn.Module:
        if not isinstance(module, PerSampleWindow):
            return module
        module.close()  # normally already closed by the last step
        self._windows.pop(device, None)
        return module.module

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, *, device: int) -> torch.optim.Optimizer:
        if not self.active:
            return optimizer
        from opacus.optimizers import DPOptimizer

        opt = DPOptimizer(optimizer, noise_multiplier=self.sigmas[device], max_grad_norm=self.params.max_grad_norm,
                          expected_batch_size=self.expected[device], loss_reduction="mean",
                          generator=self._generator(device))
        opt.attach_step_hook(partial(self._after_noise, device))
        self._optimizers[device] = opt
        return opt

    def _after_noise(self, device: int, optimizer: Any) -> None:
        """DPOptimizer's step hook (per-sample gradients used up): count the step, remove the hooks."""
        if self.claims:
            self._accountant_of(device).step(noise_multiplier=optimizer.noise_multiplier,
                                             sample_rate=self.rates[device])
        window = self._windows.get(device)
        if window is not None:
            window.close()

    # results --------------------------------------------------------------------------------------
    def report(self) -> dict[str, float]:
        if not self.active:
            return {}
        p = self.params
        out: dict[str, float] = {"max_grad_norm": float(p.max_grad_norm), "delta": float(p.delta),
                                 "model_fixes": float(len(self.model_fixes))}
        if self.context is None:
            return out
        poisson = self.context.sample_rates is not None
        out["poisson"] = float(poisson)
        spent, final = [], []
        for i in sorted(self.rates):
            history = list(self._accountant_of(i).history)
            remaining = max(0, self.context.rounds - history_steps(history))
            if self.claims:
                eps = accountant_epsilon(make_accountant(p.accountant, history), p.delta, poisson)
                ahead = [*history, (self.sigmas[i], self.rates[i], remaining)] if remaining else history
                if p.accountant == "gdp" and history and remaining:  # one (sigma, q) entry for the whole run
                    ahead = [(history[0][0], history[0][1], history_steps(history) + remaining)]
                eps_final = accountant_epsilon(make_accountant(p.accountant, ahead), p.delta, poisson)
            else:
                eps = eps_final = math.inf
            out[f"noise_multiplier.device{i}"] = float(self.sigmas[i])
            out[f"sample_rate.device{i}"] = float(self.rates[i])
            out[f"epsilon.device{i}"] = eps
            out[f"epsilon_final.device{i}"] = eps_final
            spent.append(eps)
            final.append(eps_final)
        if spent:
            out["epsilon"] = max(spent)
            out["epsilon_final"] = max(final)
        return out

    def state_dict(self) -> dict[str, object]:
        return {
            "accountants": {str(i): [list(h) for h in a.history] for i, a in self.accountants.items()},
            "generators": {str(i): g.get_state() for i, g in self._generators.items()},
            "sigmas": {str(i): s for i, s in self.sigmas.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        for i, history in dict(state.get("accountants", {})).items():  # type: ignore[call-overload]
            self._accountant_of(int(i)).history = [(float(s), float(q), int(k)) for s, q, k in history]
        for i, g in dict(state.get("generators", {})).items():  # type: ignore[call-overload]
            self._generator(int(i)).set_state(g)
        # the noise solved when the run re-planned, not what a fresh prepare() would solve now
        for i, sigma in dict(state.get("sigmas", {})).items():  # type: ignore[call-overload]
            self.sigmas[int(i)] = float(sigma)
            if int(i) in self._optimizers:
                self._optimizers[int(i)].noise_multiplier = float(sigma)
