"""The batched execution: devices that share a cut and a batch size run as one computation.

The round is the per-device reference's (:mod:`.perdevice`, docs/hasfl.md section 1.2) with the
same arithmetic arranged differently, so that simulating N devices costs about one model's
forward and backward pass instead of N small ones:

* **Storage.** Every parameter of blocks ``[0, L_c)`` is held once, stacked over devices
  (``[N, ...]``), with the devices sorted by (cut, batch size). Each device's modules keep their
  usual parameters, which are views into those stacks, so everything that reads a device's copy
  (aggregation uploads, checkpoints, the audit, tests) sees the same tensors as before.
* **Groups.** Devices with equal (cut, batch size) form a contiguous slice of the stacks (split in
  equal chunks of at most :attr:`BatchedExecution.group_samples` samples). A
  group's client parts run as one ``torch.func.vmap`` of ``torch.func.functional_call`` over its
  slice (a grouped convolution, a batched matrix product), then its non-common parts the same
  way. Bucketing by batch size keeps ragged batches exact without padding: padded samples would
  change nothing in these models but cost arithmetic, and would not be exact for a layer that
  mixes samples. A bucket of fewer than :attr:`BatchedExecution.vmap_min_devices` devices runs
  device by device on the devices' own modules (views of the same stacks), where vmap's batching
  rules would cost more than the dispatch they save.
* **Defenses** see each device's tensors through :meth:`Defense.transform_smashed_group` and
  :meth:`Defense.transform_grad_group`, whose default calls the per-device hook on each device's
  view (so noise keeps its per-device generator stream); per-sample defenses transform a whole
  group at once. A device-side loss term (NoPeek) gets each device's inputs and smashed data.
* **One optimizer.** SGD (with momentum and weight decay) is elementwise, so one SGD over the
  stacks equals one per device; the common part steps in the same optimizer.

What it cannot run (:meth:`BatchedExecution.unsupported`): a defense that wraps a device's module
or optimizer (DP-SGD with Opacus), Poisson sampling (batch sizes vary and may be zero), and
device-side blocks with randomness (dropout) or buffers (running statistics), and a party that
departs from the protocol (a malicious server's replies, a device's monitor; :mod:`.parties`). The
trainer then falls back to the per-device execution and says why in the log.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from ..config import TrainConfig
from ..defenses.base import DefenseStack, overrides
from .execution import EXECUTIONS, Layout, RoundOutput, backward_to_cut, common_step, sample_weights

__all__ = ["BatchedExecution"]


@dataclass(frozen=True)
class _Group:
    """Devices ``devices`` (stack slots ``start:stop``) with one cut and one batch size."""

    start: int
    stop: int
    cut: int
    batch: int
    devices: tuple[int, ...]

    @property
    def samples(self) -> int:
        """Samples of the group in one round."""
        return (self.stop - self.start) * self.batch


class _Rows(Sequence[torch.Tensor]):
    """Per-device rows of per-group tensors, indexed by device (copied when read)."""

    def __init__(self, groups: Sequence[_Group], tensors: Sequence[torch.Tensor]) -> None:
        self._where = {d: (t, r) for g, t in zip(groups, tensors) for r, d in enumerate(g.devices)}

    def __getitem__(self, device: int) -> torch.Tensor:  # type: ignore[override]
        tensor, row = self._where[device]
        # a copy: an observer that keeps a row must not keep (or save) the whole group with it
        return tensor[row].detach().clone()

    def __len__(self) -> int:
        return len(self._where)


def _run(blocks: Sequence[nn.Module], params: Sequence[dict[str, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """``blocks`` applied in turn to ``x`` with each block's parameters taken from ``params``."""
    for block, p in zip(blocks, params):
        x = functional_call(block, p, (x,))
    return x


@EXECUTIONS.register("batched", help="devices sharing (cut, batch size) as one vmap over stacked parameters")
class BatchedExecution:
    """Steps 1-4 group by group over stacked per-device parameters (see the module docstring)."""

    name = "batched"
    #: Samples per vectorized group at most: larger buckets are split into equal chunks. Measured on
    #: hecnn (benchmarks/RESULTS.md, issue 11): a grouped convolution over a few hundred samples is
    #: fastest per device; over thousands it falls out of cache and slows down by up to 2.5x.
    group_samples: int = 256
    #: Devices a bucket needs to run vectorized. vmap's batching rules for max-pooling and
    #: GroupNorm with per-device weights copy data, which only pays off against the per-device
    #: dispatch it saves when several devices share the call (benchmarks/RESULTS.md, issue 11).
    vmap_min_devices: int = 4

    def __init__(self, layout: Layout, defense: DefenseStack, train: TrainConfig,
                 x_train: torch.Tensor, y_train: torch.Tensor) -> None:
        self.layout, self.defense, self.x, self.y = layout, defense, x_train, y_train
        n, cuts, sizes = layout.n, layout.cuts, layout.batch_sizes
        order = sorted(range(n), key=lambda i: (cuts[i], sizes[i], i))
        self.groups = self._groups(order, cuts, sizes)
        self.order = torch.tensor(order, device=x_train.device)
        self.slot_of = torch.argsort(self.order)  # device -> slot
        self.blocks = list(copy.deepcopy(layout.copies[0]))  # structure only; parameters come from the stacks
        self.stacks = self._stack(layout.copies, order)
        weights = [layout.weights[i] for i in order]
        self.sample_w = sample_weights([sizes[i] for i in order], weights, x_train.device)
        self.row_w = torch.tensor(weights, device=x_train.device)
        self.weights = torch.tensor(layout.weights, device=x_train.device)
        # each group's rows are a leaf of their own: the gradient of a slice of one big leaf would be
        # materialised at the stack's full size, once per group and parameter
        # (a group of one device runs its own modules, whose parameters are views of the same rows:
        # vmap and functional_call would only add overhead; it has no leaves)
        self.leaves = [[{k: s[g.start:g.stop].requires_grad_(True) for k, s in block.items()} for block in self.stacks]
                       if len(g.devices) > 1 else [] for g in self.groups]
        clients, noncommon = layout.clients, layout.noncommon
        self.modules = {g.devices[0]: (clients[g.devices[0]], noncommon[g.devices[0]])
                        for g in self.groups if len(g.devices) == 1}
        params = [v for group in self.leaves for block in group for v in block.values()]
        params += [p for d in self.modules for p in layout.copies[d].parameters()]
        params += list(layout.common.parameters())
        self.opt = torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
        self.loss_terms = any(overrides(d, "loss_term") for d in defense.defenses)

    def _groups(self, order: Sequence[int], cuts: Sequence[int], sizes: Sequence[int]) -> list[_Group]:
        """Buckets of equal (cut, batch size) in slot order, split into chunks of at most
        :attr:`group_samples` samples; a bucket of fewer than :attr:`vmap_min_devices` devices
        runs device by device (groups of one)."""
        groups, start = [], 0
        for (cut, b), members in itertools.groupby(order, key=lambda i: (cuts[i], sizes[i])):
            members = list(members)
            small = len(members) < self.vmap_min_devices
            chunks = len(members) if small else math.ceil(len(members) * b / self.group_samples)
            for devices in (tuple(int(d) for d in c) for c in np.array_split(members, chunks)):
                groups.append(_Group(start, start + len(devices), cut, b, devices))
                start += len(devices)
        return groups

    @staticmethod
    def unsupported(layout: Layout, defense: DefenseStack) -> str | None:
        if not layout.parties.honest:
            return f"a party departs from the protocol ({layout.parties.describe()}), device by device"
        for d in defense.defenses:
            for hook in ("wrap_client", "wrap_optimizer"):
                if overrides(d, hook):
                    return f"defense {d.name} wraps each device's {hook.split('_')[1]}"
        if layout.sample_rates is not None:
            return "Poisson sampling gives devices batches of varying, possibly zero, size"
        for j, block in enumerate(layout.copies[0]):
            for m in block.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
                    return f"device-side block {j} has dropout (randomness per device)"
            if any(True for _ in block.buffers()):
                return f"device-side block {j} has buffers (statistics updated in place)"
        return None

    @staticmethod
    def _stack(copies: Sequence[nn.Sequential], order: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Stack every parameter over devices (slot order) and make each device's parameter a view
        of its row, so the modules and the stacks are one storage."""
        stacks = []
        for j in range(len(copies[0])):
            block_stacks = {}
            for name, _ in copies[0][j].named_parameters():
                rows = [copies[i][j].get_parameter(name).detach() for i in order]
                stacked = torch.stack(rows)
                for slot, i in enumerate(order):
                    owner, _, leaf = name.rpartition(".")
                    module = copies[i][j].get_submodule(owner) if owner else copies[i][j]
                    setattr(module, leaf, nn.Parameter(stacked[slot]))
                block_stacks[name] = stacked
            stacks.append(block_stacks)
        return stacks

    def round(self, batches: Sequence[torch.Tensor], t: int) -> RoundOutput:
        idx = [torch.stack([batches[d] for d in g.devices]) for g in self.groups]  # [k, b] per group
        smashed, sent, server_in = self._forward(idx, t)
        per_sample = self._server_step(idx, sent, server_in)
        returned = self._device_backward(idx, smashed, sent, t)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        losses = torch.empty(self.layout.n, device=self.x.device)
        for g, group_losses in zip(self.groups, torch.split(per_sample, [g.samples for g in self.groups])):
            losses[self.order[g.start:g.stop]] = group_losses.view(-1, g.batch).mean(1)
        return RoundOutput(losses.tolist(), _Rows(self.groups, sent), _Rows(self.groups, returned))

    def _forward(self, idx: Sequence[torch.Tensor], t: int
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Steps 1-2 per group: client parts, uplink defenses, non-common parts. Returns each
        group's smashed data, the leaf the edge server receives, and the non-common output."""
        l_c = self.layout.l_c
        smashed, sent, server_in = [], [], []
        for g, params, ix in zip(self.groups, self.leaves, idx):
            single = self.modules.get(g.devices[0])  # only groups of one device have modules here
            if single:
                a = single[0](self.x[ix[0]]).unsqueeze(0)
            else:
                a = vmap(partial(_run, self.blocks[:g.cut]))(params[:g.cut], self.x[ix])
            a = self.defense.transform_smashed_group(a, round=t, devices=g.devices)
            s = a.detach().requires_grad_(True)
            if g.cut == l_c:
                h = s
            elif single:
                h = single[1](s[0]).unsqueeze(0)
            else:
                h = vmap(partial(_run, self.blocks[g.cut:l_c]))(params[g.cut:l_c], s)
            smashed.append(a)
            sent.append(s)
            server_in.append(h)
        return smashed, sent, server_in

    def _server_step(self, idx: Sequence[torch.Tensor], sent: Sequence[torch.Tensor],
                     server_in: Sequence[torch.Tensor]) -> torch.Tensor:
        """Step 3: the common part on every sample at once; each device's non-common part and
        cut-layer gradient get the gradient of that device's own loss. Returns per-sample losses."""
        labels = torch.cat([self.y[ix].flatten(0, 1) for ix in idx])  # [devices, b, ...] -> [devices * b, ...]
        per_sample, h_grad = common_step(self.layout.common, [h.flatten(0, 1) for h in server_in], labels,
                                         self.sample_w)
        grads = [gr.view(h.shape) / self.row_w[g.start:g.stop].view(-1, *([1] * (h.dim() - 1)))
                 for g, h, gr in zip(self.groups, server_in, torch.split(h_grad, [g.samples for g in self.groups]))]
        backward_to_cut(server_in, sent, grads)
        return per_sample

    def _device_backward(self, idx: Sequence[torch.Tensor], smashed: Sequence[torch.Tensor],
                         sent: Sequence[torch.Tensor], t: int) -> list[torch.Tensor]:
        """Step 4: downlink defenses, any device-side loss term, back-propagation through every
        client part; returns each group's returned cut-layer gradients."""
        tensors, tensor_grads, returned = [], [], []
        for g, ix, a, s in zip(self.groups, idx, smashed, sent):
            r = self.defense.transform_grad_group(s.grad, round=t, devices=g.devices)
            returned.append(r)
            tensors.append(a)
            tensor_grads.append(r)
            if self.loss_terms:  # unbind: one backward op for the group, not one per indexed view
                for rows, a_row, d in zip(ix, a.unbind(), g.devices):
                    extra = self.defense.loss_term(self.x[rows], a_row, round=t, device=d)
                    if extra is not None:
                        tensors.append(extra)
                        tensor_grads.append(torch.ones_like(extra))
        torch.autograd.backward(tensors, tensor_grads)
        return returned

    @torch.no_grad()
    def averaged(self) -> list[torch.Tensor]:
        # rows gathered back into device order, so the sum runs in the reference's order
        return [torch.einsum("n,n...->...", self.weights, s.index_select(0, self.slot_of))
                for block in self.stacks for s in block.values()]

    @torch.no_grad()
    def broadcast(self, averaged: Sequence[torch.Tensor]) -> None:
        for s, avg in zip((s for block in self.stacks for s in block.values()), averaged):
            s.copy_(avg.unsqueeze(0).expand_as(s))

    def state_dict(self) -> dict[str, Any]:
        return {"batched_opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["batched_opt"])

    def close(self) -> None:
        """Nothing is wrapped; the device modules keep their views of the stacks."""
