"""``text-inverter``: a network that reads characters back from a GPT's hidden states.

The text analogue of the inverse network of He, Zhang & Lee, ACSAC 2019 (section 5): a black-box
attacker with query access to the client part and auxiliary text from the task's distribution
queries the client part on that text and trains an inverter from hidden states ``[T, D]`` to
per-position character logits ``[T, vocab]`` with cross-entropy; a victim's hidden states are then
decoded by the inverter's most likely character at each position. The inverter is one
bidirectional (non-causal) pre-norm transformer block followed by LayerNorm and a linear map to the
vocabulary: a deeper cut mixes each position with the earlier ones, and attention lets the
inverter undo that mixing.

Adaptive (default, when the defense is known): trained on defended hidden states, a fresh defense
draw per step (:func:`hasfl_sec.attacks.adaptive.defend`), as the image inverse network is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..defenses.base import Defense
from ..defenses.params import count, flag, positive
from ..models.transformer import TransformerBlock
from .adaptive import changes_smashed, defend
from .base import AttackContext, Observations, Reconstruction, ThreatModel
from .registry import ATTACKS
from .text_inversion import TextAttack

__all__ = ["TextInverter", "make_inverter"]


def make_inverter(dim: int, vocab: int, width: int, heads: int = 4) -> nn.Module:
    """Hidden states ``[B, T, dim]`` -> character logits ``[B, T, vocab]``."""
    return nn.Sequential(nn.Linear(dim, width), TransformerBlock(width, heads, causal=False),
                         nn.LayerNorm(width), nn.Linear(width, vocab))


@ATTACKS.register("text-inverter", help="learned inverter from a GPT's hidden states to characters, trained on "
                                        "auxiliary text through query access (text)")
class TextInverter(TextAttack):
    """Learned hidden-state inverter.

    Params:
        steps: inverter training steps (default 1500).
        batch_size: auxiliary sequences per step (default 32).
        lr: Adam learning rate (default 2e-3).
        width: the inverter's token width (default 128; a multiple of 4).
        auxiliary_samples: auxiliary sequences required (default 256).
        adaptive: train on defended hidden states when the defense is known (default True).
    """

    @dataclass
    class Params:
        steps: int = count(1500)
        batch_size: int = count(32)
        lr: float = positive(2e-3)
        width: int = count(128, high=1024)
        auxiliary_samples: int = count(256)
        adaptive: bool = flag(True)

    name = "text-inverter"
    threat_model = ThreatModel(position="edge-server", observes=frozenset({"smashed"}), query_access=True,
                               auxiliary_samples=256, knows_defense=True)

    def __init__(self, params: "TextInverter.Params | None" = None) -> None:
        super().__init__(params)
        self.inverter: nn.Module | None = None
        self.final_loss = float("nan")

    def adapts_to(self, defense: Defense | None) -> bool:
        return changes_smashed(defense)

    def applies(self, context: AttackContext) -> str | None:
        if (other := super().applies(context)) is not None:
            return other
        if self.params.width % 4:
            return f"text-inverter.width must be a multiple of 4 (its attention heads), not {self.params.width}"
        return None

    def fit(self, context: AttackContext) -> None:
        """Query the client part on the auxiliary sequences and train the inverter on the pairs."""
        if context.query is None or context.auxiliary is None:
            raise ValueError("text-inverter needs query access and auxiliary text (its threat model grants them)")
        p = self.params
        aux = context.auxiliary[: p.auxiliary_samples].to(context.device)
        hidden = context.query(aux)
        self.inverter = make_inverter(hidden.shape[-1], context.num_classes, p.width).to(context.device)
        defense = context.defense if p.adaptive else None
        opt = torch.optim.Adam(self.inverter.parameters(), lr=p.lr)
        for _ in range(p.steps):
            idx = torch.randint(len(aux), (min(p.batch_size, len(aux)),), generator=context.generator)
            with torch.no_grad():
                seen = defend(defense, hidden[idx], device=context.victim)
            loss = F.cross_entropy(self.inverter(seen).transpose(1, 2), aux[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self.final_loss = float(loss.detach())

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        if self.inverter is None:
            self.fit(context)
        with torch.no_grad():
            tokens = [self.inverter(ex.smashed.to(context.device)).argmax(-1) for ex in observations.exchanges]
        return Reconstruction.from_images(observations.exchanges, tokens, context.input_shape,
                                          inverter_loss=self.final_loss,
                                          adapted=bool(self.params.adaptive and context.defense is not None))
