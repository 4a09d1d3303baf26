"""The Jacobian machinery behind :func:`hasfl_sec.metrics.fisher.dfil`: ``tr(J^T J)`` per sample.

``J`` is the Jacobian of the client part at each sample of a batch. Its squared Frobenius norm is
summed over basis vectors (``"exact"``) or estimated from random probes (``"hutchinson"``) with
vectorised forward-mode JVPs or reverse-mode VJPs from :mod:`torch.func`; see the module
docstring of :mod:`hasfl_sec.metrics.fisher` for the choice of method and side. Callers run these
functions inside :func:`jacobian_context` (eval mode, ``torch.no_grad``). torch is imported on
first use.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ["TraceEstimate", "eval_mode", "jacobian_context", "batched_client", "chunks", "draw", "squared_norms",
           "exact_trace", "hutchinson_trace", "auto_chunk", "CHUNK_BUDGET", "MAX_AUTO_CHUNK", "JVP_COST"]

#: Auto chunking: at most about this many floats in the JVP/VJP outputs of one chunk.
CHUNK_BUDGET = 1 << 23
#: ... and at most this many directions per call (the backward also holds every activation).
MAX_AUTO_CHUNK = 64
#: Cost of one forward-mode JVP in reverse-mode VJPs (hecnn cuts 1-7, one thread: 1.1-2.9).
JVP_COST = 2


@dataclass(frozen=True)
class TraceEstimate:
    """``tr(J^T J)`` per sample (``[n]``), its standard error, and how it was computed."""

    trace: torch.Tensor
    stderr: torch.Tensor
    method: str
    side: str
    probes: int
    probe: str | None


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode and restore every submodule's own train/eval flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def jacobian_context(client: nn.Module) -> Iterator[None]:
    """Setting of every forward pass of :func:`dfil`: ``client`` in eval mode (flags restored),
    ``torch.no_grad`` (no graph for its parameters), torch.func's deprecation noise silenced."""
    import torch

    with eval_mode(client), torch.no_grad(), warnings.catch_warnings():
        # torch.func's forward-mode decompositions call the deprecated torch.jit.script internally
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
        yield


def batched_client(client: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``client`` vmapped over the batch one sample at a time, each output flattened to ``[m]``.

    Per-sample calls make ``J`` block-diagonal over the batch, so one JVP/VJP gives every sample's
    ``J v`` / ``J^T u`` at once.
    """
    from torch.func import vmap

    def per_sample(xi: torch.Tensor) -> torch.Tensor:
        return client(xi.unsqueeze(0)).reshape(-1)

    return vmap(per_sample)


def auto_chunk(n: int, d: int, m: int) -> int:
    """Directions per vectorised call when ``chunk_size`` is ``None`` (bounded by the float budget)."""
    per_direction = n * (m + d)
    return max(1, min(MAX_AUTO_CHUNK, CHUNK_BUDGET // max(1, per_direction)))


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive slices of ``size`` covering ``range(total)``."""
    for start in range(0, total, size):
        yield start, min(start + size, total)


def draw(kind: str, shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Probe vectors from ``generator`` (on its own device), returned on ``like``'s device/dtype."""
    import torch

    if kind == "gaussian":
        v = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    else:
        bits = torch.randint(0, 2, shape, generator=generator, device=generator.device)
        v = bits.to(like.dtype).mul_(2).sub_(1)
    return v.to(like.device)


def squared_norms(
    batched: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    side: str,
    directions: Callable[[int, int], torch.Tensor],
    count: int,
    chunk: int,
) -> torch.Tensor:
    """``[count, n]``: ``||J v_k||^2`` (side ``"input"``) or ``||J^T u_k||^2`` (``"output"``) per sample.

    ``directions(start, stop)`` returns the directions ``[k, n, *x.shape[1:]]`` (input side) or
    ``[k, n, m]`` (output side) for ``k = stop - start``.
    """
    from torch.func import jvp, vjp, vmap

    out = []
    if side == "input":
        def push(v: torch.Tensor) -> torch.Tensor:
            return jvp(batched, (x,), (v,))[1]

        for start, stop in chunks(count, chunk):
            jv = vmap(push)(directions(start, stop))  # [k, n, m]
            out.append(jv.pow(2).sum(dim=2))
    else:
        _, pull = vjp(batched, x)
        for start, stop in chunks(count, chunk):
            (jtu,) = vmap(pull)(directions(start, stop))  # [k, n, *x.shape[1:]]
            out.append(jtu.pow(2).flatten(2).sum(dim=2))
    import torch

    return torch.cat(out, dim=0)


def exact_trace(
    batched: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, m: int, chunk_size: int | None
) -> TraceEstimate:
    """Exact ``tr(J^T J)``: the sum of ``||J e_k||^2`` over the cheaper side's basis vectors.

    JVPs along the ``d`` input directions when ``JVP_COST * d < m``, else VJPs along the ``m``
    output directions (one forward-mode JVP costs about ``JVP_COST`` VJPs); no standard error.
    """
    import torch

    n, d = x.shape[0], x[0].numel()
    side = "input" if JVP_COST * d < m else "output"
    dim = d if side == "input" else m

    def basis(start: int, stop: int) -> torch.Tensor:
        k = stop - start
        e = torch.zeros(k, dim, dtype=x.dtype, device=x.device)
        e[torch.arange(k), torch.arange(start, stop)] = 1.0
        shape = x.shape[1:] if side == "input" else (m,)
        return e.reshape(k, 1, *shape).expand(k, n, *shape)

    sq = squared_norms(batched, x, side, basis, dim, chunk_size or min(dim, auto_chunk(n, d, m)))
    trace = sq.sum(dim=0)
    return TraceEstimate(trace, torch.zeros_like(trace), "exact", side, 0, None)


def hutchinson_trace(
    batched: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    m: int,
    probes: int,
    probe: str,
    generator: torch.Generator | None,
    chunk_size: int | None,
) -> TraceEstimate:
    """Hutchinson estimate ``tr(J J^T) = E_u ||J^T u||^2`` over ``probes`` probes, by VJPs.

    Used when both ``d`` and ``m`` are too large for an exact sum. Probes are drawn chunk by chunk,
    in order, from ``generator`` (a fresh CPU generator seeded with 0 when ``None``), so the result
    is deterministic for a given ``chunk_size``; the standard error is that of the probe mean.
    """
    import torch

    n, d = x.shape[0], x[0].numel()
    side = "output"  # reverse mode: see the module docstring of hasfl_sec.metrics.fisher
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    def draws(start: int, stop: int) -> torch.Tensor:  # drawn chunk by chunk, in order
        return draw(probe, (stop - start, n, m), gen, x)

    sq = squared_norms(batched, x, side, draws, probes, chunk_size or min(probes, auto_chunk(n, d, m)))
    trace = sq.mean(dim=0)
    trace_stderr = sq.std(dim=0, unbiased=True) / math.sqrt(probes)
    return TraceEstimate(trace, trace_stderr, "hutchinson", side, probes, probe)
