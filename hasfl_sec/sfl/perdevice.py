"""The reference execution: one device at a time (docs/hasfl.md section 1.2, steps 1-4).

Every device runs its client part through the module a defense may wrap (Opacus' per-sample
hooks), the edge server runs each device's non-common part, the common part runs once on all
devices' samples, and every device steps its own optimizer. This is the execution every
configuration can run (DP-SGD, Poisson sampling with empty batches, dropout on the device side)
and the one the batched execution is tested against.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..config import TrainConfig
from ..defenses.base import DefenseStack
from .execution import EXECUTIONS, Layout, RoundOutput, backward_to_cut, common_step, sample_weights

__all__ = ["PerDeviceExecution"]


@EXECUTIONS.register("per-device", help="one device at a time: the reference; runs every configuration")
class PerDeviceExecution:
    """Steps 1-4 device by device; one SGD optimizer per device and one on the edge server."""

    name = "per-device"

    def __init__(self, layout: Layout, defense: DefenseStack, train: TrainConfig,
                 x_train: torch.Tensor, y_train: torch.Tensor) -> None:
        self.layout, self.defense, self.x, self.y = layout, defense, x_train, y_train
        self.clients, self.noncommon = layout.clients, layout.noncommon
        # the device forward goes through any wrapper (Opacus' hooks); self.clients stay plain
        self.client_fwd = [defense.wrap_client(c, device=i) for i, c in enumerate(self.clients)]
        sgd = dict(lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
        self.client_opts = [defense.wrap_optimizer(torch.optim.SGD(c.parameters(), **sgd), device=i)
                            for i, c in enumerate(self.clients)]
        server_params = [p for nc in self.noncommon for p in nc.parameters()] + list(layout.common.parameters())
        self.server_opt = torch.optim.SGD(server_params, **sgd)

    @staticmethod
    def unsupported(layout: Layout, defense: DefenseStack) -> str | None:
        return None

    def round(self, batches: Sequence[torch.Tensor], t: int) -> RoundOutput:
        sizes = [len(idx) for idx in batches]
        parties = self.layout.parties
        labels, fake = zip(*[parties.labels_sent(t, i, self.y[idx]) for i, idx in enumerate(batches)])
        smashed, sent, server_in = self._device_forward(batches, t)
        per_sample = self._server_step(sizes, sent, server_in, labels, t)
        returned = self._device_backward(batches, smashed, sent, labels, fake, t)
        parties.end_round(t)
        # the mean of an empty batch is NaN: the device had no loss this round; nor had a device whose
        # batch was fake (its loss is on made-up labels and it does not learn from it)
        losses = [math.nan if f else float(v)
                  for v, f in zip(torch.stack([part.mean() for part in torch.split(per_sample, sizes)]), fake)]
        return RoundOutput(losses, [s.detach() for s in sent], returned, list(labels) if any(fake) else None)

    def _device_forward(self, batches: Sequence[torch.Tensor], t: int
                        ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Steps 1-2, device forward and uplink: per device, the smashed data (after the uplink
        defenses), the leaf the edge server receives, and its non-common part's output."""
        smashed, sent, server_in = [], [], []
        for i, idx in enumerate(batches):
            a = self.defense.transform_smashed(self.client_fwd[i](self.x[idx]), round=t, device=i)
            s = a.detach().requires_grad_(True)
            smashed.append(a)
            sent.append(s)
            server_in.append(self.noncommon[i](s))
        return smashed, sent, server_in

    def _server_step(self, sizes: Sequence[int], sent: Sequence[torch.Tensor], server_in: Sequence[torch.Tensor],
                     labels: Sequence[torch.Tensor], t: int) -> torch.Tensor:
        """Step 3, server forward/backward and the edge server's step; returns per-sample losses.

        The common part sees all devices at once; its gradient is the weighted average of
        per-device mean losses, while each device's own path (non-common part, cut gradient) gets
        the gradient of that device's loss alone. A batch the server does not learn from
        (:meth:`~.parties.Parties.task_weights`) has weight 0.
        """
        weights = self.layout.weights
        sample_w = sample_weights(sizes, self.layout.parties.task_weights(t, weights), self.x.device)
        per_sample, h_grad = common_step(self.layout.common, server_in, torch.cat(list(labels)), sample_w)
        backward_to_cut(server_in, sent, [g / w for g, w in zip(torch.split(h_grad, list(sizes)), weights)])
        self.server_opt.step()
        return per_sample

    def _device_backward(self, batches: Sequence[torch.Tensor], smashed: Sequence[torch.Tensor],
                         sent: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], fake: Sequence[bool],
                         t: int) -> list[torch.Tensor]:
        """Step 4, downlink and device backward (with any device-side loss term) and the device
        steps; returns the cut-layer gradient each device received (after the downlink defenses).
        The server's reply is the honest gradient unless a malicious behaviour replaces it.
        Monitors see each reply and the gradient it gave the device's first parameter tensor; a
        device back-propagates a fake batch's reply (its monitor reads the gradient) but does not
        step on it."""
        parties = self.layout.parties
        tensors, tensor_grads, returned = [], [], []
        for i, idx in enumerate(batches):
            reply = parties.reply(t, i, self.layout.cuts[i], sent[i].grad, sent[i], labels[i])
            g = self.defense.transform_grad(reply, round=t, device=i)
            returned.append(g)
            tensors.append(smashed[i])
            tensor_grads.append(g)
            # on a fake batch too: the monitors compare its gradient with regular ones, so both carry
            # the device's own loss term (the device does not step on a fake batch anyway)
            extra = self.defense.loss_term(self.x[idx], smashed[i], round=t, device=i)
            if extra is not None:
                tensors.append(extra)
                tensor_grads.append(torch.ones_like(extra))
        torch.autograd.backward(tensors, tensor_grads)
        if parties.monitors:
            for i, g in enumerate(returned):
                if len(batches[i]):
                    first = next(self.clients[i].parameters())
                    grad = first.grad if first.grad is not None else torch.zeros_like(first)
                    parties.received(t, i, g, fake[i], grad)
        for i, opt in enumerate(self.client_opts):
            if not fake[i]:
                opt.step()
            opt.zero_grad(set_to_none=True)
        self.server_opt.zero_grad(set_to_none=True)
        return returned

    @torch.no_grad()
    def averaged(self) -> list[torch.Tensor]:
        per_copy = [list(c.parameters()) for c in self.layout.copies]
        w = torch.tensor(self.layout.weights, device=self.x.device)
        return [torch.einsum("n,n...->...", w, torch.stack([ps[k] for ps in per_copy]))
                for k in range(len(per_copy[0]))]

    @torch.no_grad()
    def broadcast(self, averaged: Sequence[torch.Tensor]) -> None:
        for c in self.layout.copies:
            for p, avg in zip(c.parameters(), averaged):
                p.copy_(avg)

    def state_dict(self) -> dict[str, Any]:
        return {"client_opts": [o.state_dict() for o in self.client_opts], "server_opt": self.server_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for o, s in zip(self.client_opts, state["client_opts"]):
            o.load_state_dict(s)
        self.server_opt.load_state_dict(state["server_opt"])

    def close(self) -> None:
        for i, module in enumerate(self.client_fwd):
            self.defense.unwrap_client(module, device=i)
