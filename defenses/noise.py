"""Noise on smashed data: per-sample norm clipping, then Gaussian or Laplace noise.

The device clips each sample's activation to L2 norm at most ``clip`` and adds i.i.d. noise of
standard deviation ``sigma`` (Gaussian) or scale ``sigma`` (Laplace, ``b``), in the units of the
activations actually sent. This is the noise defense of He, Zhang & Lee, "Attacking and protecting
data privacy in edge-cloud collaborative inference systems", IEEE IoT Journal 2020, and of
Titcombe et al., "Practical defences against model inversion attacks for split neural networks",
ICLR-W 2021 (Laplace); with clipping and Gaussian noise each release is a Gaussian mechanism of L2
sensitivity ``2 * clip`` (Dwork & Roth 2014, section 3.5).

Noise comes from one seeded generator per device, so a run is reproducible and a resumed run
continues the same noise stream. ``sigma = 0`` with ``clip = None`` is exactly the identity.

Accounting: with clipping, each release of a sample is a Gaussian mechanism with noise multiplier
``z = sigma / (2 * clip)``; :func:`gaussian_epsilon` composes ``k`` releases with Opacus' RDP
accountant (Mironov, "Renyi differential privacy", CSF 2017) and no subsampling amplification
(the device sampler is not Poisson), so it is an upper bound. Laplace noise under an L2 clip has
no tight L2-based account here and reports none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..seeding import derive_seed
from . import DEFENSES
from .base import Defense

__all__ = ["SmashedNoise", "clip_per_sample", "gaussian_epsilon"]

MECHANISMS = ("gaussian", "laplace")


def clip_per_sample(a: torch.Tensor, clip: float) -> torch.Tensor:
    """Scale every sample of ``a`` ``[b, ...]`` down to L2 norm at most ``clip`` (differentiable)."""
    norms = a.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (clip / norms).clamp(max=1.0)
    return a * factor.view(-1, *([1] * (a.dim() - 1)))


def gaussian_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``releases`` adaptive uses of the Gaussian mechanism with
    ``noise_multiplier`` (noise std over L2 sensitivity), via Opacus' RDP accountant, q = 1."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
    from opacus.accountants.rdp import RDPAccountant

    if noise_multiplier <= 0 or releases < 1 or not 0 < delta < 1:
        raise ValueError(f"need noise_multiplier > 0, releases >= 1 and 0 < delta < 1; got "
                         f"{noise_multiplier}, {releases}, {delta}")
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=1.0, noise_multiplier=noise_multiplier, steps=releases, orders=orders)
    eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)


@DEFENSES.register("noise", help="clip each sample's smashed data, add Gaussian or Laplace noise (He et al. 2020)")
class SmashedNoise(Defense):
    """Clip-and-noise on the smashed data each device sends.

    Params:
        sigma: noise standard deviation (Gaussian) or scale b (Laplace), in activation units (>= 0).
        clip: per-sample L2 norm bound applied first, or None for no clipping.
        mechanism: ``gaussian`` or ``laplace``.
        seed: seed of the per-device noise generators.
        delta: the delta at which :meth:`report` states epsilon (default 1e-5).

    Example::

        trainer = setup.trainer([SmashedNoise(SmashedNoise.Params(sigma=0.5, clip=10.0))])
    """

    @dataclass
    class Params:
        sigma: float = 0.0
        clip: float | None = None
        mechanism: str = "gaussian"
        seed: int = 0
        delta: float = 1e-5

    name = "noise"

    def __init__(self, params: "SmashedNoise.Params | None" = None) -> None:
        self.params = p = params if params is not None else self.Params()
        if not isinstance(p.sigma, (int, float)) or not p.sigma >= 0:
            raise ConfigError("defense.noise.sigma", p.sigma, "a number >= 0 (activation units)")
        if p.clip is not None and (not isinstance(p.clip, (int, float)) or not p.clip > 0):
            raise ConfigError("defense.noise.clip", p.clip, "a number > 0, or null for no clipping")
        if p.mechanism not in MECHANISMS:
            raise ConfigError("defense.noise.mechanism", p.mechanism, MECHANISMS)
        self._generators: dict[int, torch.Generator] = {}

    def _generator(self, device: int) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator().manual_seed(derive_seed(self.params.seed, "noise", device))
        return self._generators[device]

    def transform_smashed(self, smashed: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        p = self.params
        out = clip_per_sample(smashed, p.clip) if p.clip is not None else smashed
        if p.sigma == 0:
            return out
        gen = self._generator(device)
        if p.mechanism == "gaussian":
            noise = torch.randn(out.shape, generator=gen, dtype=out.dtype) * p.sigma
        else:  # Laplace(0, b) as the difference of two exponentials
            u = torch.rand((2, *out.shape), generator=gen, dtype=out.dtype).clamp_min(1e-12)
            noise = (u[1].log() - u[0].log()) * p.sigma
        return out + noise.to(out.device)

    def report(self) -> dict[str, float]:
        p = self.params
        out = {"sigma": float(p.sigma)}
        if p.clip is not None:
            out["clip"] = float(p.clip)
            if p.mechanism == "gaussian" and p.sigma > 0:
                z = float(p.sigma) / (2.0 * float(p.clip))
                out["noise_multiplier"] = z
                out["epsilon_per_release"] = gaussian_epsilon(z, 1, p.delta)
                out["delta"] = float(p.delta)
        return out

    def state_dict(self) -> dict[str, object]:
        return {str(d): g.get_state() for d, g in self._generators.items()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self._generators = {}
        for d, s in state.items():
            self._generator(int(d)).set_state(s)  # type: ignore[arg-type]
