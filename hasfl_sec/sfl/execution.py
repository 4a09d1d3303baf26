"""How a round's arithmetic is executed: the layout of one plan and the execution registry.

The trainer (:mod:`.trainer`) owns the protocol -- sampling, observers, aggregation schedule,
evaluation, checkpoints -- and hands the arithmetic of steps 1-4 of a round (docs/hasfl.md section
1.2) to an *execution*, chosen by ``train.execution``:

* ``per-device`` (:mod:`.perdevice`) -- the reference: every device's client part, non-common part
  and backward pass one device at a time, one optimizer per device.
* ``batched`` (:mod:`.batched`) -- devices that share a cut and a batch size run as one vectorized
  computation over their stacked parameters (``torch.func.vmap``), one optimizer step for all.

Both compute the same round; the tests hold them equal within float tolerance (docs/design.md
section 5). An execution that cannot run a configuration says why (:meth:`Execution.unsupported`)
and the trainer falls back to ``per-device``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..defenses.base import DefenseStack
from ..registry import Registry
from .parties import HONEST, Parties
from .plan import Plan

__all__ = ["EXECUTIONS", "FALLBACK", "Execution", "Layout", "RoundOutput", "backward_to_cut", "common_step",
           "sample_weights"]

#: The execution every configuration can run.
FALLBACK = "per-device"


@dataclass
class Layout:
    """One plan's arrangement of the model: N copies of blocks ``[0, L_c)`` and one common part.

    ``copies[i][:cuts[i]]`` is device i's client part, ``copies[i][cuts[i]:]`` the non-common
    blocks the edge server runs for it. ``weights`` are the aggregation weights; ``sample_rates``
    the devices' Poisson sampling rates, or None for fixed-size batches; ``parties`` the edge
    server's behaviour and the devices' monitors (:mod:`.parties`; honest by default).
    """

    plan: Plan
    copies: list[nn.Sequential]
    common: nn.Sequential
    weights: list[float]
    sample_rates: tuple[float, ...] | None
    parties: Parties = HONEST

    @property
    def n(self) -> int:
        """N, the number of devices."""
        return self.plan.num_devices

    @property
    def l_c(self) -> int:
        """L_c, the deepest cut."""
        return self.plan.deepest_cut

    @property
    def cuts(self) -> list[int]:
        return list(self.plan.cuts)

    @property
    def batch_sizes(self) -> list[int]:
        return list(self.plan.batch_sizes)

    @property
    def clients(self) -> list[nn.Sequential]:
        """Each device's client part (sharing modules with ``copies``)."""
        return [c[:cut] for c, cut in zip(self.copies, self.plan.cuts)]

    @property
    def noncommon(self) -> list[nn.Sequential]:
        """Each device's non-common part on the edge server (sharing modules with ``copies``)."""
        return [c[cut:] for c, cut in zip(self.copies, self.plan.cuts)]


@dataclass
class RoundOutput:
    """What one round's arithmetic hands back to the trainer, indexed by device.

    ``sent[i]`` is what device i sent (after the uplink defenses) and ``returned[i]`` the cut-layer
    gradient it received (after the downlink defenses); ``labels`` what the server received, when
    a device's monitor sent made-up labels (else the true ones were sent). Reading them is for observers: the batched
    execution copies a device's rows out of its group when they are read.
    """

    losses: list[float]
    sent: Sequence[torch.Tensor]
    returned: Sequence[torch.Tensor]
    #: the labels the edge server received, where a device's monitor sent others (a fake batch)
    labels: Sequence[torch.Tensor] | None = None


class Execution(Protocol):
    """The arithmetic of a round under one :class:`Layout` (see the module docstring)."""

    name: str

    @staticmethod
    def unsupported(layout: Layout, defense: DefenseStack) -> str | None:
        """Why this execution cannot run ``layout`` with ``defense``, or None if it can."""

    def round(self, batches: Sequence[torch.Tensor], t: int) -> RoundOutput:
        """Steps 1-4 of round ``t`` on each device's sample indices; every optimizer steps."""

    def averaged(self) -> list[torch.Tensor]:
        """The weighted average over devices of every parameter of blocks [0, L_c), in the order of
        ``copies[0].parameters()``."""

    def broadcast(self, averaged: Sequence[torch.Tensor]) -> None:
        """Set every device's copy of blocks [0, L_c) to ``averaged``."""

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state to checkpoint."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""

    def close(self) -> None:
        """Undo what the execution attached to the layout (wrappers) before it is laid out again."""


#: Executions by name (the ``train.execution`` setting).
EXECUTIONS: Registry[Any] = Registry("execution", "train.execution")


def sample_weights(sizes: Sequence[int], weights: Sequence[float], device: torch.device) -> torch.Tensor:
    """Per-sample loss weights w_i / b_i, so the common part's gradient is the weighted average of
    the devices' mean losses (an empty batch has none)."""
    return torch.cat([torch.full((b,), w / max(b, 1), device=device) for b, w in zip(sizes, weights)])


def common_step(common: nn.Module, parts: Sequence[torch.Tensor], labels: torch.Tensor,
                sample_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 3 on the common part: forward on every part's samples at once, back-propagate the
    weighted loss. Returns the per-sample losses (detached) and the gradient with respect to the
    concatenated input; the caller steps the optimizer."""
    h = torch.cat([x.detach() for x in parts]).requires_grad_(True)
    per_sample = F.cross_entropy(common(h), labels, reduction="none")
    if per_sample.dim() > 1:  # next-token targets [b, T]: a sequence's loss is its mean over positions
        per_sample = per_sample.flatten(1).mean(1)
    (per_sample * sample_w).sum().backward()
    return per_sample.detach(), h.grad


def backward_to_cut(server_in: Sequence[torch.Tensor], sent: Sequence[torch.Tensor],
                    grads: Sequence[torch.Tensor]) -> None:
    """Back-propagate each part's gradient at the common part's input through its non-common
    blocks down to the leaf ``sent`` the edge server received (where there are no non-common
    blocks, ``server_in`` is that leaf and the gradient is its cut-layer gradient)."""
    through = [(h, g) for h, s, g in zip(server_in, sent, grads) if h is not s]
    for h, s, g in zip(server_in, sent, grads):
        if h is s:
            s.grad = g
    if through:
        torch.autograd.backward([h for h, _ in through], [g for _, g in through])
