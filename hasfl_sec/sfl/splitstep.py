"""One device's split step outside the trainer: the cut-layer gradient a batch gets back.

The audit runner uses it to simulate what a device would exchange with the edge server at any cut
of a model (the ``--cuts all`` and bare-model audits), and to give a sybil device's labelled
batches their cut-layer gradients (similarity-based label inference). It reproduces the trainer's
step 3: the server returns the gradient of the device's mean cross-entropy loss with respect to
the smashed data it received.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["cut_gradient"]


def cut_gradient(client: nn.Module, server: nn.Module, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(smashed, grad)`` for a batch: ``client(x)`` and d mean CE(server(a), y) / d a.

    Neither module's parameters receive gradients; both tensors are detached.
    """
    with torch.no_grad():
        a = client(x)
    a = a.detach().requires_grad_(True)
    loss = F.cross_entropy(server(a), y)
    (grad,) = torch.autograd.grad(loss, a)
    return a.detach(), grad.detach()
