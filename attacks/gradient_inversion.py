"""Gradient inversion of a device's client-side model update over one aggregation period.

``gradient-inversion`` -- Geiping, Bauermeister, Dröge & Moeller, "Inverting Gradients -- How
easy is it to break privacy in federated learning?", NeurIPS 2020: find dummy inputs whose
(simulated) parameter update points in the same direction as the observed one, by minimising
one minus the cosine similarity of the two updates plus a total-variation prior, with Adam on the
inputs (section 4); several local steps on the client (their "multiple local updates" setting,
section 5) are handled by simulating those steps on the dummy inputs, differentiably, from the
weights the server knows were in use at the start.

Setting. The fed server broadcast the client-side sub-model theta_0 at the start of an aggregation
period of I rounds and receives the device's sub-model theta_I at its end; the co-located edge
server, colluding, shares the cut-layer gradients g_t it returned in each of those rounds. In
round t the device ran one SGD step on the loss whose gradient at its smashed data is g_t, i.e. on
``<f(theta_t, x_t), g_t>`` with g_t held fixed. For dummy inputs x_1..x_I the attacker replays::

    theta_{t+1} = theta_t - lr * (d<f(theta_t, x_t), g_t>/d theta + wd * theta_t)     t = 1..I

(SGD with momentum keeps a buffer, see below) and minimises, over the input logits z_t with
x_t = sigmoid(z_t) in [0, 1]::

    1 - cos(theta_I(x) - theta_0, theta_I^obs - theta_0) + lambda * sum_t TV(x_t)

the cosine taken over all client parameters at once (Geiping et al.'s layer-summed cosine),
differentiating through the simulated steps (second-order gradients, ``create_graph``), with a
step-decayed Adam schedule as in their implementation and optional restarts that keep the run with
the lowest loss.

Labels are not needed, unlike in FedAvg gradient inversion: the server part of the loss -- and
with it the labels -- enters the client update only through the cut-layer gradient g_t, which the
edge server returned and shares. The client update is a function of the inputs and the g_t alone.

Assumptions: the client part is in the mode the attacker evaluates it in (``eval``: matters only
for dropout, which the default models do not have on the client side); with momentum > 0 the
device's momentum buffer is taken as zero at the period start (the trainer keeps per-device buffers
across aggregations and the server never sees them, so their contribution to the observed update
is an unmodelled error that grows with the momentum); no device-side defense changed the update;
buffers (none in the bundled models) are passed through unchanged, so their updates are not matched.
Unlike Geiping et al., who optimise boxed pixels directly, we keep x in [0, 1] through the sigmoid.

What to expect: the observation is one vector with as many entries as the client part has
parameters (176 for ``hecnn`` at cut 1 on one-channel images), while the unknowns are all images of
the period's I batches, so shallow cuts with several images per period are heavily underdetermined
and the total-variation prior does most of the work; deeper cuts carry more equations. On the
16x16 digits small run (I = 3, batches 4/8/12/16 at cuts 1-4) 1000 steps reach a matched SSIM of
about 0.16 / 0.29 / 0.34 / 0.34 (noise: 0.04-0.08), in 7 / 16 / 27 / 40 s per period on one CPU
thread; on the default CNN trained centrally (I = 5, batch 16) 500 and 1000 steps score the same
(0.055 / 0.144 / 0.149 and 0.039 / 0.132 / 0.149 at cuts 1 / 4 / 7), hence the default of 500.

Threat model: fed server colluding with the edge server; observes uploads and cut-layer gradients;
knows the client architecture and the weights it broadcast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..defenses.params import count, flag, nonnegative, positive
from .base import Attack, AttackContext, Observations, Reconstruction, ThreatModel
from .feature_inversion import total_variation
from .registry import ATTACKS

__all__ = ["GradientInversion", "Period", "observe_period", "period_cosine", "optimise_restarts",
           "simulate_local_update", "update_cosine"]


def simulate_local_update(model: nn.Module, inputs: Sequence[torch.Tensor], cut_grads: Sequence[torch.Tensor], *,
                          lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                          params: Mapping[str, torch.Tensor] | None = None,
                          buffers: Mapping[str, torch.Tensor] | None = None,
                          create_graph: bool = False) -> dict[str, torch.Tensor]:
    """The update ``theta_I - theta_0`` of the client part after one SGD step per input batch.

    Step t back-propagates the cut-layer gradient ``cut_grads[t]`` through ``model`` run on
    ``inputs[t]`` (exactly the device's backward, ``autograd.backward(smashed, g)``) and takes a
    ``torch.optim.SGD`` step (``lr``, ``momentum`` with a zero buffer at the start, no dampening,
    ``weight_decay``). The module itself is not changed: it is run with
    :func:`torch.func.functional_call` on ``params`` (default: its own parameters) and ``buffers``
    (default: its own buffers).

    Args:
        model: the client part (its weights are theta_0 unless ``params`` is given).
        inputs: one batch ``[b_t, C, H, W]`` per step.
        cut_grads: the matching cut-layer gradients ``[b_t, *smashed_shape]``.
        create_graph: keep the graph so the update can be differentiated w.r.t. the inputs.

    Returns:
        ``{name: theta_I - theta_0}`` for every parameter of ``model``.
    """
    if len(inputs) != len(cut_grads):
        raise ValueError(f"{len(inputs)} input batches for {len(cut_grads)} cut-layer gradients")
    start = {k: v.detach() for k, v in (params if params is not None else dict(model.named_parameters())).items()}
    bufs = dict(buffers if buffers is not None else dict(model.named_buffers()))
    names = list(start)
    theta = [start[k].clone().requires_grad_(True) for k in names]
    first = list(theta)
    velocity: list[torch.Tensor] | None = None
    with torch.enable_grad():
        for x, g in zip(inputs, cut_grads):
            out = functional_call(model, ({**dict(zip(names, theta)), **bufs}), (x,))
            inner = (out * g.to(out)).sum()
            grads = torch.autograd.grad(inner, theta, create_graph=create_graph, allow_unused=True)
            d = [torch.zeros_like(p) if gr is None else gr for p, gr in zip(theta, grads)]
            if weight_decay:
                d = [di + weight_decay * p for di, p in zip(d, theta)]
            if momentum:
                velocity = d if velocity is None else [momentum * v + di for v, di in zip(velocity, d)]
                d = velocity
            theta = [p - lr * di for p, di in zip(theta, d)]
    update = {k: p - p0 for k, p, p0 in zip(names, theta, first)}
    if not create_graph:
        update = {k: v.detach() for k, v in update.items()}
    return update


def update_cosine(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Cosine similarity of two parameter updates over all their (shared-name) tensors at once."""
    keys = list(a)
    dot = sum((a[k] * b[k]).sum() for k in keys)
    na = torch.sqrt(sum(a[k].pow(2).sum() for k in keys))
    nb = torch.sqrt(sum(b[k].pow(2).sum() for k in keys))
    return dot / (na * nb).clamp_min(1e-20)


@dataclass
class Period:
    """One device's aggregation period as the fed server and the colluding edge server see it: the
    client part broadcast at its start (``model``, with ``params``/``buffers`` on the attack's
    device), the exchanges of its rounds in order with their cut-layer ``grads``, the ``observed``
    update (upload minus start weights) and the client's SGD settings."""

    model: nn.Module
    exchanges: list
    grads: list[torch.Tensor]
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    observed: dict[str, torch.Tensor]
    lr: float
    momentum: float
    weight_decay: float


def observe_period(name: str, observations: Observations, context: AttackContext) -> Period:
    """The :class:`Period` behind ``observations``, checked: one device, every cut-layer gradient,
    exactly one upload of that device closing the period, and an update that is not zero.
    ValueErrors name the attack and what is missing."""
    client = context.client_model
    if client is None:
        raise ValueError(f"{name} needs the client weights broadcast at the period start "
                         "(its threat model grants them)")
    exchanges = sorted(observations.exchanges, key=lambda e: e.key)
    if not exchanges:
        raise ValueError(f"{name} needs the device's exchanges of the period; got none")
    devices = {e.device for e in exchanges}
    if len(devices) != 1:
        raise ValueError(f"{name} attacks one device per period; got exchanges of devices {sorted(devices)}")
    device = devices.pop()
    if any(e.grad is None for e in exchanges):
        raise ValueError(f"{name} needs the cut-layer gradients of every exchange (observes 'grad')")
    uploads = [u for u in observations.uploads if u.device == device]
    if len(uploads) != 1:
        raise ValueError(f"{name} needs exactly one upload of device {device} (its state at the period's end); "
                         f"got {len(uploads)}")
    upload = uploads[0]
    if upload.round < exchanges[-1].round:
        raise ValueError(f"the upload of round {upload.round} precedes the exchange of round "
                         f"{exchanges[-1].round}; it must close the period")
    dev = context.device
    params = {k: v.detach().to(dev) for k, v in client.named_parameters()}
    buffers = {k: v.detach().to(dev) for k, v in client.named_buffers()}
    missing = [k for k in params if k not in upload.state]
    if missing:
        raise ValueError(f"the upload lacks client parameters {missing[:3]}: not this client part")
    observed = {k: upload.state[k].to(dev, torch.float32) - params[k] for k in params}
    if not any(bool(v.any()) for v in observed.values()):
        raise ValueError(f"the upload of device {device} equals the start weights: no update to invert")
    opt = context.client_optimizer
    return Period(client, exchanges, [e.grad.to(dev) for e in exchanges], params, buffers, observed,
                  float(opt.get("lr", 0.05)), float(opt.get("momentum", 0.0)), float(opt.get("weight_decay", 0.0)))


def period_cosine(period: Period, inputs: Sequence[torch.Tensor], *, model: nn.Module | None = None,
                  prefix: str = "", create_graph: bool = False) -> torch.Tensor:
    """Cosine of the update that ``inputs`` (one batch per round) make, replayed from the period's
    start weights with its cut-layer gradients and SGD settings, with the observed update.

    ``model`` is the period's client part (the default) or a module wrapping it whose parameters
    are the client's named ``prefix + name`` (e.g. a wrapper that feeds the client soft tokens).
    """
    model = period.model if model is None else model
    params = {prefix + k: v for k, v in period.params.items()}
    buffers = {prefix + k: v for k, v in period.buffers.items()}
    sim = simulate_local_update(model, inputs, period.grads, lr=period.lr, momentum=period.momentum,
                                weight_decay=period.weight_decay, params=params, buffers=buffers,
                                create_graph=create_graph)
    return update_cosine({k.removeprefix(prefix): v for k, v in sim.items()}, period.observed)


def optimise_restarts(init: Callable[[], list[torch.Tensor]], loss: Callable[[list[torch.Tensor]], torch.Tensor],
                      score: Callable[[list[torch.Tensor]], float], *, steps: int, lr: float, restarts: int,
                      decay: bool, signed: bool = False) -> tuple[list[torch.Tensor], float, list[float]]:
    """Adam on the leaf tensors ``init()`` draws, ``steps`` times per restart, minimising ``loss``
    (with ``decay``, the rate falls 10x at 3/8, 5/8 and 7/8 of the steps, as in Geiping et al.'s
    implementation; with ``signed``, each step follows the gradient's sign). Each restart's result
    is rated by ``score`` (lower is better, non-finite counts as infinite).

    Returns:
        The best restart's tensors (detached), its score, and every restart's score.
    """
    best: tuple[float, list[torch.Tensor]] | None = None
    scores: list[float] = []
    for _ in range(max(1, restarts)):
        z = init()
        opt = torch.optim.Adam(z, lr=lr)
        milestones = [int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)] if decay else []
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        for _ in range(steps):
            value = loss(z)
            opt.zero_grad(set_to_none=True)
            value.backward()
            if signed:
                for zi in z:
                    zi.grad.sign_()
            opt.step()
            sched.step()
        z = [zi.detach() for zi in z]
        rating = float(score(z))
        rating = rating if math.isfinite(rating) else math.inf
        scores.append(rating)
        if best is None or rating < best[0]:
            best = (rating, z)
    assert best is not None
    return best[1], best[0], scores


@ATTACKS.register("gradient-inversion",
                  help="period-level inversion of a client update by cosine gradient matching (Geiping et al. 2020)")
class GradientInversion(Attack):
    """Geiping et al. (2020) inversion of the client-side update of one aggregation period.

    Params:
        steps: Adam iterations per restart (default 500: on the default CNN, 1000 steps gave the same
            SSIM at cuts 1, 4 and 7 for twice the cost; see benchmarks/RESULTS.md).
        lr: Adam learning rate on the input logits (default 0.1); not the client's SGD rate, which
            comes from ``context.client_optimizer``.
        tv_weight: weight lambda of the total-variation prior, per round's batch (default 0.1).
        restarts: independent random initialisations; the lowest final loss wins (default 1).
        init_std: standard deviation of the initial logits around 0 (mid-grey) (default 0.1).
        signed: step on the sign of the input gradient, as Geiping et al. do (default True).
        decay: multiply the learning rate by 0.1 at 3/8, 5/8 and 7/8 of the steps (default True).

    Shapes: ``observations.exchanges`` are one device's exchanges of the I rounds of a period
    (only ``grad`` is used, ``[b_t, *smashed]``); ``observations.uploads`` holds that device's
    upload at the period's end (uploads of other devices are ignored); ``context.client_model``
    has the weights broadcast at the period start. The reconstruction is ``[sum_t b_t, C, H, W]``
    in [0, 1], one image per sample, in exchange order; the order inside a batch is arbitrary
    (match it with :func:`hasfl_sec.metrics.image.match_batch`).

    Example::

        attack = GradientInversion(GradientInversion.Params(steps=500))
        rec = attack.reconstruct(observe(period_exchanges, [upload], attack.threat_model), context)
    """

    @dataclass
    class Params:
        steps: int = count(500)
        lr: float = positive(0.1)
        tv_weight: float = nonnegative(0.1)  # 0: the cosine term alone, without the TV prior
        restarts: int = count(1)
        init_std: float = nonnegative(0.1)
        signed: bool = flag(True)
        decay: bool = flag(True)

    name = "gradient-inversion"
    unit = "period"
    recovers = "inputs"
    threat_model = ThreatModel(position="fed-server", observes=frozenset({"uploads", "grad"}),
                               client_architecture=True, client_weights=True)

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        period = observe_period(self.name, observations, context)
        p = self.params

        def init() -> list[torch.Tensor]:
            return [(torch.randn(len(g), *context.input_shape, generator=context.generator) * p.init_std)
                    .to(context.device).requires_grad_(True) for g in period.grads]

        def images(z: list[torch.Tensor]) -> list[torch.Tensor]:
            return [torch.sigmoid(zi) for zi in z]

        z, final, losses = optimise_restarts(
            init, lambda z: self._objective(period, images(z), create_graph=True)[0],
            lambda z: float(self._objective(period, images(z))[0]),
            steps=p.steps, lr=p.lr, restarts=p.restarts, decay=p.decay, signed=p.signed)
        xs = images(z)
        return Reconstruction.from_images(period.exchanges, xs, context.input_shape, final_loss=final,
                                          final_cosine=float(self._objective(period, xs)[1]), restart_losses=losses,
                                          steps=p.steps)

    def _objective(self, period: Period, xs: list[torch.Tensor], *,
                   create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``1 - cos(simulated update, observed update) + tv_weight * sum_t TV(x_t)``, and the cosine."""
        cosine = period_cosine(period, xs, create_graph=create_graph)
        loss = 1 - cosine
        if self.params.tv_weight:
            loss = loss + self.params.tv_weight * sum(total_variation(x) for x in xs)
        return loss, cosine.detach()
