"""Transformer building blocks shared by the zoo's ViT and character GPT.

A pre-norm transformer block (Vaswani et al. 2017, with the pre-norm placement of GPT-2 and ViT:
``x + attn(ln(x))`` then ``x + mlp(ln(x))``) written with plain ``nn.Linear`` and ``nn.LayerNorm``
layers and explicit matrix products, for three reasons:

* Opacus computes per-sample gradients of ``Linear`` and ``LayerNorm`` with its own hooks, so DP-SGD
  works on any client part without replacing layers (``nn.MultiheadAttention`` would need Opacus'
  ``DPMultiheadAttention`` swap);
* ``torch.utils.flop_counter`` counts the attention products as the matmuls they are, so the
  profile (and with it HASFL's latency model) sees the quadratic attention cost;
* ``torch.func`` (the dFIL bound's Jacobians) runs through every op.

LayerNorm normalises each token of each sample on its own, so batches of one sample train and no
statistics cross samples, as with the CNNs' GroupNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "TransformerBlock", "TokenHead", "layer_norm", "init_transformer"]


def layer_norm(norm: str, dim: int) -> nn.Module:
    """``nn.LayerNorm(dim)``, or ``nn.Identity()`` when ``norm == "none"``.

    The zoo's ``model.norm`` choice ``"group"`` means "the architecture's per-sample norm": GroupNorm
    for the CNNs and LayerNorm (GroupNorm over one token's features) for the transformers.
    """
    return nn.Identity() if norm == "none" else nn.LayerNorm(dim)


class Attention(nn.Module):
    """Multi-head self-attention over ``[B, T, D]`` tokens, causal (GPT) or not (ViT).

    One ``Linear(D, 3D)`` gives queries, keys and values; heads attend with softmax(QK^T / sqrt(d));
    ``Linear(D, D)`` projects the heads back. A causal mask keeps position ``t`` from seeing ``> t``.
    """

    def __init__(self, dim: int, heads: int, *, causal: bool, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        if self.causal:
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        out = torch.matmul(self.drop(F.softmax(scores, dim=-1)), v)
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, t, d)))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))`` with a GELU MLP of ``mlp_ratio * D``."""

    def __init__(self, dim: int, heads: int, *, causal: bool, norm: str = "group", mlp_ratio: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = layer_norm(norm, dim)
        self.attn = Attention(dim, heads, causal=causal, dropout=dropout)
        self.ln2 = layer_norm(norm, dim)
        layers: list[nn.Module] = [nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TokenHead(nn.Module):
    """The final LayerNorm and linear map of a transformer. ``pool``: the mean over tokens gets the
    logits ``[B, classes]`` (a classifier, the ViT); otherwise every token gets its own, returned as
    ``[B, classes, T]`` (next-token prediction, the GPT: the layout cross-entropy reads against
    targets ``[B, T]``)."""

    def __init__(self, dim: int, classes: int, norm: str, *, pool: bool) -> None:
        super().__init__()
        self.ln = layer_norm(norm, dim)
        self.fc = nn.Linear(dim, classes)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln(x)
        return self.fc(x.mean(dim=1)) if self.pool else self.fc(x).transpose(1, 2)


def init_transformer(model: nn.Module, std: float = 0.02) -> None:
    """GPT-2/ViT initialisation: N(0, std) linear and embedding weights, zero biases, LayerNorm 1/0.

    Position embeddings and the class token (plain parameters) are initialised by their owners.
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
