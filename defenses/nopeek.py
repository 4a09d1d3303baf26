"""NoPeek: a distance-correlation penalty between a device's inputs and the smashed data it sends.

Vepakomma, Singh, Gupta & Raskar, "NoPeek: Information leakage reduction to share activations in
distributed deep learning", ICDM Workshops 2020: the client part is trained on
``weight * dCor(X, Z)`` plus the task loss, where X is the device's input batch and Z what it
sends, so that the activations carry less of the raw input while staying useful for the task.
dCor is the sample distance correlation of Szekely, Rizzo & Bakirov (2007) (the biased
V-statistic, not squared, as in the paper), computed per device batch by
:func:`hasfl_sec.metrics.dependence.distance_correlation_torch` -- the same code as the dCor
leakage metric. Titcombe et al. (ICLR-W 2021) combine it with Laplace noise on the smashed data.

The penalty couples the samples of a batch, so NoPeek cannot be combined with DP-SGD (whose
per-sample clipping would no longer bound a sample's influence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics.dependence import distance_correlation_torch
from .base import Defense
from .params import check_fields, nonnegative
from .registry import DEFENSES

__all__ = ["NoPeek", "nopeek_loss"]


def nopeek_loss(inputs: torch.Tensor, smashed: torch.Tensor) -> torch.Tensor:
    """dCor(inputs, smashed) of one batch (biased V-statistic, not squared), differentiable in
    ``smashed``; the inputs are a constant."""
    return distance_correlation_torch(inputs.detach().to(smashed.dtype), smashed, unbiased=False, squared=False)


@DEFENSES.register("nopeek", help="distance-correlation penalty between inputs and smashed data (Vepakomma et al. 2020)")
class NoPeek(Defense):
    """A device-side loss term ``weight * dCor(inputs, smashed)`` per device batch (NoPeek, 2020).

    Params:
        weight: the penalty's weight alpha (>= 0); 0 is exactly no defense. ResSFL's sweep uses
            1.0 to 2.0.

    A batch of fewer than two samples has no distance correlation and adds no term.

    Example::

        --set defense.use=[nopeek] --set defense.nopeek.weight=1.5
    """

    @dataclass
    class Params:
        weight: float = nonnegative(1.0)  # the alpha of Vepakomma et al. (2020); 0 is no defense

    name = "nopeek"

    def __init__(self, params: "NoPeek.Params | None" = None) -> None:
        self.params = params if params is not None else self.Params()
        check_fields(self.params, "defense.nopeek.")  # the ranges declared in Params

    def loss_term(
        self, inputs: torch.Tensor, smashed: torch.Tensor, *, round: int, device: int
    ) -> torch.Tensor | None:
        if self.params.weight == 0 or len(smashed) < 2:
            return None
        return self.params.weight * nopeek_loss(inputs, smashed)

    def report(self) -> dict[str, float]:
        return {"weight": float(self.params.weight)}
