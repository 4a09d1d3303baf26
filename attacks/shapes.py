"""Smashed-data shapes as the attacks' networks see them.

The CNNs send feature maps ``[C, h, w]`` or flat vectors ``[d]``; a transformer sends hidden states
``[T, D]``, one row per token. The ViT's tokens are image patches in row-major order
(:mod:`hasfl_sec.models.vit`), so a square token count is read back as a ``[D, g, g]`` feature map
and the image attacks' convolutional decoders and critics apply to it unchanged in spirit; any other
token count is flattened to a vector.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TokensToMap", "as_map"]


class TokensToMap(nn.Module):
    """``[B, g*g, D]`` hidden states -> ``[B, D, g, g]``, token ``i*g + j`` at row ``i``, column ``j``."""

    def __init__(self, grid: int) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(len(x), x.shape[2], self.grid, self.grid)


def as_map(smashed_shape: tuple[int, ...]) -> tuple[list[nn.Module], tuple[int, ...]]:
    """Modules that bring smashed data of ``smashed_shape`` to a ``[C, h, w]`` map or a ``[d]``
    vector, and that shape. ``[C, h, w]`` and ``[d]`` pass unchanged."""
    shape = tuple(int(s) for s in smashed_shape)
    if len(shape) != 2:
        return [], shape
    tokens, dim = shape
    grid = math.isqrt(tokens)
    if grid * grid == tokens and grid > 1:
        return [TokensToMap(grid)], (dim, grid, grid)
    return [nn.Flatten(1)], (tokens * dim,)
