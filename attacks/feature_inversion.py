"""Activation (feature) inversion of smashed data.

``rmle`` -- white-box regularised maximum-likelihood inversion of He, Zhang & Lee, "Model
inversion attacks against collaborative inference", ACSAC 2019 (section 4): knowing the client
part f_c and its weights, find the input x in [0, 1] whose smashed data f_c(x) matches the observed
smashed data, with a total-variation prior::

    x* = argmin_x ||f_c(x) - a||^2 + lambda TV(x)

The box constraint is kept by optimising unconstrained logits z with x = sigmoid(z); Adam does
the optimisation. Threat model: edge server, observes smashed data, knows the client weights.

Adaptive variant (``adaptive``, default True, when the defense is known): the observation is
``T(f_c(x))`` for the defense's transform ``T``, so the attack matches ``E[T(f_c(x))]`` instead of
``f_c(x)`` (:func:`hasfl_sec.attacks.adaptive.expected_transform`): under zero-mean noise after a
clip this is the maximum-likelihood objective with the clip; for top-k or quantisation it
optimises through the transform, back-propagated as the defense defines it. For additive
zero-mean noise without a clip the expectation is ``f_c(x)`` itself and both variants coincide
(the audit then runs only one). The prior weight is not rescaled with the noise level (a MAP attacker would raise
it with sigma^2); that would be a further, stronger adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..defenses.base import Defense
from ..defenses.params import count, flag, nonnegative, positive
from .adaptive import expected_transform, observed
from .base import Attack, AttackContext, Observations, Reconstruction, ThreatModel
from .registry import ATTACKS

__all__ = ["RMLEInversion", "total_variation"]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation, mean absolute difference of neighbouring pixels, per batch."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean()
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()
    return dh + dw


@ATTACKS.register("rmle", help="white-box rMLE inversion of smashed data (He et al. 2019)")
class RMLEInversion(Attack):
    """He et al. (2019) white-box regularised maximum-likelihood inversion.

    Params:
        steps: Adam iterations per batch (default 1500).
        lr: Adam learning rate on the input logits (default 0.05).
        tv_weight: weight lambda of the total-variation prior (default 1e-3).
        init_std: standard deviation of the initial logits around 0 (mid-grey) (default 0.1).
        adaptive: match the defense's expected transform of the smashed data when the defense is
            known (default True).

    Shapes: observations carry smashed data ``[b, ...]``; the reconstruction is ``[n, C, H, W]``
    in [0, 1], one image per observed sample.

    Example::

        attack = RMLEInversion(RMLEInversion.Params(steps=500))
        rec = attack.reconstruct(observe(exchanges, [], attack.threat_model), context)
    """

    @dataclass
    class Params:
        steps: int = count(1500)
        lr: float = positive(0.05)
        tv_weight: float = nonnegative(1e-3)  # 0: the unregularised MLE of He et al. (2019)
        init_std: float = nonnegative(0.1)  # 0: start exactly at mid-grey
        adaptive: bool = flag(True)

    name = "rmle"
    threat_model = ThreatModel(position="edge-server", observes=frozenset({"smashed"}), client_architecture=True,
                               client_weights=True, knows_defense=True)

    def adapts_to(self, defense: Defense | None) -> bool:
        return expected_transform(defense) is not None

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        client = context.client_model
        if client is None:
            raise ValueError("rmle needs the client weights (its threat model grants them)")
        images, losses = [], []
        p = self.params
        forward = observed(client, context.defense if p.adaptive else None, device=context.victim)
        for ex in observations.exchanges:
            target = ex.smashed.to(context.device)
            shape = (len(target), *context.input_shape)
            z = (torch.randn(shape, generator=context.generator) * p.init_std).to(context.device).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=p.lr)
            for _ in range(p.steps):
                x = torch.sigmoid(z)
                loss = F.mse_loss(forward(x), target) + p.tv_weight * total_variation(x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            images.append(torch.sigmoid(z).detach())
            losses.append(float(loss.detach()))
        return Reconstruction.from_images(observations.exchanges, images, context.input_shape, final_loss=losses)
