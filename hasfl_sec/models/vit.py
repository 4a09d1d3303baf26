"""``vit-tiny``: a small Vision Transformer that can be cut after its embedding or any block.

Dosovitskiy et al., "An image is worth 16x16 words: transformers for image recognition at scale",
ICLR 2021: images cut into non-overlapping patches, each linearly embedded, learned position
embeddings added, pre-norm transformer blocks. The head averages the final tokens (global average
pooling) instead of reading a class token, as in Beyer, Zhai & Kolesnikov, "Better plain ViT
baselines for ImageNet-1k" (2022): trained with the toolkit's plain SGD on the bundled digits, a
class-token head stayed at chance for hundreds of steps where pooling learned, and without a class
token every smashed token is one image patch. Sized to train on the bundled digits and LFW images
on two CPU cores in minutes (docs/models.md, "Transformers").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .split import SplitModel, check_norm
from .transformer import TokenHead, TransformerBlock, init_transformer
from .zoo import MODELS

__all__ = ["VIT_DEFAULT_WIDTH", "VIT_DEPTH", "VIT_HEADS", "VIT_GRID", "vit_patch_size", "build_vit_tiny"]

#: Token width of ``vit-tiny`` when ``model.width`` is null (ViT-Ti of Touvron et al. 2021 uses 192).
VIT_DEFAULT_WIDTH = 64
#: Transformer blocks of ``vit-tiny`` (ViT-Ti has 12).
VIT_DEPTH = 4
#: Attention heads per block; ``model.width`` must be a multiple of it.
VIT_HEADS = 4


#: Patches per image side: a 4x4 grid, 16 tokens.
VIT_GRID = 4


def vit_patch_size(image_size: int) -> int:
    """Patch side for ``image_size``: ``max(2, ceil(image_size / VIT_GRID))``.

    A 4x4 grid of patches (16 tokens) is what plain SGD trained on the bundled digits: with an 8x8
    grid (64 tokens) the same model stayed at chance for 900 steps, with 4x4 it reached 72% (seed 0,
    batch 16, lr 0.05, momentum 0.9). At least 2-pixel patches keep a token from being one pixel.
    The toolkit's 16x16 digits give 4x4 patches, 25x25 LFW faces 7x7 patches on a zero-padded 28x28
    image, 32x32 CIFAR 8x8 patches.
    """
    return max(2, math.ceil(image_size / VIT_GRID))


class PatchEmbedding(nn.Module):
    """Patches -> tokens: zero-pad to a multiple of the patch, ``Conv2d(kernel=stride=patch)``, learned
    position embeddings added. Output ``[B, grid^2, D]``, token ``i * grid + j`` the patch in row ``i``
    and column ``j``."""

    def __init__(self, in_channels: int, image_size: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.patch = vit_patch_size(image_size)
        self.grid = math.ceil(image_size / self.patch)
        self.pad = self.grid * self.patch - image_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=self.patch, stride=self.patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, dim))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (0, self.pad, 0, self.pad))
        return self.drop(self.proj(x).flatten(2).transpose(1, 2) + self.pos_embed)


@MODELS.register("vit-tiny", help="small Vision Transformer: 4x4 patch embedding + 4 pre-norm blocks (width 64, "
                                  "4 heads) + pooled head, 6 blocks")
def build_vit_tiny(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    norm: str = "group",
    width: int | None = None,
    dropout: float = 0.0,
) -> SplitModel:
    """A ViT (Dosovitskiy et al. 2021) for small images.

    Blocks (L = 6, legal cuts 1..5): ``embed`` (patches and positions), ``block1`` .. ``block4``
    (pre-norm transformer blocks, 4 heads, GELU MLP of 4x width) and ``head`` (LayerNorm, mean over
    tokens, linear classifier). The smashed data at every cut are the ``[grid^2, width]`` hidden
    states, one token per patch (16 tokens from image size 7 up; 4 or 9 for smaller images).
    ``norm="group"`` (the zoo default) gives LayerNorm, ``"none"`` drops it.
    ``width`` (default 64) must be a multiple of 4. Initialisation: truncated normal (std 0.02)
    positions, N(0, 0.02) linear weights (as in timm and GPT-2), PyTorch's default for the patch
    convolution.
    """
    check_norm(norm)
    dim = VIT_DEFAULT_WIDTH if width is None else int(width)
    if dim % VIT_HEADS:
        raise ConfigError("model.width", width, f"null or a multiple of {VIT_HEADS} for vit-tiny",
                          f"the width is split across {VIT_HEADS} attention heads")
    embed = PatchEmbedding(in_channels, image_size, dim, dropout)
    blocks: list[nn.Module] = [embed]
    blocks += [TransformerBlock(dim, VIT_HEADS, causal=False, norm=norm, dropout=dropout) for _ in range(VIT_DEPTH)]
    blocks.append(TokenHead(dim, num_classes, norm, pool=True))
    model = SplitModel(
        blocks,
        ["embed", *(f"block{i + 1}" for i in range(VIT_DEPTH)), "head"],
        arch="vit-tiny",
        input_shape=(in_channels, image_size, image_size),
        num_classes=num_classes,
        config={"norm": norm, "width": dim, "dropout": dropout, "patch": embed.patch},
    )
    init_transformer(model)  # linear and norm layers; the patch convolution keeps torch's default
    with torch.no_grad():
        nn.init.trunc_normal_(embed.pos_embed, std=0.02)
    return model
