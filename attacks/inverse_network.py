"""Black-box inverse-network attack on smashed data.

He, Zhang & Lee, "Model inversion attacks against collaborative inference", ACSAC 2019 (section
5): an attacker without the client weights but with query access to the client part runs
auxiliary samples from the data distribution through it, trains an inverse network
g: smashed -> input on the pairs, and applies g to the victims' smashed data. Threat model:
edge server, observes smashed data, query access, auxiliary samples (disjoint from the victims').

Adaptive variant (``adaptive``, default True; needs the run's defense, which the threat model then
grants): the decoder trains on *defended* smashed data, ``T(f_c(x_aux))`` with a fresh draw of the
defense's randomness at every step, as the noise-aware decoders of Titcombe et al., ICLR-W 2021,
and ResSFL (Li et al., CVPR 2022) are trained. The unaware variant trains on clean pairs and meets
the defense only at reconstruction time.

The decoder adapts to any cut: for a feature map ``[C, h, w]`` it is conv -> bilinear upsampling
to the input size -> two convs -> sigmoid; for a flat vector a linear layer first maps it to a
coarse map. Trained with MSE and Adam (our choice of architecture and schedule; He et al. use a
deconvolutional network matched to each cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..defenses.base import Defense
from ..defenses.params import count, flag, positive
from .adaptive import changes_smashed, defend
from .base import Attack, AttackContext, Observations, Reconstruction, ThreatModel
from .registry import ATTACKS
from .shapes import as_map

__all__ = ["InverseNetwork", "make_decoder"]


class _Decoder(nn.Module):
    def __init__(self, smashed_shape: tuple[int, ...], input_shape: tuple[int, int, int], width: int) -> None:
        super().__init__()
        c_in, h, w = input_shape
        self.size = (h, w)
        head, smashed_shape = as_map(smashed_shape)  # a ViT's tokens as a map of patches
        if len(smashed_shape) == 1:  # a flat vector (a cut after a fully connected block)
            side = max(2, h // 4)
            self.pre = nn.Sequential(*head, nn.Linear(smashed_shape[0], width * side * side), nn.ReLU(),
                                     nn.Unflatten(1, (width, side, side)))
            channels = width
        else:
            self.pre = nn.Sequential(*head, nn.Conv2d(smashed_shape[0], width, 3, padding=1), nn.ReLU())
            channels = width
        self.post = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, c_in, 3, padding=1))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        z = F.interpolate(self.pre(a), size=self.size, mode="bilinear", align_corners=False)
        return torch.sigmoid(self.post(z))


def make_decoder(smashed_shape: tuple[int, ...], input_shape: tuple[int, int, int], width: int = 32) -> nn.Module:
    """An inverse network from smashed data of ``smashed_shape`` to images of ``input_shape``."""
    return _Decoder(tuple(smashed_shape), tuple(input_shape), width)  # type: ignore[arg-type]


@ATTACKS.register("inverse-network", help="black-box inverse network trained on auxiliary data (He et al. 2019)")
class InverseNetwork(Attack):
    """He et al. (2019) black-box inverse network.

    Params:
        steps: decoder training steps (default 1500).
        batch_size: auxiliary samples per step (default 64).
        lr: Adam learning rate (default 2e-3).
        width: decoder channels (default 32; 64 gains about 0.02 SSIM at cut 6 of the default CNN on
            digits for six times the cost, see benchmarks/RESULTS.md).
        auxiliary_samples: auxiliary samples required (default 256).
        adaptive: train on defended smashed data when the defense is known (default True).

    Shapes: the decoder maps ``[b, *smashed]`` to ``[b, C, H, W]`` in [0, 1].
    """

    @dataclass
    class Params:
        steps: int = count(1500)
        batch_size: int = count(64)  # more than the auxiliary samples: every step uses them all
        lr: float = positive(2e-3)
        # a 3x3 convolution of width w holds 9 w^2 weights: 1024 is already ~10M per layer, 1000
        # times the default's; beyond, the decoder alone would exhaust memory, not reconstruct better
        width: int = count(32, high=1024)
        auxiliary_samples: int = count(256)  # capped (with a warning) at what the task holds out
        adaptive: bool = flag(True)

    name = "inverse-network"
    threat_model = ThreatModel(position="edge-server", observes=frozenset({"smashed"}), query_access=True,
                               auxiliary_samples=256, knows_defense=True)

    def __init__(self, params: "InverseNetwork.Params | None" = None) -> None:
        super().__init__(params)
        self.decoder: nn.Module | None = None

    def adapts_to(self, defense: Defense | None) -> bool:
        return changes_smashed(defense)

    def fit(self, context: AttackContext) -> None:
        """Query the client part on the auxiliary data and train the decoder on the pairs
        (adaptive: on the defended smashed data, a fresh draw per step)."""
        if context.query is None or context.auxiliary is None:
            raise ValueError("inverse-network needs query access and auxiliary data (its threat model grants them)")
        p = self.params
        aux = context.auxiliary[: p.auxiliary_samples].to(context.device)
        smashed = context.query(aux)
        self.decoder = make_decoder(tuple(smashed.shape[1:]), context.input_shape, p.width).to(context.device)
        defense = context.defense if p.adaptive else None
        opt = torch.optim.Adam(self.decoder.parameters(), lr=p.lr)
        for _ in range(p.steps):
            idx = torch.randint(len(aux), (min(p.batch_size, len(aux)),), generator=context.generator)
            with torch.no_grad():
                seen = defend(defense, smashed[idx], device=context.victim)
            loss = F.mse_loss(self.decoder(seen), aux[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self.final_loss = float(loss.detach())

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        if self.decoder is None:
            self.fit(context)
        with torch.no_grad():
            images = [self.decoder(ex.smashed.to(context.device)) for ex in observations.exchanges]
        return Reconstruction.from_images(observations.exchanges, images, context.input_shape,
                                          decoder_loss=self.final_loss,
                                          adapted=bool(self.params.adaptive and context.defense is not None))
