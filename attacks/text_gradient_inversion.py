"""Gradient inversion of a language model's client update: recover a device's characters.

``text-gradient-inversion`` -- the text counterpart of ``gradient-inversion``
(:mod:`hasfl_sec.attacks.gradient_inversion`, Geiping et al., NeurIPS 2020: the same replay of the
device's steps and the same cosine objective). TAG (Deng et al., "TAG: Gradient Attack on
Transformer-based Language Models", Findings of EMNLP 2021) and LAMP (Balunović et al., "LAMP:
Extracting Text from Gradients with Language Model Priors", NeurIPS 2022) invert FedAvg gradients
of language models with other distances and priors; this attack moves that question to a split
client's update.

Setting, as for images: the fed server broadcast the client part (token embedding and the first
blocks of ``gpt-char``) at the start of an aggregation period and receives the device's client part
at its end; the colluding edge server shares the cut-layer gradients it returned in each round.
The attacker replays the device's SGD steps on dummy inputs and matches the simulated update to the
observed one by cosine similarity (:func:`~hasfl_sec.attacks.gradient_inversion.period_cosine`).

Text makes two changes:

* **Soft tokens.** Token ids are discrete, so the dummy inputs are mixtures of token vectors,
  ``softmax(z) @ E`` over free logits ``z`` ``[b, T, vocab]`` (the relaxation ``text-unsplit``
  uses), fed to the client part through its embedding's ``embed_soft``. Each position's most
  likely token is read at the end.
* **The bag of tokens** (Melis et al., "Exploiting Unintended Feature Leakage in Collaborative
  Learning", IEEE S&P 2019): the rows of the token table that a device's update leaves at zero
  are the tokens its inputs never held, because an embedding lookup sends gradient only to the
  rows it read. The attack restricts every position to the tokens whose rows changed. The set
  is exact when the momentum buffer starts the period at zero. A buffer carried over from earlier
  periods (the trainer keeps per-device buffers) also moves rows of earlier tokens, which only
  loosens it. Weight decay, or noise on the update (DP-SGD), moves every row: the bag is then
  the whole vocabulary and restricts nothing.

The batch order inside a round is unknown (the update is a sum over samples); the audit matches
recovered sequences to the true ones with the most positions in agreement
(:func:`hasfl_sec.metrics.text.match_sequences`). The other assumptions of ``gradient-inversion``
hold here too (no device-side defense changed the update; a momentum buffer is taken as zero).

Threat model: fed server colluding with the edge server; observes uploads and cut-layer gradients;
knows the client architecture and the weights it broadcast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..defenses.params import count, flag, nonnegative, positive
from .base import AttackContext, Observations, Reconstruction, ThreatModel
from .gradient_inversion import Period, observe_period, optimise_restarts, period_cosine
from .registry import ATTACKS
from .text_inversion import TextAttack, split_embedding

__all__ = ["TextGradientInversion", "token_bag"]


class _SoftClient(nn.Module):
    """The client part fed soft tokens ``[b, T, vocab]``: its embedding's ``embed_soft``, then its
    blocks. The client is its only submodule, so its parameters are named ``client.<name>``
    (:data:`PREFIX`)."""

    PREFIX = "client."

    def __init__(self, client: nn.Module) -> None:
        super().__init__()
        self.client = client
        self._parts = split_embedding(client)  # a tuple: not registered again under other names

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        embed, rest = self._parts
        return rest(embed.embed_soft(weights))


def token_bag(period: Period) -> torch.Tensor:
    """Boolean ``[vocab]``: the tokens whose rows of the token table the observed update changed."""
    embed, _ = split_embedding(period.model)
    name = next(k for k, v in period.model.named_parameters() if v is embed.tokens.weight)
    return period.observed[name].abs().sum(-1) > 0


@ATTACKS.register("text-gradient-inversion",
                  help="period-level inversion of a GPT's client update: soft tokens, cosine matching and "
                       "the bag of tokens (Geiping et al. 2020; Melis et al. 2019) (text)")
class TextGradientInversion(TextAttack):
    """Inversion of one aggregation period's client update on soft tokens, for ``gpt-char``.

    Params:
        steps: Adam iterations per restart (default 300).
        lr: Adam learning rate on the token logits (default 0.1).
        restarts: independent random initialisations; the one whose tokens replay the update
            closest to the observed one wins (default 1).
        init_std: standard deviation of the initial logits (default 0.1).
        bag: restrict every position to the tokens the update reveals (default True; False
            searches the whole vocabulary).
        decay: multiply the learning rate by 0.1 at 3/8, 5/8 and 7/8 of the steps (default True).

    Shapes: as ``gradient-inversion`` (one device's exchanges of a period, its upload at the
    period's end); the reconstruction is token ids ``[sum_t b_t, T]`` in exchange order, the order
    inside a batch arbitrary.
    """

    @dataclass
    class Params:
        steps: int = count(300)
        lr: float = positive(0.1)
        restarts: int = count(1)
        init_std: float = nonnegative(0.1)
        bag: bool = flag(True)
        decay: bool = flag(True)

    name = "text-gradient-inversion"
    unit = "period"
    recovers = "inputs"
    threat_model = ThreatModel(position="fed-server", observes=frozenset({"uploads", "grad"}),
                               client_architecture=True, client_weights=True)

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        period = observe_period(self.name, observations, context)
        soft = _SoftClient(period.model)
        p, dev = self.params, context.device
        vocab = split_embedding(period.model)[0].tokens.weight.shape[0]
        allowed = token_bag(period) if p.bag else torch.ones(vocab, dtype=torch.bool, device=dev)
        if not allowed.any():  # a token table the update left untouched reveals no bag
            allowed = torch.ones_like(allowed)
        mask = torch.where(allowed, 0.0, -math.inf).to(dev)  # absent tokens get probability zero

        def cosine(weights: list[torch.Tensor], create_graph: bool = False) -> torch.Tensor:
            return period_cosine(period, weights, model=soft, prefix=soft.PREFIX, create_graph=create_graph)

        def init() -> list[torch.Tensor]:
            return [(torch.randn(len(g), context.input_shape[0], vocab, generator=context.generator) * p.init_std)
                    .to(dev).requires_grad_(True) for g in period.grads]

        def tokens(z: list[torch.Tensor]) -> list[torch.Tensor]:
            return [(zi + mask).argmax(-1) for zi in z]

        def read(z: list[torch.Tensor]) -> float:  # a restart is rated by the tokens it returns
            with torch.no_grad():
                return 1 - float(cosine([F.one_hot(t, vocab).float() for t in tokens(z)]))

        z, final, losses = optimise_restarts(init, lambda z: 1 - cosine([F.softmax(zi + mask, -1) for zi in z], True),
                                             read, steps=p.steps, lr=p.lr, restarts=p.restarts, decay=p.decay)
        return Reconstruction.from_images(period.exchanges, tokens(z), context.input_shape, final_loss=final,
                                          final_cosine=1 - final, restart_losses=losses, steps=p.steps,
                                          bag_size=int(allowed.sum()))
