"""dFIL: an attack-agnostic Fisher-information bound on reconstructing the input from a cut.

Reference: Kiwan Maeng, Chuan Guo, Sanjay Kariyappa & G. Edward Suh, "Bounding the
Invertibility of Privacy-Preserving Instance Encoding Using Fisher Information", NeurIPS 2023
(arXiv:2305.04146; official code github.com/psu-paws/FIL_instance_encoding, MIT). Only the
definitions are taken from the paper; the code here is our own.

Setting. The client part (every block before the cut) is an encoder ``f: R^d -> R^m``; it sends
the smashed data ``z = f(x) + eps`` with isotropic Gaussian noise ``eps ~ N(0, sigma^2 I_m)``.
For this Gaussian channel the Fisher information matrix of ``z`` about the input ``x`` is

    I(x) = J(x)^T J(x) / sigma^2,        J(x) = df/dx in R^{m x d},

and the paper's *diagonal Fisher information leakage* is its average diagonal entry

    dFIL(x) = tr(I(x)) / d = ||J(x)||_F^2 / (sigma^2 d).

For any attacker whose estimate ``x_hat(z)`` is unbiased, the Cramér-Rao bound
``Cov(x_hat) >= I(x)^{-1}`` and the trace inequality ``tr(A^{-1}) >= d^2 / tr(A)`` for a
positive-definite ``d x d`` matrix ``A`` (Cauchy-Schwarz on its eigenvalues) give

    E ||x_hat - x||^2 / d  >=  d / tr(I(x))  =  1 / dFIL(x).

(The paper derives this unbiased bound from the Cramér-Rao bound and extends it to biased
attackers with a data prior through the van Trees inequality; only the unbiased form is computed
here. If ``J`` has rank < d, e.g. ``m < d``, some direction of ``x`` is invisible, no unbiased
attacker exists and ``1/dFIL`` is a valid but loose lower bound.) The official code uses the same
relation to calibrate its noise: ``sigma^2 = target * mean tr(J^T J) / d`` puts ``1/dFIL`` at the
mean trace equal to ``target`` (see :meth:`FisherResult.sigma_for_mse_bound`).

Units. The bound lives in the space of the model's input. Every ``hasfl_sec`` dataset feeds
``[0, 1]`` pixels without mean/std normalisation (see :mod:`hasfl_sec.data.datasets`), so
``mse_bound`` is a per-pixel MSE on ``[0, 1]`` images, directly comparable with
:func:`hasfl_sec.metrics.mse`, and ``psnr_bound = 10 log10(1 / mse_bound) = 10 log10(dFIL)`` dB
bounds the PSNR of the *expected* MSE of any unbiased attacker (the PSNR of ``E||x_hat - x||^2/d``
is at most ``psnr_bound``; by Jensen this is not a bound on the mean of per-draw PSNRs). If a
model were fed normalised inputs the bound would be in normalised units.

Noise level. With a Gaussian noise defense of known std, pass it as ``sigma``. An undefended
client (``sigma = 0``) has infinite Fisher information, so a *reference* noise level is needed:
``relative_sigma = r`` sets ``sigma = r * RMS(f(x))``, the RMS of the smashed data over the
whole batch (all samples and coordinates: one sigma for the batch, as a real noise defense would
use, so a sample's value depends slightly on its batch). Scaling ``f`` by ``k`` scales ``J`` and
the noise by ``k``, so dFIL is invariant to the activation scale of each cut and cuts can be
compared. The default ``r = 0.1`` (noise at 10% of the signal RMS, a per-coordinate SNR of 20 dB) is a weak
noise that barely perturbs the smashed data, so it reflects the leakage of a (nearly)
undefended client while keeping the bound finite. Since ``dFIL`` scales as ``1 / r^2``, any
other reference is a rescaling (:meth:`FisherResult.at_sigma`) and the ranking of cuts does not
depend on ``r``.

Computation. ``tr(J^T J) = ||J||_F^2`` per sample, with :mod:`torch.func`:

* ``"exact"`` when ``min(d, m) <= exact_max_dim``: the sum of ``||J e_k||^2`` over the ``d``
  input basis vectors (forward-mode JVPs, side ``"input"``) or of ``||J^T e_j||^2`` over the
  ``m`` output basis vectors (reverse-mode VJPs, side ``"output"``), in vectorised chunks. The
  side is the cheaper one: a vectorised JVP cost 1.9-2.9 VJPs on hecnn cuts 1-7 at a batch of 64
  (1.1-2.5 at a batch of 8; one CPU thread; PyTorch's forward-mode GroupNorm rule is slow), so
  JVPs are used only when ``2 d < m``. The default threshold 256 keeps an exact evaluation within
  about 4-8x the cost of the default 64-probe estimate; 16x16 grayscale inputs (d = 256) are
  therefore always exact.
* ``"hutchinson"`` otherwise: the unbiased estimate ``tr(J J^T) = E_u ||J^T u||^2`` with
  ``u ~ N(0, I_m)``, by VJPs, averaged over ``probes`` probes per sample drawn from a seeded
  :class:`torch.Generator`; ``stderr`` is the standard error of that mean. It equals
  ``E_v ||J v||^2`` with ``v ~ N(0, I_d)`` (same mean ``||J||_F^2``, same per-probe variance
  ``2 ||J^T J||_F^2``, so relative stderr ``<= sqrt(2 / probes)``), and reverse mode is the
  cheaper of the two per probe (see above). Rademacher probes (per-probe variance
  ``2 (||J J^T||_F^2 - sum_j (J J^T)_jj^2)``, never larger) are available too.

The client module is run in eval mode (its train/eval flags are restored afterwards) under
``torch.no_grad`` (so no graph is built for its parameters); it is never modified.
torch is imported on first use so that this package stays importable without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .fisher_jacobian import TraceEstimate, batched_client, exact_trace, hutchinson_trace, jacobian_context

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "FisherResult",
    "dfil",
    "dfil_values",
    "dfil_mse_bound",
    "DEFAULT_RELATIVE_SIGMA",
    "DEFAULT_EXACT_MAX_DIM",
    "DEFAULT_PROBES",
]

#: Reference noise std as a fraction of the smashed data's RMS (20 dB SNR), used when no ``sigma``.
DEFAULT_RELATIVE_SIGMA = 0.1
#: Compute ``tr(J^T J)`` exactly when ``min(d, m)`` is at most this (one JVP/VJP per dimension).
DEFAULT_EXACT_MAX_DIM = 256
#: Hutchinson probes per sample otherwise (relative stderr <= sqrt(2 / probes), often far less).
DEFAULT_PROBES = 64
_PROBE_KINDS = ("gaussian", "rademacher")


class _Default(float):
    """The default ``relative_sigma``: a float that remembers it was not passed explicitly."""

    def __repr__(self) -> str:
        return f"{float(self)!r} (default)"


_DEFAULT_RELATIVE = _Default(DEFAULT_RELATIVE_SIGMA)


@dataclass(frozen=True, eq=False)
class FisherResult:
    """Per-sample dFIL of one client part on one batch, and how it was computed.

    Attributes:
        dfil: ``[n]`` tensor, ``tr(J^T J) / (sigma^2 d)``; larger means more leakage.
        mse_bound: ``[n]``, ``1 / dfil``: lower bound on an unbiased attacker's per-coordinate MSE
            in model-input units (``[0, 1]`` pixels here); ``inf`` where ``dfil`` is 0.
        psnr_bound: ``[n]``, ``10 log10(1 / mse_bound)`` dB, an upper bound on the PSNR (peak 1)
            of the attacker's expected MSE.
        trace: ``[n]``, ``tr(J^T J) = ||J||_F^2`` (noise-free; ``dfil = trace / (sigma^2 d)``).
        stderr: ``[n]``, standard error of ``dfil`` (zeros for ``"exact"``).
        sigma: the absolute noise std used.
        relative_sigma: the ``r`` of ``sigma = r * RMS(f(x))``, or ``None`` for an absolute sigma.
        activation_rms: RMS of the smashed data ``f(x)`` over the batch.
        method: ``"exact"`` or ``"hutchinson"``.
        side: ``"input"`` (JVPs along d input directions) or ``"output"`` (VJPs along m output
            directions); Hutchinson always uses ``"output"``.
        probes: Hutchinson probes per sample (0 for ``"exact"``).
        probe: probe distribution (``"gaussian"``/``"rademacher"``), ``None`` for ``"exact"``.
        input_dim: ``d``, features per input sample.
        output_dim: ``m``, features per smashed-data sample.
    """

    dfil: torch.Tensor
    mse_bound: torch.Tensor
    psnr_bound: torch.Tensor
    trace: torch.Tensor
    stderr: torch.Tensor
    sigma: float
    relative_sigma: float | None
    activation_rms: float
    method: str
    side: str
    probes: int
    probe: str | None
    input_dim: int
    output_dim: int

    def at_sigma(self, sigma: float) -> FisherResult:
        """The same Jacobians under another absolute noise std (dFIL scales as ``1 / sigma^2``)."""
        sigma = _check_positive(sigma, "sigma")
        dfil_, stderr = _scale(self.trace, self.stderr * self.sigma**2 * self.input_dim, sigma, self.input_dim)
        bound, psnr_ = _bounds(dfil_)
        return replace(self, dfil=dfil_, mse_bound=bound, psnr_bound=psnr_, stderr=stderr, sigma=sigma,
                       relative_sigma=None)

    def sigma_for_mse_bound(self, target: float, reduction: str = "max") -> float:
        """Absolute noise std for which ``mse_bound`` reaches ``target`` (model-input units).

        ``sigma^2 = target * t / d`` with ``t`` the ``"max"`` (every sample of the batch reaches the
        target) or ``"mean"`` (the official code's calibration: the bound at the mean trace) of
        ``trace`` over the batch.
        """
        target = _check_positive(target, "target")
        if reduction not in ("max", "mean"):
            raise ValueError(f"reduction must be 'max' or 'mean'; got {reduction!r}")
        t = float(self.trace.max() if reduction == "max" else self.trace.mean())
        return math.sqrt(target * t / self.input_dim)

    def as_dict(self) -> dict[str, Any]:
        """Batch means and the settings, as plain floats/strings (for tables and JSON)."""
        finite = self.mse_bound[self.mse_bound.isfinite()]
        return {
            "dfil_mean": float(self.dfil.mean()),
            "dfil_stderr_mean": float(self.stderr.mean()),
            "mse_bound_mean": float(finite.mean()) if finite.numel() else math.inf,
            "psnr_bound_mean": float(self.psnr_bound.mean()),
            "sigma": self.sigma,
            "relative_sigma": self.relative_sigma,
            "activation_rms": self.activation_rms,
            "method": self.method,
            "side": self.side,
            "probes": self.probes,
            "probe": self.probe,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
        }


# ----------------------------------------------------------------------------------- validation


def _check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _noise_spec(sigma: float | None, relative_sigma: float | None) -> tuple[float | None, float | None]:
    """(absolute sigma, relative sigma), exactly one not None."""
    explicit_relative = relative_sigma is not None and not isinstance(relative_sigma, _Default)
    if sigma is not None and explicit_relative:
        raise ValueError(
            f"give either sigma (absolute noise std) or relative_sigma (fraction of the smashed data's RMS), "
            f"not both; got sigma={sigma!r}, relative_sigma={relative_sigma!r}"
        )
    if sigma is not None:
        return _check_positive(sigma, "sigma"), None
    if relative_sigma is None:
        raise ValueError(
            "give one of sigma (absolute noise std of a Gaussian noise defense) or relative_sigma "
            f"(reference noise as a fraction of the smashed data's RMS, e.g. {DEFAULT_RELATIVE_SIGMA}); "
            "without noise the Fisher information of an undefended client is infinite"
        )
    return None, _check_positive(relative_sigma, "relative_sigma")


# ----------------------------------------------------------------------------------- helpers


def _scale(trace: torch.Tensor, trace_stderr: torch.Tensor, sigma: float, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    denom = sigma**2 * d
    return trace / denom, trace_stderr / denom


def _bounds(dfil_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    with torch.no_grad():
        bound = torch.where(dfil_ > 0, 1.0 / dfil_, torch.full_like(dfil_, math.inf))
        psnr_ = 10.0 * torch.log10(dfil_)  # = 10 log10(1 / bound); -inf where dfil is 0
    return bound, psnr_


def _check_options(
    exact_max_dim: Any, probes: Any, chunk_size: Any, probe: Any, generator: Any
) -> tuple[int, int, int | None]:
    """Validation phase of :func:`dfil`: the computation options (``exact_max_dim``, ``probes``,
    ``chunk_size``, ``probe``, ``generator``), checked in that order so the first bad one is named."""
    import torch

    exact_max_dim = _check_int(exact_max_dim, "exact_max_dim", 0)
    probes = _check_int(probes, "probes", 2)
    if chunk_size is not None:
        chunk_size = _check_int(chunk_size, "chunk_size", 1)
    if probe not in _PROBE_KINDS:
        raise ValueError(f"probe must be one of {_PROBE_KINDS}; got {probe!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
    return exact_max_dim, probes, chunk_size


def _check_batch(x: Any) -> torch.Tensor:
    """Validation phase of :func:`dfil`: ``x`` must be a floating batch ``[n, ...]`` with ``n >= 1``;
    returned detached, so no graph reaches the caller's tensor."""
    import torch

    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 1 or not x.is_floating_point():
        raise ValueError(
            "x must be a floating-point tensor [n, ...] holding at least one sample; got "
            + (f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__)
        )
    return x.detach()


def _noise_reference(
    client: nn.Module, x: torch.Tensor, abs_sigma: float | None, rel_sigma: float | None
) -> tuple[int, float, float]:
    """Noise phase of :func:`dfil`: ``(m, RMS(f(x)), sigma)`` from one forward pass of the batch.

    ``sigma`` is ``abs_sigma`` if given, else ``rel_sigma * RMS`` over the whole batch, which needs
    a finite, non-zero RMS.
    """
    z = client(x).reshape(x.shape[0], -1)
    m = z.shape[1]
    rms = float(z.double().pow(2).mean().sqrt())
    if abs_sigma is None:
        if not rms > 0 or not math.isfinite(rms):
            raise ValueError(
                f"relative_sigma needs smashed data with a finite, non-zero RMS; got RMS {rms} "
                "(pass an absolute sigma instead)"
            )
        abs_sigma = rel_sigma * rms
    return m, rms, abs_sigma


def _result(
    estimate: TraceEstimate, sigma: float, rel_sigma: float | None, rms: float, d: int, m: int
) -> FisherResult:
    """Final phase of :func:`dfil`: scale the traces by ``sigma^2 d`` into dFIL, derive the bounds
    and record how they were computed."""
    dfil_, stderr = _scale(estimate.trace, estimate.stderr, sigma, d)
    bound, psnr_ = _bounds(dfil_)
    return FisherResult(
        dfil=dfil_,
        mse_bound=bound,
        psnr_bound=psnr_,
        trace=estimate.trace,
        stderr=stderr,
        sigma=float(sigma),
        relative_sigma=rel_sigma,
        activation_rms=rms,
        method=estimate.method,
        side=estimate.side,
        probes=estimate.probes,
        probe=estimate.probe,
        input_dim=d,
        output_dim=m,
    )


# ----------------------------------------------------------------------------------- public API


def dfil(
    client: nn.Module,
    x: torch.Tensor,
    *,
    sigma: float | None = None,
    relative_sigma: float | None = _DEFAULT_RELATIVE,
    exact_max_dim: int = DEFAULT_EXACT_MAX_DIM,
    probes: int = DEFAULT_PROBES,
    generator: torch.Generator | None = None,
    probe: str = "gaussian",
    chunk_size: int | None = None,
) -> FisherResult:
    """Per-sample dFIL of the client part ``client`` at the inputs ``x`` (Maeng et al., NeurIPS 2023).

    Args:
        client: the encoder up to the cut (e.g. ``SplitModel.client_part(cut)``). It must process
            every sample independently (true of every model here: GroupNorm, no BatchNorm). It is
            run in eval mode and left unchanged.
        x: a batch ``[n, ...]`` in the model's input space (``[n, C, H, W]`` pixels in ``[0, 1]``).
        sigma: absolute std of the Gaussian noise added to the smashed data (a noise defense's std).
        relative_sigma: reference noise ``sigma = relative_sigma * RMS(client(x))`` (RMS over the
            whole batch). Default 0.1, used only when ``sigma`` is not given; pass
            ``relative_sigma=None`` with a ``sigma``, or leave it out. Giving both, or neither
            (``sigma=None, relative_sigma=None``), is a :class:`ValueError`.
        exact_max_dim: compute ``tr(J^T J)`` exactly when ``min(d, m) <= exact_max_dim``
            (``0`` forces Hutchinson).
        probes: Hutchinson probes per sample (>= 2, for the standard error).
        generator: source of the probes, drawn chunk by chunk; ``None`` uses a fresh CPU
            generator seeded with 0, so results are deterministic either way (for a given
            ``chunk_size``).
        probe: ``"gaussian"`` (``N(0, I)``) or ``"rademacher"`` (+-1) probes.
        chunk_size: directions (basis vectors or probes) pushed through per vectorised call;
            ``None`` picks at most 64, fewer if the call's outputs would exceed ~8M floats.

    Returns:
        A :class:`FisherResult` with per-sample ``dfil``, ``mse_bound``, ``psnr_bound``, ``trace``
        and ``stderr`` on ``x``'s device, and the settings used.

    Raises:
        ValueError: bad noise arguments (both/neither given, not finite and > 0), a bad
            ``exact_max_dim``/``probes``/``chunk_size``/``probe``, an ``x`` that is not a
            floating batch tensor, or a smashed data of RMS 0 with ``relative_sigma``.
    """
    abs_sigma, rel_sigma = _noise_spec(sigma, relative_sigma)
    exact_max_dim, probes, chunk_size = _check_options(exact_max_dim, probes, chunk_size, probe, generator)
    x = _check_batch(x)
    d = x[0].numel()
    batched = batched_client(client)

    with jacobian_context(client):
        m, rms, abs_sigma = _noise_reference(client, x, abs_sigma, rel_sigma)
        if min(d, m) <= exact_max_dim:
            estimate = exact_trace(batched, x, m, chunk_size)
        else:
            estimate = hutchinson_trace(batched, x, m, probes, probe, generator, chunk_size)

    return _result(estimate, abs_sigma, rel_sigma, rms, d, m)


def dfil_values(client: nn.Module, x: torch.Tensor, **kwargs: Any) -> np.ndarray:
    """Per-sample dFIL as a float64 array (the ``"dfil"`` metric); ``kwargs`` go to :func:`dfil`."""
    return dfil(client, x, **kwargs).dfil.detach().cpu().double().numpy()


def dfil_mse_bound(client: nn.Module, x: torch.Tensor, **kwargs: Any) -> np.ndarray:
    """Per-sample ``1 / dFIL`` as a float64 array (the ``"dfil_mse_bound"`` metric)."""
    return dfil(client, x, **kwargs).mse_bound.detach().cpu().double().numpy()
