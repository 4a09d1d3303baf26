"""Tests of hasfl_sec.metrics.fisher (dFIL, Maeng et al. NeurIPS 2023): closed forms on linear
encoders, scale invariance of the relative noise, agreement of the exact and Hutchinson paths on
the hecnn client part, determinism and argument validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hasfl_sec.metrics import METRICS, FisherResult, dfil, dfil_mse_bound, dfil_values
from hasfl_sec.models import build_model


class _Scale(nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k * x


def _linear(d: int, m: int, bias: bool, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, m, bias=bias))


def _closed_form(client: nn.Sequential, sigma: float, d: int) -> float:
    """dFIL of f(x) = A x + b under N(0, sigma^2 I): ||A||_F^2 / (sigma^2 d), the same for every x."""
    return float(client[1].weight.detach().double().pow(2).sum()) / (sigma**2 * d)


def _inputs(n: int = 4, shape: tuple[int, ...] = (3, 4, 4), seed: int = 1) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hecnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("hecnn", in_channels=1, num_classes=10, image_size=16)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Smooth [0, 1] images of shape [4, 1, 16, 16] (the bound is in [0, 1]-pixel units)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    return torch.stack([0.5 + 0.5 * torch.sin(2 * math.pi * (f * xx + g * yy)) for f, g in
                        [(1, 0.5), (2, 1), (0.5, 3), (3, 2)]]).unsqueeze(1)


# ----------------------------------------------------------------------------------- linear closed form


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("m", [200, 60, 20])  # m > 2d: JVPs over the inputs; else VJPs over the outputs
def test_linear_exact_matches_closed_form(m: int, bias: bool) -> None:
    d, sigma = 48, 0.3
    client = _linear(d, m, bias)
    res = dfil(client, _inputs(), sigma=sigma)
    expected = _closed_form(client, sigma, d)
    assert isinstance(res, FisherResult)
    assert res.method == "exact" and res.probes == 0 and res.probe is None
    assert res.side == ("input" if 2 * d < m else "output")
    assert (res.input_dim, res.output_dim, res.sigma, res.relative_sigma) == (d, m, sigma, None)
    np.testing.assert_allclose(res.dfil.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(res.trace.numpy(), expected * sigma**2 * d, rtol=1e-5)
    assert torch.all(res.stderr == 0)
    np.testing.assert_allclose(res.mse_bound.numpy(), 1.0 / expected, rtol=1e-5)
    np.testing.assert_allclose(res.psnr_bound.numpy(), 10 * math.log10(expected), rtol=1e-5)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
@pytest.mark.parametrize("m", [200, 20])
def test_linear_hutchinson_within_statistical_tolerance(m: int, probe: str) -> None:
    d, sigma, probes = 48, 0.3, 400
    client = _linear(d, m, bias=True)
    res = dfil(client, _inputs(), sigma=sigma, exact_max_dim=0, probes=probes,
               generator=torch.Generator().manual_seed(3), probe=probe)
    expected = _closed_form(client, sigma, d)
    assert res.method == "hutchinson" and res.probes == probes and res.probe == probe
    assert torch.all(res.stderr > 0)
    # Gaussian probes: per-probe variance 2 ||A^T A||_F^2 <= 2 tr(A^T A)^2, so a few % here
    assert np.all(np.abs(res.dfil.numpy() - expected) < 4 * res.stderr.numpy())
    np.testing.assert_allclose(res.dfil.numpy(), expected, rtol=0.1)
    # the reported stderr is of the right size: with G = A^T A (probes in R^d, m >= d) or A A^T
    # (probes in R^m, m < d) the per-probe variance is 2 ||G||_F^2 (Gaussian) or
    # 2 (||G||_F^2 - sum_k G_kk^2) (Rademacher), and stderr = sqrt(variance / probes) / (sigma^2 d)
    a = client[1].weight.detach().double()
    gram = a.T @ a if res.side == "input" else a @ a.T
    var = 2 * (gram.pow(2).sum() - (gram.diagonal().pow(2).sum() if probe == "rademacher" else 0))
    true_stderr = float(var.sqrt()) / math.sqrt(probes) / (sigma**2 * d)
    np.testing.assert_allclose(res.stderr.numpy(), true_stderr, rtol=0.35)


def test_constant_encoder_has_zero_dfil_and_infinite_bound() -> None:
    client = _linear(12, 5, bias=True)
    with torch.no_grad():
        client[1].weight.zero_()
    res = dfil(client, _inputs(shape=(12,)), sigma=1.0)
    assert torch.all(res.dfil == 0) and torch.all(torch.isinf(res.mse_bound))
    assert torch.all(torch.isneginf(res.psnr_bound))


# ----------------------------------------------------------------------------------- relative sigma


def test_relative_sigma_is_invariant_to_scaling_the_client() -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten())
    x = _inputs(shape=(3, 6, 6))
    ref = dfil(base, x, relative_sigma=0.2)
    scaled = dfil(nn.Sequential(base, _Scale(7.5)), x, relative_sigma=0.2)
    np.testing.assert_allclose(scaled.dfil.numpy(), ref.dfil.numpy(), rtol=1e-4)
    assert scaled.sigma == pytest.approx(7.5 * ref.sigma, rel=1e-6)
    assert ref.sigma == pytest.approx(0.2 * ref.activation_rms) and ref.relative_sigma == 0.2
    # an absolute sigma is not invariant: dFIL grows as k^2
    a = dfil(base, x, sigma=0.1).dfil
    b = dfil(nn.Sequential(base, _Scale(7.5)), x, sigma=0.1).dfil
    np.testing.assert_allclose(b.numpy(), 7.5**2 * a.numpy(), rtol=1e-4)
    # dFIL scales as 1 / relative_sigma^2, and the default relative sigma is 0.1
    default = dfil(base, x)
    assert default.relative_sigma == 0.1
    np.testing.assert_allclose(default.dfil.numpy(), 4 * ref.dfil.numpy(), rtol=1e-5)


def test_rescaling_and_calibration_helpers() -> None:
    client = _linear(20, 30, bias=False)
    x = _inputs(shape=(20,))
    res = dfil(client, x, sigma=0.5)
    other = res.at_sigma(2.0)
    np.testing.assert_allclose(other.dfil.numpy(), dfil(client, x, sigma=2.0).dfil.numpy(), rtol=1e-5)
    np.testing.assert_allclose(other.mse_bound.numpy(), 16 * res.mse_bound.numpy(), rtol=1e-5)
    target = 0.01
    sigma = res.sigma_for_mse_bound(target)
    assert float(res.at_sigma(sigma).mse_bound.min()) == pytest.approx(target, rel=1e-5)
    summary = res.as_dict()
    assert summary["method"] == "exact" and summary["dfil_mean"] == pytest.approx(float(res.dfil.mean()))


# ----------------------------------------------------------------------------------- the hecnn client part


@pytest.fixture(scope="module")
def exact_cut1(hecnn, images) -> FisherResult:
    return dfil(hecnn.client_part(1), images, relative_sigma=0.1)


def test_hecnn_shallow_cut_leaks_more_than_deep_cut_at_equal_sigma(hecnn, images, exact_cut1) -> None:
    # untrained PyTorch-default init, seeded: dFIL(cut 1) / dFIL(cut 7) was 3.7-7.6 over 6 init
    # seeds on digits images at sigma = 0.1 (not a theorem: the noise enters at different layers)
    shallow = exact_cut1.at_sigma(0.1)
    deep = dfil(hecnn.client_part(7), images, sigma=0.1, exact_max_dim=0, probes=16,
                generator=torch.Generator().manual_seed(0))
    assert shallow.method == "exact" and shallow.side == "input"  # d = 256 JVPs beat m = 4096 VJPs
    assert (shallow.input_dim, shallow.output_dim, deep.output_dim) == (256, 16 * 16 * 16, 256)
    assert torch.all(shallow.dfil > 2 * deep.dfil)


def test_hecnn_exact_and_hutchinson_agree(hecnn, images, exact_cut1) -> None:
    est = dfil(hecnn.client_part(1), images, relative_sigma=0.1, exact_max_dim=0, probes=32,
               generator=torch.Generator().manual_seed(1))
    assert est.method == "hutchinson" and est.side == "output" and est.sigma == exact_cut1.sigma
    assert np.all(np.abs(est.dfil.numpy() - exact_cut1.dfil.numpy()) < 5 * est.stderr.numpy())
    np.testing.assert_allclose(est.dfil.numpy(), exact_cut1.dfil.numpy(), rtol=0.15)


def test_determinism_and_client_left_unchanged(hecnn, images) -> None:
    client = hecnn.client_part(2)
    hecnn.train()
    before = {k: v.clone() for k, v in hecnn.state_dict().items()}
    kw = dict(relative_sigma=0.1, exact_max_dim=0, probes=8)
    a = dfil(client, images, generator=torch.Generator().manual_seed(5), **kw)
    b = dfil(client, images, generator=torch.Generator().manual_seed(5), **kw)
    c = dfil(client, images, generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(a.dfil, b.dfil) and torch.equal(a.stderr, b.stderr)
    assert not torch.equal(a.dfil, c.dfil)
    assert torch.equal(dfil(client, images, **kw).dfil, dfil(client, images, **kw).dfil)  # default seed
    assert all(m.training for m in hecnn.modules())  # train/eval flags restored
    assert all(p.grad is None and p.requires_grad for p in hecnn.parameters())
    assert all(torch.equal(before[k], v) for k, v in hecnn.state_dict().items())


# ----------------------------------------------------------------------------------- registry and errors


def test_registered_as_model_metrics() -> None:
    spec, bound = METRICS.get("dfil"), METRICS.get("dfil_mse_bound")
    assert spec.needs == "model" and spec.higher_is_better is True and spec.fn is dfil_values
    assert bound.needs == "model" and bound.higher_is_better is False and bound.fn is dfil_mse_bound
    client, x = _linear(10, 6, bias=True), _inputs(shape=(10,))
    values = spec(client, x, sigma=0.2)
    assert isinstance(values, np.ndarray) and values.shape == (4,) and values.dtype == np.float64
    np.testing.assert_allclose(bound(client, x, sigma=0.2), 1.0 / values, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sigma=0.1, relative_sigma=0.1), "not both"),
        (dict(sigma=None, relative_sigma=None), "give one of sigma"),
        (dict(sigma=0.0), "sigma must be a finite number > 0"),
        (dict(sigma=-1.0), "sigma must be a finite number > 0"),
        (dict(sigma=float("nan")), "sigma must be a finite number > 0"),
        (dict(relative_sigma=0.0), "relative_sigma must be a finite number > 0"),
        (dict(probes=1), "probes must be an integer >= 2"),
        (dict(exact_max_dim=-1), "exact_max_dim must be an integer >= 0"),
        (dict(chunk_size=0), "chunk_size must be an integer >= 1"),
        (dict(probe="normal"), "probe must be one of"),
        (dict(generator=0), "generator must be a torch.Generator"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        dfil(_linear(10, 6, bias=True), _inputs(shape=(10,)), **kwargs)


def test_bad_inputs_raise_value_error() -> None:
    client = _linear(10, 6, bias=False)
    with pytest.raises(ValueError, match="floating-point tensor"):
        dfil(client, torch.zeros(4, 10, dtype=torch.long), sigma=1.0)
    with pytest.raises(ValueError, match="floating-point tensor"):
        dfil(client, np.zeros((4, 10)), sigma=1.0)
    with torch.no_grad():
        client[1].weight.zero_()
    with pytest.raises(ValueError, match="non-zero RMS"):
        dfil(client, _inputs(shape=(10,)), relative_sigma=0.1)
