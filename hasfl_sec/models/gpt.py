"""``gpt-char``: a small character-level GPT that can be cut after its embedding or any block.

Radford et al., "Language models are unsupervised multitask learners" (GPT-2, 2019), at the scale
of Karpathy's minGPT character models: token and learned position embeddings, pre-norm causal
transformer blocks, a final LayerNorm and a linear head to next-character logits. Split learning of
language models cuts exactly here: the device runs the embedding and the first blocks and sends
the hidden states ``[context, width]`` (docs/privacy.md, "Transformers").

The head returns logits as ``[B, vocab, context]`` (classes in dimension 1), the layout
``F.cross_entropy`` and ``argmax(1)`` read with next-character targets ``[B, context]``: the
trainer's loss and accuracy (per character) need no special case for text.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .split import SplitModel, check_norm
from .transformer import TokenHead, TransformerBlock, init_transformer
from .zoo import MODELS

__all__ = ["GPT_DEFAULT_WIDTH", "GPT_DEPTH", "GPT_HEADS", "build_gpt_char"]

#: Token width when ``model.width`` is null.
GPT_DEFAULT_WIDTH = 128
#: Transformer blocks.
GPT_DEPTH = 4
#: Attention heads per block; ``model.width`` must be a multiple of it.
GPT_HEADS = 4


class TokenEmbedding(nn.Module):
    """Token ids ``[B, T]`` -> ``[B, T, D]``: ``nn.Embedding`` plus learned positions."""

    def __init__(self, vocab: int, context: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(context, dim)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _positions(self, batch: int, length: int, device: torch.device) -> torch.Tensor:
        # Looked up per sample (not by slicing the weight) so Opacus' Embedding hook sees a batch
        # and DP-SGD gets a per-sample gradient of the position table too.
        return self.positions(torch.arange(length, device=device).expand(batch, length))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.tokens(ids) + self._positions(ids.shape[0], ids.shape[1], ids.device))

    def embed_soft(self, weights: torch.Tensor) -> torch.Tensor:
        """The same embedding of a soft input: ``weights`` ``[B, T, vocab]`` mix the token vectors.
        A one-hot ``weights`` gives exactly :meth:`forward` of its ids (the text inversion attacks
        optimise such mixtures; docs/privacy.md, "Transformers")."""
        positions = self._positions(weights.shape[0], weights.shape[1], weights.device)
        return self.drop(weights @ self.tokens.weight + positions)


@MODELS.register("gpt-char", help="character-level GPT: embedding + 4 causal pre-norm blocks (width 128, "
                                  "4 heads) + next-character head, 6 blocks; text data sets only")
def build_gpt_char(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    norm: str = "group",
    width: int | None = None,
    dropout: float = 0.0,
) -> SplitModel:
    """A GPT (Radford et al. 2019) over characters.

    For text the zoo's arguments read: ``num_classes`` the vocabulary, ``image_size`` the context
    length, ``in_channels`` 1 (one channel of token ids). Blocks (L = 6, legal cuts 1..5):
    ``embed`` (token and position embeddings), ``block1`` .. ``block4`` (causal pre-norm blocks,
    4 heads, GELU MLP of 4x width) and ``head`` (LayerNorm, linear to the vocabulary). The smashed
    data at every cut are the ``[context, width]`` hidden states. ``norm="group"`` (the zoo default)
    gives LayerNorm, ``"none"`` drops it; ``width`` (default 128) must be a multiple of 4.
    Initialisation as GPT-2: N(0, 0.02) embeddings and linear weights, zero biases.
    """
    check_norm(norm)
    if in_channels != 1:
        raise ConfigError("model.name", "gpt-char", "a model for images (hasfl-sec list models)",
                          f"gpt-char reads one channel of token ids, the data have {in_channels} channels")
    dim = GPT_DEFAULT_WIDTH if width is None else int(width)
    if dim % GPT_HEADS:
        raise ConfigError("model.width", width, f"null or a multiple of {GPT_HEADS} for gpt-char",
                          f"the width is split across {GPT_HEADS} attention heads")
    blocks: list[nn.Module] = [TokenEmbedding(num_classes, image_size, dim, dropout)]
    blocks += [TransformerBlock(dim, GPT_HEADS, causal=True, norm=norm, dropout=dropout) for _ in range(GPT_DEPTH)]
    blocks.append(TokenHead(dim, num_classes, norm, pool=False))
    model = SplitModel(
        blocks,
        ["embed", *(f"block{i + 1}" for i in range(GPT_DEPTH)), "head"],
        arch="gpt-char",
        input_shape=(image_size,),
        num_classes=num_classes,
        config={"norm": norm, "width": dim, "dropout": dropout},
        vocab_size=num_classes,
    )
    init_transformer(model)
    return model
