"""Compression of the smashed data: top-k sparsification and uniform quantization, per sample.

Both reduce what crosses the cut, and with it what an inversion attack can use:

* ``topk`` keeps the k largest-magnitude entries of each sample's activation and zeroes the rest
  -- the "top-k pruning" defense of ResSFL (Li et al., "ResSFL: A resistance transfer framework
  for defending model inversion attack in split federated learning", CVPR 2022; its sweep keeps
  50-70 %), the activation analogue of gradient sparsification (VFLAIR, AIJack; docs/privacy.md
  section 1). The gradient flows back through the kept entries only.
* ``quantize`` maps each sample's activation to ``2**bits`` evenly spaced levels between its own
  minimum and maximum (min-max uniform quantization), the quantization/compression defense
  listed in docs/privacy.md's feature table (row 7) and evaluated as "gradient compression" against
  label inference by Liu & Lyu (similarity-based label inference, IEEE TIFS). Rounding has no
  useful gradient, so the backward pass uses the straight-through estimator (Bengio, Leonard &
  Courville, "Estimating or propagating gradients through stochastic neurons", 2013): the
  gradient passes unchanged.

Neither draws randomness or needs :meth:`~hasfl_sec.defenses.base.Defense.prepare`; ratio 1 and
32 bits (or null) return the smashed tensor itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .base import Defense
from .params import check_fields, count, fraction
from .registry import DEFENSES

__all__ = ["TopK", "Quantize", "topk_per_sample", "quantize_per_sample"]


def topk_per_sample(a: torch.Tensor, ratio: float) -> torch.Tensor:
    """``a`` [b, ...] with all but the ``ceil(ratio * d)`` largest-magnitude entries of each sample
    set to zero (d entries per sample; at least one is kept). Differentiable: the gradient is the
    incoming one at kept entries and zero elsewhere."""
    flat = a.flatten(1)
    d = flat.shape[1]
    k = min(d, max(1, math.ceil(ratio * d - 1e-9)))  # the tolerance keeps 0.7 * 10 at 7, not 8
    if k == d:
        return a
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep.scatter_(1, flat.abs().topk(k, dim=1).indices, True)
    return (flat * keep).view_as(a)


def quantize_per_sample(a: torch.Tensor, bits: int) -> torch.Tensor:
    """``a`` [b, ...] with each sample rounded to ``2**bits`` levels spanning its own [min, max].

    The forward value is exactly the quantized tensor; the backward pass is the identity
    (straight-through estimator). A constant sample is returned unchanged.
    """
    flat = a.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    step = (hi - lo) / (2 ** bits - 1)
    safe = torch.where(step > 0, step, torch.ones_like(step))  # a constant sample has lo == hi
    q = torch.where(step > 0, torch.round((flat - lo) / safe) * safe + lo, flat)
    # value q exactly (x - x == 0 in floating point), gradient d out / d a = 1
    out = q.detach() + (flat - flat.detach())
    return out.view_as(a)


@DEFENSES.register("topk", help="keep each sample's k largest-magnitude smashed entries (ResSFL's top-k pruning)")
class TopK(Defense):
    """Top-k sparsification of the smashed data each device sends (ResSFL, CVPR 2022).

    Params:
        ratio: fraction of each sample's entries kept, in (0, 1]; 1 is exactly no defense.

    Example::

        --set defense.use=[topk] --set defense.topk.ratio=0.5
    """

    @dataclass
    class Params:
        ratio: float = fraction(0.5, one=True)  # a kept fraction: ResSFL (CVPR 2022) sweeps 0.5-0.7

    name = "topk"

    def __init__(self, params: "TopK.Params | None" = None) -> None:
        self.params = params if params is not None else self.Params()
        check_fields(self.params, "defense.topk.")  # the ranges declared in Params

    def is_identity(self) -> bool:
        return self.params.ratio >= 1

    def transform_smashed(self, smashed: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        if self.is_identity():
            return smashed
        return topk_per_sample(smashed, float(self.params.ratio))

    def transform_smashed_group(self, smashed: torch.Tensor, *, round: int, devices: Sequence[int]) -> torch.Tensor:
        if self.is_identity():
            return smashed
        # per sample, so a group's [k, b, ...] is transformed as k * b samples in one call
        return topk_per_sample(smashed.flatten(0, 1), float(self.params.ratio)).view_as(smashed)

    def report(self) -> dict[str, float]:
        return {"ratio": float(self.params.ratio)}


@DEFENSES.register("quantize", help="min-max uniform quantization of each sample's smashed data (straight-through)")
class Quantize(Defense):
    """Uniform ``bits``-bit quantization of each sample's smashed data, straight-through backward.

    Params:
        bits: bits per entry, an integer in 1..32; 32 or null is exactly no defense.

    Example::

        --set defense.use=[quantize] --set defense.quantize.bits=4
    """

    @dataclass
    class Params:
        # 1 bit is the coarsest (two levels); the float32 activations hold no more than 32
        bits: int | None = count(8, high=32, note="or null (32 and null: no quantization)")

    name = "quantize"

    def __init__(self, params: "Quantize.Params | None" = None) -> None:
        self.params = params if params is not None else self.Params()
        check_fields(self.params, "defense.quantize.")  # the ranges declared in Params

    def is_identity(self) -> bool:
        return self.params.bits is None or self.params.bits >= 32

    def transform_smashed(self, smashed: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        if self.is_identity():
            return smashed
        return quantize_per_sample(smashed, self.params.bits)

    def transform_smashed_group(self, smashed: torch.Tensor, *, round: int, devices: Sequence[int]) -> torch.Tensor:
        if self.is_identity():
            return smashed
        # per sample, so a group's [k, b, ...] is transformed as k * b samples in one call
        return quantize_per_sample(smashed.flatten(0, 1), self.params.bits).view_as(smashed)

    def report(self) -> dict[str, float]:
        return {"bits": float(self.params.bits if self.params.bits is not None else 32)}
