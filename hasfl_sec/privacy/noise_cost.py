"""What smashed-data noise costs in convergence: the extra gradient variance in HASFL's bound.

Derivation (ours; it extends Assumption 2 and Theorem 1 of HASFL, Lin et al., arXiv 2506.08426,
docs/hasfl.md section 3). Device i at cut c sends a~ = a + n instead of its smashed data a = f_c(x),
with n ~ N(0, sigma_i^2 I_m) drawn afresh for every sample and round. The server computes the
loss on a~ and returns dl/da~, which the device back-propagates through its part, so *every*
parameter's per-sample gradient is a function of the noise: g(x, n) = grad_w l(w; x, n). Expand it
around n = 0 with D(x) = dg/dn at n = 0 (P x m):

    g(x, n) = g(x, 0) + D(x) n + O(|n|^2).

By the law of total variance, over the sample x and the noise n,

    Var[g] = Var_x[E_n g(x, n)] + E_x[Var_n(g(x, n) | x)]
           = V + sigma^2 E_x ||D(x)||_F^2 + O(sigma^3) = V + sigma^2 kappa_c,

using E[n n^T] = sigma^2 I (so E||D n||^2 = sigma^2 tr(D^T D)); V = E_x||g(x, 0) - E g||^2 is
the clean per-sample variance, sum_j sigma_j^2 in the bound, and kappa_c = E_x||D(x)||_F^2 depends
on the cut (where the noise enters) and the model. The noise also shifts the mean gradient by
O(sigma^2) (the first-order term has zero mean); the bound has no bias term and this is ignored.
Assumption 2 therefore holds for device i with per-sample variance V + sigma_i^2 kappa_{c_i}; as
Theorem 1 divides device i's variance by b_i, its variance term

    (beta gamma / N^2) sum_i V / b_i = k sum_i 1 / b_i     becomes     k sum_i m_i / b_i,
    m_i = 1 + kappa_{c_i} sigma_i^2 / V = 1 + rho_{c_i} r_i^2,   rho_c = kappa_c RMS_c^2 / V,

with r_i = sigma_i / RMS_c the noise relative to the cut's smashed-data RMS. Corollary 1 then
needs R = 2 theta / (gamma (eps - k sum_i m_i / b_i - D(L_c))) rounds: more privacy costs rounds,
and a device can pay for its noise with a larger batch. rho_c is dimensionless, so the k of a
calibrated bound (:mod:`hasfl_sec.planning.calibrate`) is multiplied by the same factor.

What is measured (our choice). The Taylor step is not needed: by the law of total variance the
extra per-sample variance is exactly E_x Var_n(g(x, n) | x), and that is what is measured, at the
noise level actually planned. For a probe batch and two independent noise draws n1, n2,
(1/2)||g(x, n1) - g(x, n2)||^2 is an unbiased estimate of tr Var_n(g(x, n) | x); its mean over the
probe images (and ``pairs`` pairs) divided by sigma^2 is the secant kappa_c(sigma) (= kappa_c to
first order; exact for a server affine in a~ with a loss linear in its output, the test). The
first-order kappa fails on real networks in both directions (hecnn on digits, 32 probe images,
var/sigma^2 at relative noise 0.1 / 0.3 / 1 / 2 at cut 1: untrained 47700 / 8080 / 752 / 192 --
the noise-induced variance saturates near 0.7 V because GroupNorm renormalises the noisy
activations -- and after 5 epochs of training 115 / 466 / 2680 / 3980, growing with the noise as
the confident model's predictions break), hence the measurement at the planned level.

Which model? Assumption 2 bounds the variance along the whole trajectory, and the bound's V is
measured early (the warm-up starts from the initial model: V there was 505 against 488 from the
warm-up itself). :class:`NoiseCost` therefore takes the noise-induced variance as the larger of its
values on the run's *initial* model and on the *profiled* model (trained centrally, the one whose
leakage is planned against), and divides it by V of the initial model on the same probe images:

    m(c, sigma) = 1 + max_{w in {w_0, w_profiled}} E_x Var_n(g_w(x, n) | x) / V(w_0).

Noise levels are planned relative to the profiled model's smashed-data RMS (where the leakage
profile is defined); the absolute std sigma = r x RMS_c is what both models are measured at and
what the trainer adds. The planner evaluates m lazily, only at the (cut, level) pairs some device
needs, and assumes m non-decreasing in sigma (true to first order and in every measurement above),
which is what makes the least noise meeting a budget optimal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..errors import ConfigError, check
from ..metrics.fisher_jacobian import eval_mode
from ..seeding import derive_seed

__all__ = ["NoiseCost", "GradientNoise", "gradient_noise"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GradientNoise:
    """What :func:`gradient_noise` measured at one cut and one noise level.

    Attributes:
        noise_variance: E_x tr Var_n(g(x, n) | x), the per-sample gradient variance the noise adds.
        clean_variance: V, the clean per-sample gradient variance (all parameters).
        activation_rms: RMS of the smashed data over the probe batch.
        sigma: the absolute noise std.
    """

    noise_variance: float
    clean_variance: float
    activation_rms: float
    sigma: float

    @property
    def kappa(self) -> float:
        """The secant kappa_c(sigma) = noise_variance / sigma^2 (kappa_c to first order)."""
        return self.noise_variance / self.sigma**2 if self.sigma > 0 else math.nan


class _Noisy(nn.Module):
    """server(client(x) + n): the split model with the noise as an input."""

    def __init__(self, client: nn.Module, server: nn.Module) -> None:
        super().__init__()
        self.client, self.server = client, server

    def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return self.server(self.client(x) + n)


def gradient_noise(client: nn.Module, server: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float,
                   pairs: int = 2, generator: torch.Generator | None = None, loss_fn: LossFn = F.cross_entropy,
                   chunk: int = 64, clean: bool = True) -> GradientNoise:
    """The noise-induced and the clean per-sample gradient variance of ``client | server``.

    Args:
        client, server: the two parts (parameters of both count, as in the bound's V).
        x, y: probe inputs and labels.
        sigma: absolute std of the Gaussian noise added to ``client(x)`` (0: clean variance only).
        pairs: independent noise pairs per sample.
        generator: source of the noise (default: a CPU generator seeded with 0).
        loss_fn: per-sample loss ``loss_fn(output[1, ...], label[1])`` (cross-entropy).
        chunk: samples per vectorised per-sample-gradient call.
        clean: also measure the clean variance V (one more per-sample-gradient pass; NaN if not).
    """
    check(math.isfinite(sigma) and sigma >= 0, "privacy.sigma", sigma, "a finite noise std >= 0")
    check(pairs >= 1, "privacy.noise_pairs", pairs, "an integer >= 1")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    model = _Noisy(client, server)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor, ni: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, p, (xi.unsqueeze(0), ni.unsqueeze(0))), yi.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0, 0))
    n = len(x)
    sq_clean, spread = 0.0, 0.0
    sums = {k: torch.zeros_like(v) for k, v in params.items()}
    with eval_mode(model):
        with torch.no_grad():
            z = client(x)
        rms = float(z.double().pow(2).mean().sqrt())
        for start in range(0, n, chunk):
            xs, ys = x[start:start + chunk], y[start:start + chunk]
            zero = torch.zeros((len(xs), *z.shape[1:]), dtype=z.dtype, device=z.device)
            if clean:
                g0 = per_sample(params, xs, ys, zero)
                for k, v in g0.items():
                    sq_clean += float(v.double().pow(2).sum())
                    sums[k] += v.sum(0)
            for _ in range(pairs if sigma > 0 else 0):
                draws = torch.randn((2, *zero.shape), generator=gen, dtype=z.dtype).to(z.device) * sigma
                g1, g2 = per_sample(params, xs, ys, draws[0]), per_sample(params, xs, ys, draws[1])
                spread += sum(0.5 * float((g1[k] - g2[k]).double().pow(2).sum()) for k in g1)
    mean_sq = sum(float((s / n).double().pow(2).sum()) for s in sums.values())
    variance = max(sq_clean / n - mean_sq, 0.0) if clean else math.nan
    return GradientNoise(noise_variance=spread / (n * pairs), clean_variance=variance, activation_rms=rms,
                         sigma=float(sigma))


@dataclass
class NoiseCost:
    """The variance multiplier m(c, r) of the module docstring, measured lazily and cached.

    Attributes:
        models: the split models the noise-induced variance is maximised over (the run's
            initial model first: its clean variance is the reference V).
        x, y: the probe batch.
        activation_rms: per cut, the smashed-data RMS of the profiled model (r -> absolute sigma).
        clean_variance: V of the initial model on the probe batch.
        pairs: noise pairs per probe image of each measurement.
        seed: seeds the noise draws (per cut and level, so results do not depend on the order).
    """

    models: tuple[nn.Module, ...]
    x: torch.Tensor
    y: torch.Tensor
    activation_rms: dict[int, float]
    clean_variance: float
    pairs: int = 2
    seed: int = 0
    _cache: dict[tuple[int, float], float] = field(default_factory=dict, repr=False)

    @property
    def measured(self) -> int:
        """How many (cut, noise) pairs have been measured so far."""
        return len(self._cache)

    @classmethod
    def measure(cls, initial: nn.Module, profiled: nn.Module, x: torch.Tensor, y: torch.Tensor, cuts: Sequence[int],
                *, pairs: int = 2, seed: int = 0) -> "NoiseCost":
        """V of ``initial`` and the smashed-data RMS of ``profiled`` at ``cuts`` (both split models)."""
        clean = gradient_noise(initial.client_part(cuts[0]), initial.server_part(cuts[0]), x, y, sigma=0.0)
        if not clean.clean_variance > 0:
            raise ConfigError("privacy.probe_images", len(x), "probe images whose gradients differ",
                              "the clean per-sample gradient variance is 0, so no noise cost can be relative to it")
        rms = {}
        with eval_mode(profiled), torch.no_grad():
            for c in cuts:
                rms[int(c)] = float(profiled.client_part(c)(x).double().pow(2).mean().sqrt())
        return cls((initial, profiled), x, y, rms, clean.clean_variance, pairs=pairs, seed=seed)

    def variance(self, cut: int, sigma: float) -> float:
        """max over the models of E_x tr Var_n(g | x) at absolute noise ``sigma`` and ``cut``."""
        key = (int(cut), float(sigma))
        if key not in self._cache:
            out = 0.0
            for k, model in enumerate(self.models):
                gen = torch.Generator().manual_seed(derive_seed(self.seed, "privacy-noise", cut, float(sigma), k))
                gn = gradient_noise(model.client_part(cut), model.server_part(cut), self.x, self.y, sigma=sigma,
                                    pairs=self.pairs, generator=gen, clean=False)
                out = max(out, gn.noise_variance)
            self._cache[key] = out
        return self._cache[key]

    def multiplier(self, cut: int, relative_sigma: float) -> float:
        """m = 1 + variance(cut, r x RMS_c) / V for noise ``relative_sigma`` x the cut's RMS."""
        check(int(cut) in self.activation_rms, "privacy.cuts", cut, sorted(self.activation_rms))
        if relative_sigma <= 0:
            return 1.0
        return 1.0 + self.variance(cut, relative_sigma * self.activation_rms[int(cut)]) / self.clean_variance
