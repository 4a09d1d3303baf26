"""Per-block and per-cut cost profiles, measured by running the model (never hand-typed).

:func:`profile_model` runs every block of a :class:`~hasfl_sec.models.split.SplitModel` once on a
real batch and records, per sample:

* forward and backward FLOPs, counted by ``torch.utils.flop_counter.FlopCounterMode``. It counts
  matrix-multiply and convolution FLOPs (2 per multiply-accumulate) and ignores elementwise work
  (ReLU, normalisation, pooling, additions), so the numbers are the dominant compute, not a
  complete op count;
* the size of each block's output (the smashed data when a cut follows that block);
* parameter counts and bytes;
* the bytes autograd saves for backward while the block runs forward (measured with
  ``torch.autograd.graph.saved_tensors_hooks``), excluding parameters. A tensor saved by several
  blocks (a block's output that the next block saves as its input) is charged once, to the first
  block that saved it, so sums over blocks are the real activation memory of a model part.

The per-cut view (:class:`CutProfile`) aggregates blocks ``0..c-1`` (client) and ``c..L-1``
(server).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.utils.flop_counter import FlopCounterMode

from .split import SplitModel

__all__ = ["BlockProfile", "CutProfile", "ModelProfile", "profile_model"]


@dataclass(frozen=True)
class BlockProfile:
    """Measured costs of one block, all per sample except the parameter figures.

    Attributes:
        index: 0-based position of the block.
        name: the block's name.
        fwd_flops: forward FLOPs.
        bwd_flops: backward FLOPs (parameter gradients, plus the input gradient for every block
            but the first, whose input is raw data that needs no gradient).
        out_numel: elements of the block's output.
        out_bytes: bytes of the block's output as float32 (``4 * out_numel``).
        param_count: number of parameters of the block.
        param_bytes: bytes of those parameters.
        saved_bytes: bytes autograd saves for backward during this block's forward.
    """

    index: int
    name: str
    fwd_flops: int
    bwd_flops: int
    out_numel: int
    out_bytes: int
    param_count: int
    param_bytes: int
    saved_bytes: int


@dataclass(frozen=True)
class CutProfile:
    """Costs of splitting at one cut; FLOPs and activation figures are per sample.

    Attributes:
        cut: the cut index ``c`` (client runs blocks ``0..c-1``).
        name: the name of the block the cut follows.
        client_fwd_flops, client_bwd_flops: device-side compute.
        server_fwd_flops, server_bwd_flops: server-side compute.
        smashed_bytes: bytes of the activation sent to the server; the gradient sent back has the
            same size.
        client_param_bytes: bytes of the client part's parameters (what a device downloads/uploads).
        client_activation_bytes: bytes autograd keeps on the device for backward.
        client_params: number of client-part parameters.
    """

    cut: int
    name: str
    client_fwd_flops: int
    client_bwd_flops: int
    server_fwd_flops: int
    server_bwd_flops: int
    smashed_bytes: int
    client_param_bytes: int
    client_activation_bytes: int
    client_params: int


@dataclass(frozen=True)
class ModelProfile:
    """Measured profile of a split model: one :class:`BlockProfile` per block, one
    :class:`CutProfile` per legal cut."""

    arch: str
    input_shape: tuple[int, ...]
    blocks: tuple[BlockProfile, ...]
    cuts: tuple[CutProfile, ...]

    def cut(self, c: int) -> CutProfile:
        """The profile of cut ``c`` (an integer in ``1..L-1``)."""
        for cp in self.cuts:
            if cp.cut == c:
                return cp
        raise KeyError(f"{self.arch} has no cut {c!r}; legal cuts are 1..{len(self.blocks) - 1}")

    @property
    def total_fwd_flops(self) -> int:
        """Forward FLOPs of the whole model, per sample."""
        return sum(b.fwd_flops for b in self.blocks)

    @property
    def total_bwd_flops(self) -> int:
        """Backward FLOPs of the whole model, per sample (no gradient for the raw input)."""
        return sum(b.bwd_flops for b in self.blocks)

    @property
    def total_params(self) -> int:
        """Number of parameters of the whole model."""
        return sum(b.param_count for b in self.blocks)

    def to_frame(self) -> pd.DataFrame:
        """One row per cut, columns as in :class:`CutProfile`."""
        fields = [f.name for f in dataclasses.fields(CutProfile)]
        return pd.DataFrame([dataclasses.asdict(c) for c in self.cuts], columns=fields)

    def blocks_frame(self) -> pd.DataFrame:
        """One row per block, columns as in :class:`BlockProfile`."""
        fields = [f.name for f in dataclasses.fields(BlockProfile)]
        return pd.DataFrame([dataclasses.asdict(b) for b in self.blocks], columns=fields)


def profile_model(model: SplitModel, *, batch_size: int = 2) -> ModelProfile:
    """Measure per-block costs of ``model`` and aggregate them per legal cut.

    Each block runs separately, in train mode, on a real batch of shape
    ``(batch_size, *model.input_shape)`` (:meth:`SplitModel.example_input` from a fixed private generator, propagated
    through the earlier blocks), forward and then backward with an all-ones output gradient, under
    ``FlopCounterMode``. Block 0's input does not require a gradient (as on a real client); every
    later block's input does, since the gradient must flow on to earlier blocks. Counts are divided
    by the batch size. FlopCounterMode counts matmul/convolution FLOPs only (2 per MAC) and
    ignores elementwise ops.

    Side effects: none. The module train/eval flags are restored, torch's global RNG state is
    restored (dropout draws do not shift the caller's stream), and gradients are taken with
    ``torch.autograd.grad``, so no parameter ``.grad`` is created or changed.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    modes = [(m, m.training) for m in model.modules()]
    param_ptrs = {p.data_ptr() for p in model.parameters()}
    seen: set[tuple[int, int, torch.dtype]] = set()
    keep_alive: list[torch.Tensor] = []  # stops memory reuse from aliasing data_ptr keys
    gen = torch.Generator().manual_seed(0)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = model.example_input(batch_size, generator=gen, device=device, dtype=dtype)
    blocks: list[BlockProfile] = []
    try:
        model.train()
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            for k, (name, block) in enumerate(zip(model.block_names, model.blocks)):
                inp = x if k == 0 else x.detach().requires_grad_(True)
                saved = 0

                def pack(t: torch.Tensor) -> torch.Tensor:
                    nonlocal saved
                    keep_alive.append(t)
                    key = (t.data_ptr(), t.numel(), t.dtype)
                    if t.data_ptr() not in param_ptrs and key not in seen:
                        seen.add(key)
                        saved += t.numel() * t.element_size()
                    return t

                with saved_tensors_hooks(pack, lambda t: t):
                    with FlopCounterMode(display=False) as fwd_counter:
                        out = block(inp)
                params = [p for p in block.parameters() if p.requires_grad]
                targets = params + ([inp] if inp.requires_grad else [])
                with FlopCounterMode(display=False) as bwd_counter:
                    if targets and out.requires_grad:
                        torch.autograd.grad(out, targets, grad_outputs=torch.ones_like(out), allow_unused=True)
                keep_alive.append(out)
                numel = out.numel() // batch_size
                blocks.append(
                    BlockProfile(
                        index=k,
                        name=name,
                        fwd_flops=int(fwd_counter.get_total_flops()) // batch_size,
                        bwd_flops=int(bwd_counter.get_total_flops()) // batch_size,
                        out_numel=numel,
                        out_bytes=4 * numel,
                        param_count=sum(p.numel() for p in block.parameters()),
                        param_bytes=sum(p.numel() * p.element_size() for p in block.parameters()),
                        saved_bytes=saved // batch_size,
                    )
                )
                x = out.detach()
    finally:
        for module, training in modes:
            module.training = training
        keep_alive.clear()
    return ModelProfile(
        arch=model.arch,
        input_shape=tuple(model.input_shape),  # type: ignore[arg-type]
        blocks=tuple(blocks),
        cuts=tuple(_cut_profile(blocks, c) for c in model.legal_cuts),
    )


def _cut_profile(blocks: list[BlockProfile], c: int) -> CutProfile:
    """Aggregate block profiles into the profile of cut ``c``."""
    client, server = blocks[:c], blocks[c:]
    return CutProfile(
        cut=c,
        name=blocks[c - 1].name,
        client_fwd_flops=sum(b.fwd_flops for b in client),
        client_bwd_flops=sum(b.bwd_flops for b in client),
        server_fwd_flops=sum(b.fwd_flops for b in server),
        server_bwd_flops=sum(b.bwd_flops for b in server),
        smashed_bytes=blocks[c - 1].out_bytes,
        client_param_bytes=sum(b.param_bytes for b in client),
        client_activation_bytes=sum(b.saved_bytes for b in client),
        client_params=sum(b.param_count for b in client),
    )
