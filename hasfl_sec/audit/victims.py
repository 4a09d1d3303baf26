"""What the audit attacks: one device's exchanges, their ground truth, and the weights behind them.

A :class:`Trace` holds, for one device at one cut, the rounds it was observed in. Each
:class:`RoundView` keeps the exchange the edge server saw, the ground truth behind it (for the
metrics only), and copies of the client part and of that device's server path *as they were
during the round*: white-box attacks need the weights in use when the smashed data was made, and
a sybil device joins the same split step. Uploads at the ends of aggregation periods are kept by
round.

Two sources make traces:

* :func:`replay` continues a real training run (from its checkpoint) for a few rounds with the
  cut-layer tap attached: the devices, cuts, batch sizes, data partitions and defenses of the run.
* :func:`simulate` runs one device's split training at any cut of a whole model (a run's
  aggregated model at a cut its plan did not use, or a bare model trained centrally), with the
  trainer's update rule (SGD on the client part with the returned cut gradient, SGD on the server
  part, upload every I rounds) and the run's defense on what crosses the cut (smashed data up,
  cut-layer gradient down), so that a simulated trace shows the attacker what a defended device
  would send. Defenses that act elsewhere (a wrapped optimizer such as DP-SGD, a device-side loss
  term such as NoPeek's) are not simulated: they change how the model was trained, which a
  simulated device's few steps on an already trained model would not reproduce anyway.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..defenses.base import Defense
from ..sfl.protocol import Exchange, GroundTruth, Upload
from ..sfl.tap import CutLayerTap, TapSelector
from ..sfl.trainer import SFLTrainer

__all__ = ["RoundView", "Trace", "replay", "simulate"]

logger = logging.getLogger(__name__)


@dataclass
class RoundView:
    """One observed round of one device."""

    exchange: Exchange
    truth: GroundTruth
    client: nn.Module
    server: nn.Module

    @property
    def round(self) -> int:
        """The training round (from 1)."""
        return self.exchange.round


@dataclass
class Trace:
    """One device's observed rounds at one cut.

    Attributes:
        device, cut, batch: the victim device, its cut and batch size.
        source: ``"replay"`` (the run's own training continued) or ``"simulated"``.
        agg_interval: I, rounds per aggregation period.
        trained_rounds: rounds the model had been trained for before the first observed round.
        rounds: the observed rounds in order.
        uploads: the device's client part as uploaded at each period end, by round.
    """

    device: int
    cut: int
    batch: int
    source: str
    agg_interval: int
    trained_rounds: int
    rounds: list[RoundView] = field(default_factory=list)
    uploads: dict[int, Upload] = field(default_factory=dict)

    def periods(self) -> list[list[RoundView]]:
        """Complete aggregation periods: I consecutive rounds ending in a round with an upload."""
        out, current = [], []
        for view in self.rounds:
            if (view.round - 1) % self.agg_interval == 0:
                current = []
            current.append(view)
            if view.round in self.uploads and len(current) == self.agg_interval:
                out.append(current)
        return out

    @property
    def labels_shared(self) -> bool:
        """True if the edge server received labels with the smashed data."""
        return all(v.exchange.labels is not None for v in self.rounds)


def _frozen_copy(module: nn.Module) -> nn.Module:
    out = copy.deepcopy(module)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def replay(trainer: SFLTrainer, devices: Sequence[int], rounds: int) -> list[Trace]:
    """Continue ``trainer`` for ``rounds`` rounds (a multiple of I) and record ``devices``.

    If the trainer is not right after an aggregation, it first trains unrecorded up to the next
    one, so every recorded period is complete. The trainer is advanced in place.
    """
    interval = trainer.cfg.agg_interval
    if rounds < 1 or rounds % interval:
        raise ValueError(f"replay rounds must be a positive multiple of I = {interval}, got {rounds}")
    while trainer.round % interval:
        trainer.step()
    first = trainer.round + 1
    traces = {d: Trace(d, trainer.cuts[d], trainer.batch_sizes[d], "replay", interval, trainer.round) for d in devices}
    tap = CutLayerTap(TapSelector(rounds=set(range(first, first + rounds)), devices=set(devices),
                                  max_records=rounds * len(devices)))
    with tap.attached(trainer):
        for _ in range(rounds):
            t = trainer.round + 1
            common = _frozen_copy(trainer.common)
            views = {d: (_frozen_copy(trainer.clients[d]), nn.Sequential(*_frozen_copy(trainer.noncommon[d]), *common))
                     for d in devices}
            trainer.step()
            for d in devices:
                key = (t, d, 0)
                traces[d].rounds.append(RoundView(tap.exchanges[key], tap.truths[key], *views[d]))
    for upload in tap.uploads:
        traces[upload.device].uploads[upload.round] = upload
    return [traces[d] for d in devices]


def simulate(blocks: Sequence[nn.Module], cut: int, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
             batch: int, train: TrainConfig, *, trained_rounds: int = 0, device_id: int = 0,
             defense: Defense | None = None) -> Trace:
    """One device's split training at ``cut`` of the model ``blocks`` on the samples ``x, y``.

    ``x`` holds ``rounds * batch`` samples, consumed in order, ``batch`` per round; ``rounds``
    must be a multiple of I. The device trains the client part ``blocks[:cut]`` and the server the
    rest, both with the run's SGD settings; the model given is not modified. With
    ``train.share_labels`` false the recorded exchanges carry no labels. ``defense`` transforms
    the smashed data the device sends and the gradient it receives, as the trainer does (the
    records hold what crossed the cut: defended smashed data, transformed gradient).
    """
    interval = train.agg_interval
    n_rounds = len(x) // batch
    if n_rounds < 1 or n_rounds % interval or len(x) != n_rounds * batch:
        raise ValueError(f"simulate needs a multiple of I * batch = {interval * batch} samples, got {len(x)}")
    client = copy.deepcopy(nn.Sequential(*blocks[:cut])).train()
    server = copy.deepcopy(nn.Sequential(*blocks[cut:])).train()
    sgd = dict(lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    client_opt = torch.optim.SGD(client.parameters(), **sgd)
    server_opt = torch.optim.SGD(server.parameters(), **sgd)
    trace = Trace(device_id, cut, batch, "simulated", interval, trained_rounds)
    for r in range(n_rounds):
        t = trained_rounds + r + 1
        sl = slice(r * batch, (r + 1) * batch)
        xb, yb = x[sl], y[sl]
        client_view, server_view = _frozen_copy(client), _frozen_copy(server)
        a = client(xb)
        if defense is not None:
            a = defense.transform_smashed(a, round=t, device=device_id)
        s = a.detach().requires_grad_(True)
        F.cross_entropy(server(s), yb).backward()
        g = s.grad.detach()
        if defense is not None:
            g = defense.transform_grad(g, round=t, device=device_id).detach()
        a.backward(g)
        client_opt.step()
        server_opt.step()
        client_opt.zero_grad(set_to_none=True)
        server_opt.zero_grad(set_to_none=True)
        ex = Exchange(round=t, device=device_id, step=0, cut=cut, smashed=s.detach().cpu(),
                      labels=yb.cpu() if train.share_labels else None, grad=g.cpu())
        truth = GroundTruth(t, device_id, 0, xb.cpu(), yb.cpu(), index[sl].cpu())
        trace.rounds.append(RoundView(ex, truth, client_view, server_view))
        if t % interval == 0:
            state = {k: v.detach().cpu().clone() for k, v in client.state_dict().items()}
            trace.uploads[t] = Upload(t, device_id, cut, state)
    return trace
