"""Inversion of a language model's hidden states at the cut: recover the device's characters.

A split GPT's device runs the token embedding and the first blocks and sends the hidden states
``[T, D]``. Two optimisation attacks invert them (docs/privacy.md, "Transformers"):

``text-inversion`` (white-box, the text analogue of rMLE: He, Zhang & Lee, ACSAC 2019, section 4,
and of the embedding inversion applied to split GPT-2 in the UnSplit line of work): knowing the
client part's weights, optimise continuous input embeddings ``E`` so that the client part fed
``E + positions`` reproduces the observed hidden states, then map each position to its nearest token
embedding (Euclidean). At the cut after the embedding the optimum is exact.

``text-unsplit`` (architecture only; Erdogan, Kupcu & Cicek, "UnSplit", WPES 2022): the attacker
knows the architecture and the public vocabulary but not the weights. It alternates between
optimising soft one-hot inputs over the vocabulary (softmax of free logits) through a clone of the
client part and optimising the clone's weights on the same objective, then reads each position's
most likely character. Tokens are identifiable only up to what the clone's embedding learns, so
this attack is expected to be weak; it is the measurement, not a tuned number.

Both adapt to a known defense as rMLE does (:func:`hasfl_sec.attacks.adaptive.expected_transform`).
The reconstruction's ``inputs`` are token ids ``[n, T]``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..defenses.base import Defense
from ..defenses.params import count, flag, nonnegative, positive
from .adaptive import expected_transform, observed
from .base import Attack, AttackContext, Observations, Reconstruction, ThreatModel
from .registry import ATTACKS

__all__ = ["TextInversion", "TextUnSplit", "split_embedding", "TextAttack"]


def split_embedding(client: nn.Module) -> tuple[nn.Module, nn.Sequential]:
    """The client part's token embedding (a module with ``tokens``, ``positions`` and ``embed_soft``,
    :class:`hasfl_sec.models.gpt.TokenEmbedding`) and the blocks after it."""
    blocks = list(client.children()) if isinstance(client, nn.Sequential) else [client]
    if not blocks or not hasattr(blocks[0], "embed_soft"):
        raise ValueError("a text attack needs a client part that starts with a token embedding (gpt-char)")
    return blocks[0], nn.Sequential(*blocks[1:])


class TextAttack(Attack):
    """An attack on a language model's hidden states: it applies to text tasks only (``Attack.applies``)."""

    modality = "text"


@ATTACKS.register("text-inversion", help="white-box inversion of a GPT's hidden states to input embeddings, "
                                         "then nearest tokens (text)")
class TextInversion(TextAttack):
    """White-box embedding inversion of hidden states.

    Params:
        steps: Adam iterations per batch (default 500).
        lr: Adam learning rate on the embeddings (default 0.05).
        init_std: standard deviation of the initial embeddings around the mean token embedding
            (default 0.02, the embedding's own initial scale).
        adaptive: match the defense's expected transform of the hidden states when the defense is
            known (default True).
    """

    @dataclass
    class Params:
        steps: int = count(500)
        lr: float = positive(0.05)
        init_std: float = nonnegative(0.02)
        adaptive: bool = flag(True)

    name = "text-inversion"
    threat_model = ThreatModel(position="edge-server", observes=frozenset({"smashed"}), client_architecture=True,
                               client_weights=True, knows_defense=True)

    def adapts_to(self, defense: Defense | None) -> bool:
        return expected_transform(defense) is not None

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        if context.client_model is None:
            raise ValueError("text-inversion needs the client weights (its threat model grants them)")
        embed, rest = split_embedding(context.client_model)
        forward = observed(rest, context.defense if self.params.adaptive else None, device=context.victim)
        table = embed.tokens.weight.detach()
        p, tokens, losses = self.params, [], []
        for ex in observations.exchanges:
            target = ex.smashed.to(context.device)
            b, t = target.shape[:2]
            positions = embed.positions.weight.detach()[:t]
            noise = torch.randn(b, t, table.shape[1], generator=context.generator).to(context.device)
            e = (table.mean(0) + p.init_std * noise).requires_grad_(True)
            opt = torch.optim.Adam([e], lr=p.lr)
            for _ in range(p.steps):
                loss = F.mse_loss(forward(e + positions), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            tokens.append(torch.cdist(e.detach(), table.expand(b, -1, -1)).argmin(-1))
            losses.append(float(loss.detach()))
        return Reconstruction.from_images(observations.exchanges, tokens, context.input_shape, final_loss=losses)


@ATTACKS.register("text-unsplit", help="UnSplit on a GPT's hidden states: soft tokens and a cloned client part, "
                                       "architecture only (text)")
class TextUnSplit(TextAttack):
    """UnSplit (Erdogan et al. 2022) with soft one-hot inputs over the public vocabulary.

    Params:
        rounds: alternations between the inputs and the clone (default 20).
        input_steps: Adam steps on the input logits per alternation (default 25).
        model_steps: Adam steps on the clone's weights per alternation (default 25).
        lr: Adam learning rate of the inputs (default 0.1).
        model_lr: Adam learning rate of the clone (default 1e-3).
        adaptive: match the defense's expected transform when the defense is known (default True).
    """

    @dataclass
    class Params:
        rounds: int = count(20)
        input_steps: int = count(25)
        model_steps: int = count(25)
        lr: float = positive(0.1)
        model_lr: float = positive(1e-3)
        adaptive: bool = flag(True)

    name = "text-unsplit"
    threat_model = ThreatModel(position="edge-server", observes=frozenset({"smashed"}), client_architecture=True,
                               knows_defense=True)

    def adapts_to(self, defense: Defense | None) -> bool:
        return expected_transform(defense) is not None

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        if context.client_template is None:
            raise ValueError("text-unsplit needs the client architecture (its threat model grants it)")
        p, tokens, losses = self.params, [], []
        for ex in observations.exchanges:
            clone = copy.deepcopy(context.client_template).train()
            embed, rest = split_embedding(clone)
            forward = observed(rest, context.defense if p.adaptive else None, device=context.victim)
            target = ex.smashed.to(context.device)
            b, t = target.shape[:2]
            vocab = embed.tokens.weight.shape[0]
            z = (0.01 * torch.randn(b, t, vocab, generator=context.generator)).to(context.device).requires_grad_(True)
            opt_x = torch.optim.Adam([z], lr=p.lr)
            opt_m = torch.optim.Adam(clone.parameters(), lr=p.model_lr)

            def objective() -> torch.Tensor:
                return F.mse_loss(forward(embed.embed_soft(F.softmax(z, dim=-1))), target)

            for _ in range(p.rounds):
                for opt, steps in ((opt_x, p.input_steps), (opt_m, p.model_steps)):
                    for _ in range(steps):
                        loss = objective()
                        opt_x.zero_grad(set_to_none=True)
                        opt_m.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
            tokens.append(z.detach().argmax(-1))
            losses.append(float(loss.detach()))
        return Reconstruction.from_images(observations.exchanges, tokens, context.input_shape, final_loss=losses)
