"""Noise on smashed data: per-sample norm clipping, then Gaussian or Laplace noise.

The device clips each sample's activation to norm at most ``clip`` (L2, or L1 with
``norm: l1``) and adds i.i.d. noise of standard deviation ``sigma`` (Gaussian) or scale ``sigma``
(Laplace, ``b``), in the units of the activations actually sent; ``sigma`` may differ per device
(a privacy-constrained planner sets per-device noise). This is the noise defense of He, Zhang &
Lee, "Attacking and protecting data privacy in edge-cloud collaborative inference systems", IEEE
IoT Journal 2020, and of Titcombe et al., "Practical defences against model inversion attacks for
split neural networks", ICLR-W 2021 (Laplace). Noise comes from one seeded generator per device,
so a run is reproducible and a resumed run continues the same noise stream. ``sigma = 0`` with
``clip = None`` is exactly the identity.

Accounting (replace-one adjacency: two data sets differ in one sample's value, so one release of
a clipped sample has sensitivity ``2 * clip``):

* Gaussian (Dwork & Roth 2014, section 3.5): each release is a Gaussian mechanism with noise
  multiplier ``z = sigma / (2 * clip)`` (an L1 clip bounds the L2 norm too).
  :func:`gaussian_epsilon` composes ``k`` releases with Opacus' RDP accountant (Mironov, "Renyi
  differential privacy", CSF 2017) at sampling rate q = 1, i.e. without amplification by
  subsampling: an upper bound.
* Laplace with an L1 clip: each release is ``2 * clip / sigma``-DP (pure, delta = 0) and ``k``
  releases compose to ``k`` times that (basic composition). Laplace under an L2 clip gets no
  epsilon: the L1 sensitivity of an L2 ball of radius C in d dimensions is ``2 C sqrt(d)``, which
  for thousands of activations gives a vacuous bound -- use ``norm: l1`` for a pure-DP claim.

Releases per sample over training: the device sampler draws epoch-wise without replacement
(:class:`hasfl_sec.sfl.sampler.DeviceSampler`), so after sending ``S_i`` samples in total a device
with ``|D_i|`` samples has released every sample at most ``ceil(S_i / |D_i|)`` times -- with a
fixed plan ``ceil(R b_i / |D_i|)`` over R rounds, the exact maximum. The defense counts what it
sends (so re-plans that change b_i are followed) and projects the remaining rounds at the current
b_i. Under Poisson sampling (DP-SGD's ``poisson``) a sample's count is Binomial(R, q_i) with no
finite worst case: the expected count ``R q_i`` is reported, and no epsilon over training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ConfigError
from ..seeding import derive_seed
from .base import Defense, DefenseContext
from .params import check_fields, choice, fraction, nonnegative, positive, rng_seed
from .registry import DEFENSES

__all__ = ["SmashedNoise", "clip_per_sample", "gaussian_epsilon"]

MECHANISMS = ("gaussian", "laplace")
NORMS = ("l2", "l1")


def clip_per_sample(a: torch.Tensor, clip: float, norm: str = "l2") -> torch.Tensor:
    """Scale every sample of ``a`` ``[b, ...]`` down to ``norm`` (``l2``/``l1``) at most ``clip``
    (differentiable)."""
    norms = a.flatten(1).norm(p=1 if norm == "l1" else 2, dim=1).clamp_min(1e-12)
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
        sigma: noise standard deviation (Gaussian) or scale b (Laplace), in activation units
            (>= 0): one number for every device, or a list with one number per device.
        clip: per-sample norm bound applied first, or None for no clipping.
        norm: the norm ``clip`` bounds, ``l2`` (default) or ``l1``.
        mechanism: ``gaussian`` or ``laplace``.
        seed: seed of the per-device noise generators.
        delta: the delta at which :meth:`report` states a Gaussian epsilon (default 1e-5).

    :meth:`report`: the noise multiplier and ``epsilon_per_release``; after ``prepare``, per
    device (``.device<i>``) the releases per sample over training and the epsilon over training,
    and ``epsilon``, their maximum (see the module docstring for the bounds and their limits).

    Example::

        trainer = setup.trainer([SmashedNoise(SmashedNoise.Params(sigma=0.5, clip=10.0))])
    """

    @dataclass
    class Params:
        sigma: float | list[float] = nonnegative(0.0, note="or a list with one such number per device")
        clip: float | None = positive(None, note="or null for no clipping")
        norm: str = choice("l2", NORMS)
        mechanism: str = choice("gaussian", MECHANISMS)
        seed: int = rng_seed(0)
        delta: float = fraction(1e-5)  # an (epsilon, delta) guarantee needs delta < 1 (Dwork & Roth 2014)

    name = "noise"

    def __init__(self, params: "SmashedNoise.Params | None" = None) -> None:
        self.params = params if params is not None else self.Params()
        check_fields(self.params, "defense.noise.")  # the ranges declared in Params
        self.context: DefenseContext | None = None
        self._generators: dict[int, torch.Generator] = {}
        self._sent: dict[int, int] = {}  # samples each device has sent so far
        self._last_round = 0

    def _sigma(self, device: int) -> float:
        s = self.params.sigma
        if not isinstance(s, list):
            return float(s)
        if not 0 <= device < len(s):
            raise ConfigError("defense.noise.sigma", s, f"one sigma per device; device {device} has none")
        return float(s[device])

    def _generator(self, device: int) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator().manual_seed(derive_seed(self.params.seed, "noise", device))
        return self._generators[device]

    def prepare(self, context: DefenseContext) -> None:
        s = self.params.sigma
        if isinstance(s, list) and len(s) != context.num_devices:
            raise ConfigError("defense.noise.sigma", s, f"a number, or a list of {context.num_devices} numbers "
                              "(one per device)")
        self.context = context

    def is_identity(self) -> bool:
        sigmas = self.params.sigma if isinstance(self.params.sigma, list) else [self.params.sigma]
        return self.params.clip is None and all(s == 0 for s in sigmas)

    def transform_smashed(self, smashed: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        return self.transform_smashed_group(smashed.unsqueeze(0), round=round, devices=[device])[0]

    def transform_smashed_group(self, smashed: torch.Tensor, *, round: int, devices: Sequence[int]) -> torch.Tensor:
        """The transform for a group ``[k, b, ...]`` of devices (one device: :meth:`transform_smashed`).
        The clip runs on all k * b samples at once and each device's noise comes from its own
        generator, so a device gets the same result alone or in a group."""
        p = self.params
        for d in devices:  # what each device sent, for the releases per sample
            self._sent[d] = self._sent.get(d, 0) + smashed.shape[1]
        self._last_round = max(self._last_round, round)
        out = clip_per_sample(smashed.flatten(0, 1), p.clip, p.norm).view_as(smashed) if p.clip is not None else smashed
        noises = [self._noise(out.shape[1:], out.dtype, d) for d in devices]
        if all(n is None for n in noises):
            return out
        zeros = torch.zeros(out.shape[1:], dtype=out.dtype)
        return out + torch.stack([zeros if n is None else n for n in noises]).to(out.device)

    def _noise(self, shape: torch.Size, dtype: torch.dtype, device: int) -> torch.Tensor | None:
        """One draw of ``device``'s noise of ``shape`` from its generator (CPU), or None at sigma 0
        (no draw, so the generator's stream is the same whichever execution asked)."""
        sigma = self._sigma(device)
        if sigma == 0:
            return None
        gen = self._generator(device)
        if self.params.mechanism == "gaussian":
            return torch.randn(shape, generator=gen, dtype=dtype) * sigma
        # Laplace(0, b) as the difference of two exponentials
        u = torch.rand((2, *shape), generator=gen, dtype=dtype).clamp_min(1e-12)
        return (u[1].log() - u[0].log()) * sigma

    # accounting -----------------------------------------------------------------------------------
    def _per_release(self, sigma: float) -> dict[str, float]:
        """Noise multiplier and epsilon of one release at ``sigma`` (empty if none can be stated)."""
        p = self.params
        if p.clip is None or sigma <= 0:
            return {}
        if p.mechanism == "gaussian":
            z = sigma / (2.0 * float(p.clip))
            return {"noise_multiplier": z, "epsilon_per_release": gaussian_epsilon(z, 1, p.delta)}
        if p.norm == "l1":
            return {"epsilon_per_release": 2.0 * float(p.clip) / sigma}
        return {}

    def _releases(self, device: int) -> float:
        """Releases per sample over training: the worst case without replacement, or the expected
        count under Poisson sampling (module docstring)."""
        ctx = self.context
        assert ctx is not None
        remaining = max(0, ctx.rounds - self._last_round)
        if ctx.sample_rates is not None:
            return ctx.rounds * ctx.sample_rates[device]
        total = self._sent.get(device, 0) + remaining * ctx.batch_sizes[device]
        return float(math.ceil(total / ctx.part_sizes[device]))

    def _over_training(self, sigma: float, releases: float) -> float | None:
        p = self.params
        if self.context is None or self.context.sample_rates is not None or releases < 1:
            return None
        once = self._per_release(sigma)
        if "epsilon_per_release" not in once:
            return None
        if p.mechanism == "gaussian":
            return gaussian_epsilon(once["noise_multiplier"], int(releases), p.delta)
        return releases * once["epsilon_per_release"]  # pure DP composes additively

    def report(self) -> dict[str, float]:
        p = self.params
        per_device = isinstance(p.sigma, list)
        out: dict[str, float] = {} if per_device else {"sigma": float(p.sigma)}
        if p.clip is not None:
            out["clip"] = float(p.clip)
            if p.mechanism == "gaussian":
                out["delta"] = float(p.delta)
        if not per_device:
            out.update(self._per_release(float(p.sigma)))  # type: ignore[arg-type]
        if self.context is None:
            return out
        epsilons = []
        for i in range(self.context.num_devices):
            sigma, releases = self._sigma(i), self._releases(i)
            if per_device:
                out[f"sigma.device{i}"] = sigma
                out.update({f"{k}.device{i}": v for k, v in self._per_release(sigma).items()})
            out[f"releases.device{i}"] = releases
            eps = self._over_training(sigma, releases)
            if eps is not None:
                out[f"epsilon.device{i}"] = eps
                epsilons.append(eps)
        if epsilons:
            out["epsilon"] = max(epsilons)
        return out

    def state_dict(self) -> dict[str, object]:
        return {"generators": {str(d): g.get_state() for d, g in self._generators.items()},
                "sent": {str(d): n for d, n in self._sent.items()}, "last_round": self._last_round}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self._generators = {}
        # checkpoints written before the release counting held only the generators
        generators = state.get("generators", state if "sent" not in state else {})
        for d, s in dict(generators).items():  # type: ignore[call-overload]
            self._generator(int(d)).set_state(s)
        self._sent = {int(d): int(n) for d, n in dict(state.get("sent", {})).items()}  # type: ignore[call-overload]
        self._last_round = int(state.get("last_round", 0))  # type: ignore[call-overload]
