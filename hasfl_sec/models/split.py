"""Split models: a network as an ordered list of named blocks that can be cut in two.

In split federated learning a model is an ordered list of ``L`` blocks. Cut ``c``
(``1 <= c <= L-1``) places ``blocks[0:c]`` on the device (the *client part*) and ``blocks[c:L]``
on the server (the *server part*). The activations leaving block ``c-1`` are the *smashed data*.

A cut can be named by its integer index or by the name of the block it follows: the cut named
``"conv22"`` is the cut right after block ``conv22``. The last block's name is not a legal cut
(nothing would be left on the server).

This module also holds the normalisation factory shared by every model. There is deliberately no
BatchNorm: batches of one sample must train, and Opacus (differential privacy) needs GroupNorm.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["SplitModel", "NORMS", "make_norm2d", "group_norm_groups"]

#: Normalisation choices accepted by every model builder.
NORMS: tuple[str, ...] = ("group", "none")


def group_norm_groups(channels: int, max_groups: int = 32, spatial: int | None = None) -> int:
    """Number of GroupNorm groups for ``channels``: ``min(max_groups, channels)`` made to divide it.

    Computed as ``gcd(max_groups, channels)``, which is ``min(32, C)`` whenever that already divides
    ``C`` (every power of two) and the largest divisor of ``C`` that also divides 32 otherwise.

    If ``spatial`` (the number of pixels H*W of the feature map) is given and a group would hold a
    single value per sample (one channel of a 1x1 map), the group count is reduced to the largest
    divisor of ``C`` giving at least two values per group: a one-value group normalises to a
    constant and PyTorch refuses it at batch size 1.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    groups = math.gcd(int(max_groups), int(channels))
    if spatial is not None and spatial < 2 and channels >= 2:
        while (channels // groups) * spatial < 2:
            groups = max(d for d in range(1, groups) if channels % d == 0)
    return groups


def check_norm(norm: object) -> str:
    """Return ``norm`` if it is one of :data:`NORMS`; :class:`ConfigError` on ``model.norm`` otherwise."""
    if not isinstance(norm, str) or norm not in NORMS:
        raise ConfigError("model.norm", norm, NORMS, "BatchNorm is not offered: it breaks batch size 1 and Opacus")
    return norm


def make_norm2d(norm: str, channels: int, spatial: int | None = None) -> nn.Module:
    """Normalisation layer for a ``channels``-channel feature map of ``spatial`` pixels (if known).

    ``"group"`` gives ``nn.GroupNorm(group_norm_groups(channels, spatial=spatial), channels)``;
    ``"none"`` gives ``nn.Identity()``. Anything else raises :class:`ConfigError` on ``model.norm``.
    """
    check_norm(norm)
    if norm == "group":
        return nn.GroupNorm(group_norm_groups(channels, spatial=spatial), channels)
    return nn.Identity()


class SplitModel(nn.Module):
    """A network made of ``L`` named blocks, runnable whole or split at any legal cut.

    Args:
        blocks: the blocks, in execution order; ``forward`` chains them.
        block_names: one unique, human-meaningful name per block (``"conv11"``, ``"fc1"``).
        arch: the architecture name (the registry key, e.g. ``"hecnn"``).
        input_shape: the shape of one input sample: ``(channels, height, width)`` for images,
            ``(context,)`` for a sequence of token ids.
        vocab_size: for models whose inputs are token ids (``gpt-char``), the number of tokens;
            None for models of real-valued inputs (images).
        num_classes: number of output classes (informational).
        config: the builder arguments (``norm``, ``width``, ``dropout``...), informational.

    The client and server parts returned by :meth:`client_part` / :meth:`server_part` are
    ``nn.Sequential`` *views* holding the very same block modules, so training them trains this
    model.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        block_names: Sequence[str],
        *,
        arch: str,
        input_shape: tuple[int, int, int],
        num_classes: int | None = None,
        config: dict | None = None,
        vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        names = tuple(str(n) for n in block_names)
        if len(blocks) != len(names):
            raise ValueError(f"{len(blocks)} blocks but {len(names)} block names")
        if len(names) < 2:
            raise ValueError("a split model needs at least 2 blocks")
        if len(set(names)) != len(names):
            raise ValueError(f"block names must be unique, got {names}")
        if len(tuple(input_shape)) not in (1, 3):
            raise ValueError(f"input_shape must be (C, H, W) or (context,), got {input_shape}")
        self.blocks = nn.ModuleList(blocks)
        self.block_names: tuple[str, ...] = names
        self.arch: str = str(arch)
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in input_shape)
        self.num_classes = num_classes
        self.config: dict = dict(config or {})
        self.vocab_size = vocab_size

    def example_input(self, batch: int, *, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
        """A batch of inputs of the right kind: standard normal values of ``dtype`` (default: torch's
        default dtype), or uniform token ids for a model of token ids (``dtype`` is then ignored).
        On the meta device nothing is drawn."""
        shape = (int(batch), *self.input_shape)
        dtype = torch.int64 if self.vocab_size is not None else dtype or torch.get_default_dtype()
        if torch.device(device).type == "meta":
            return torch.empty(shape, dtype=dtype, device="meta")
        if self.vocab_size is not None:
            return torch.randint(0, self.vocab_size, shape, generator=generator).to(device)
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run every block in order."""
        for block in self.blocks:
            x = block(x)
        return x

    @property
    def num_blocks(self) -> int:
        """``L``, the number of blocks."""
        return len(self.blocks)

    @property
    def legal_cuts(self) -> tuple[int, ...]:
        """Every legal cut index: ``1 .. L-1``."""
        return tuple(range(1, self.num_blocks))

    @property
    def cut_names(self) -> dict[str, int]:
        """Block name -> the cut right after that block (``block k`` -> ``k+1``), legal cuts only."""
        return {name: k + 1 for k, name in enumerate(self.block_names[:-1])}

    def cut_name(self, cut: int | str) -> str:
        """The name of the block a (legal) cut follows."""
        return self.block_names[self.resolve_cut(cut) - 1]

    def resolve_cut(self, cut: int | str, field: str = "plan.cut") -> int:
        """Turn a cut given as an index or a block name into a legal index.

        Accepts an integer in :attr:`legal_cuts`, a string of digits naming one, or the name of a
        block that is not the last. Anything else raises :class:`ConfigError` on ``field``.
        """
        index: int | None = None
        if isinstance(cut, numbers.Integral) and not isinstance(cut, bool):
            index = int(cut)
        elif isinstance(cut, str):
            text = cut.strip()
            if text in self.cut_names:
                index = self.cut_names[text]
            elif text.isdigit():
                index = int(text)
        if index is None or index not in self.legal_cuts:
            last = self.num_blocks - 1
            raise ConfigError(
                field,
                cut,
                f"an integer in 1..{last} or one of {', '.join(self.block_names[:-1])}",
                f"{self.arch} has {self.num_blocks} blocks; the cut after {self.block_names[-1]!r} "
                "would leave nothing on the server",
            )
        return index

    def blocks_range(self, start: int, stop: int) -> nn.Sequential:
        """``nn.Sequential`` of ``blocks[start:stop]`` -- the same modules, not copies."""
        if not (0 <= int(start) <= int(stop) <= self.num_blocks):
            raise ValueError(f"need 0 <= start <= stop <= {self.num_blocks}, got start={start}, stop={stop}")
        return nn.Sequential(*[self.blocks[i] for i in range(int(start), int(stop))])

    def client_part(self, cut: int | str) -> nn.Sequential:
        """Blocks ``0 .. cut-1`` (what runs on the device), sharing modules with this model."""
        return self.blocks_range(0, self.resolve_cut(cut))

    def server_part(self, cut: int | str) -> nn.Sequential:
        """Blocks ``cut .. L-1`` (what runs on the server), sharing modules with this model."""
        return self.blocks_range(self.resolve_cut(cut), self.num_blocks)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, input_shape={self.input_shape}, blocks={list(self.block_names)}"
