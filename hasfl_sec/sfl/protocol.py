"""What crosses the cut: the records the tap keeps and attacks may later observe.

Three record types, all detached CPU tensors:

* :class:`Exchange` -- one split-training step of one device: the smashed data it sent up, its
  labels (HASFL sends labels to the edge server), and the cut-layer gradient the server returned.
* :class:`GroundTruth` -- the raw inputs behind an exchange. Only the audit runner holds these;
  they never reach an attack (Breaching's separation of ``true_user_data``).
* :class:`Upload` -- a client-side sub-model as uploaded to the fed server at aggregation.

Records are keyed by ``(round, device, step)``: ``round`` counts from 1, ``device`` from 0, and
``step`` is the mini-batch index inside the round (HASFL takes one step per round, so 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Exchange", "GroundTruth", "Upload", "Key"]

Key = tuple[int, int, int]


@dataclass(frozen=True)
class Exchange:
    """One device's step as the edge server sees it.

    Attributes:
        round, device, step: the key.
        cut: the device's cut c_i (number of blocks on the device).
        smashed: activations sent up, shape ``[b_i, ...]`` (after any uplink defense).
        labels: labels sent with them, ``[b_i]``.
        grad: gradient of the device's loss w.r.t. ``smashed`` sent back (after downlink defenses).
        meta: extra floats (for example the device's loss).
    """

    round: int
    device: int
    step: int
    cut: int
    smashed: torch.Tensor
    labels: torch.Tensor | None
    grad: torch.Tensor | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        """``(round, device, step)``."""
        return (self.round, self.device, self.step)


@dataclass(frozen=True)
class GroundTruth:
    """The private inputs of one exchange and their dataset indices (runner only)."""

    round: int
    device: int
    step: int
    inputs: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor

    @property
    def key(self) -> Key:
        """``(round, device, step)``."""
        return (self.round, self.device, self.step)


@dataclass(frozen=True)
class Upload:
    """A device's client-side sub-model (blocks ``[0, cut)``) as uploaded at aggregation."""

    round: int
    device: int
    cut: int
    state: dict[str, torch.Tensor]
