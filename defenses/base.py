"""The defense protocol: four optional hook points, all identity by default.

Before training, :meth:`Defense.prepare` receives a :class:`DefenseContext` (plan, data sizes,
schedule, model), for defenses whose parameters depend on them (DP-SGD's sampling rate and
accounting). :meth:`Defense.transform_smashed` must work without ``prepare`` (an adaptive
attacker simulates the defense on its own data).

A defense may use any subset of them (STYLE.md 7.4: Opacus-style wrapping, NoPeek-style loss
terms, Flower-mod-style transforms of what crosses the cut):

* :meth:`Defense.wrap_optimizer` -- setup time: wrap a device's client-side optimizer
  (for example DP-SGD).
* :meth:`Defense.transform_smashed` -- on the device, on the way up: change the smashed data
  before it is sent (differentiable; the device back-propagates through it).
* :meth:`Defense.transform_grad` -- on the way down: change the cut-layer gradient before the
  device receives it.
* :meth:`Defense.loss_term` -- an extra device-side loss on (inputs, smashed), back-propagated
  through the client part together with the returned gradient.

The trainer never branches on a defense's type; it calls a :class:`DefenseStack` that folds every
configured defense in order (the last transform is closest to the wire).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

__all__ = ["Defense", "DefenseContext", "DefenseStack"]


@dataclass(frozen=True)
class DefenseContext:
    """What a defense may need to know about the run before training starts.

    Attributes:
        batch_sizes, cuts: each device's b_i and c_i under the plan in effect.
        part_sizes: each device's number of training samples |D_i|.
        rounds: total training rounds; agg_interval: I.
        model: the split model (before any device copy is made).
    """

    batch_sizes: tuple[int, ...]
    cuts: tuple[int, ...]
    part_sizes: tuple[int, ...]
    rounds: int
    agg_interval: int
    model: Any = None

    @property
    def num_devices(self) -> int:
        """N."""
        return len(self.batch_sizes)


class Defense:
    """Base class; subclasses override only the hooks they need.

    A registered defense has a ``Params`` dataclass (its config section) and is built as
    ``Defense(params)``.
    """

    name: str = "identity"

    def prepare(self, context: DefenseContext) -> None:
        """Called once before training and again after a re-plan (no-op by default)."""

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, *, device: int) -> torch.optim.Optimizer:
        """Return the optimizer device ``device`` will step (identity by default)."""
        return optimizer

    def transform_smashed(self, smashed: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        """Return what the device sends instead of ``smashed`` (identity by default)."""
        return smashed

    def transform_grad(self, grad: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        """Return the gradient the device receives instead of ``grad`` (identity by default)."""
        return grad

    def loss_term(
        self, inputs: torch.Tensor, smashed: torch.Tensor, *, round: int, device: int
    ) -> torch.Tensor | None:
        """An extra scalar loss for the device's client part, or None (default)."""
        return None

    def report(self) -> dict[str, float]:
        """Figures to record (for example epsilon); empty by default."""
        return {}

    def state_dict(self) -> dict[str, object]:
        """State to checkpoint (for example a noise generator); empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned."""


class DefenseStack(Defense):
    """Several defenses applied in order, behaving as one."""

    name = "stack"

    def __init__(self, defenses: Sequence[Defense] = ()) -> None:
        self.defenses = list(defenses)

    def prepare(self, context: DefenseContext) -> None:
        for d in self.defenses:
            d.prepare(context)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, *, device: int) -> torch.optim.Optimizer:
        for d in self.defenses:
            optimizer = d.wrap_optimizer(optimizer, device=device)
        return optimizer

    def transform_smashed(self, smashed: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        for d in self.defenses:
            smashed = d.transform_smashed(smashed, round=round, device=device)
        return smashed

    def transform_grad(self, grad: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        # The gradient travels back down the stack, so the defense nearest the wire sees it first.
        for d in reversed(self.defenses):
            grad = d.transform_grad(grad, round=round, device=device)
        return grad

    def loss_term(
        self, inputs: torch.Tensor, smashed: torch.Tensor, *, round: int, device: int
    ) -> torch.Tensor | None:
        terms = [d.loss_term(inputs, smashed, round=round, device=device) for d in self.defenses]
        terms = [t for t in terms if t is not None]
        return torch.stack(terms).sum() if terms else None

    def report(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for d in self.defenses:
            out.update({f"{d.name}.{k}": v for k, v in d.report().items()})
        return out

    def state_dict(self) -> dict[str, object]:
        return {str(i): d.state_dict() for i, d in enumerate(self.defenses)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        for i, d in enumerate(self.defenses):
            d.load_state_dict(state.get(str(i), {}))  # type: ignore[arg-type]
