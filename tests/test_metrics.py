"""Tests of hasfl_sec.metrics: golden values, known permutations and closed-form Gaussian MI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from sklearn.feature_selection import mutual_info_regression

from hasfl_sec.errors import ConfigError
from hasfl_sec.metrics import (
    DEPENDENCE,
    METRICS,
    DependenceResult,
    MetricSpec,
    distance_correlation,
    hsic,
    identifiability,
    image_report,
    ksg_mutual_information,
    label_accuracy,
    label_auc,
    match_batch,
    mse,
    nhsic,
    psnr,
    ssim,
)


def _images(n: int = 6, c: int = 1, h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth, distinct random images in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.empty((n, c, h, w))
    for i in range(n):
        for ch in range(c):
            fx, fy, ph = rng.uniform(0.5, 4.0, size=3)
            out[i, ch] = 0.5 + 0.5 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph * 6)
    return out


def _gaussian_pair(rho: float, n: int, d: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x, y in R^d with corr(x_j, y_j) = rho and independent coordinate pairs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return x, y


# ----------------------------------------------------------------------------------- image metrics


def test_identical_images_golden_values() -> None:
    imgs = _images()
    assert np.all(mse(imgs, imgs) == 0.0)
    assert np.all(np.isinf(psnr(imgs, imgs)))
    np.testing.assert_allclose(ssim(imgs, imgs), 1.0, atol=1e-12)


def test_constant_offset_gives_mse_001_and_20_db() -> None:
    truth = 0.9 * _images(seed=1)  # in [0, 0.9] so the offset is not clipped
    recon = truth + 0.1
    np.testing.assert_allclose(mse(recon, truth), 0.01, rtol=1e-9)
    np.testing.assert_allclose(psnr(recon, truth), 20.0, atol=1e-8)
    np.testing.assert_allclose(psnr(recon, truth, data_range=2.0), 20.0 + 20 * math.log10(2), atol=1e-8)


def test_inputs_are_clipped_and_torch_accepted() -> None:
    truth = _images(n=3)
    recon = torch.tensor(truth + 5.0)  # clipped to 1.0
    np.testing.assert_allclose(mse(recon, torch.tensor(truth)), np.mean((1.0 - truth) ** 2, axis=(1, 2, 3)))


def test_ssim_of_negative_is_much_lower() -> None:
    imgs = _images(n=4)
    neg = ssim(1.0 - imgs, imgs)
    assert np.all(neg < 0.0)
    noisy = np.clip(imgs + 0.05 * np.random.default_rng(0).standard_normal(imgs.shape), 0, 1)
    assert np.all(ssim(noisy, imgs) > 0.5)
    assert np.all(ssim(noisy, imgs) > neg + 0.5)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_agrees_with_skimage(channels: int) -> None:
    truth = _images(n=2, c=channels, h=32, w=32)
    recon = np.clip(truth + 0.1 * np.random.default_rng(3).standard_normal(truth.shape), 0, 1)
    kwargs = dict(data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    if channels == 1:
        ref = structural_similarity(truth[1, 0], recon[1, 0], **kwargs)
    else:
        ref = structural_similarity(truth[1], recon[1], channel_axis=0, **kwargs)
    assert ssim(recon, truth)[1] == pytest.approx(ref, abs=1e-12)


def test_ssim_small_images_use_reduced_window() -> None:
    truth = _images(n=2, h=8, w=8)  # digits-sized: smaller than the 11x11 window
    recon = np.clip(truth + 0.1, 0, 1)
    value = ssim(recon, truth)
    assert np.all(np.isfinite(value)) and np.all(value < 1.0)
    ref = structural_similarity(
        truth[0, 0], recon[0, 0], data_range=1.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, win_size=7,
    )
    assert value[0] == pytest.approx(ref, abs=1e-12)


def test_shape_mismatch_raises_clear_error() -> None:
    with pytest.raises(ValueError, match="same shape"):
        mse(_images(n=3), _images(n=4))
    with pytest.raises(ValueError, match=r"\[n, C, H, W\]"):
        ssim(np.zeros((2, 2)), np.zeros((2, 2)))


def test_image_report_keys_and_values() -> None:
    truth = 0.9 * _images(n=3)
    report = image_report(truth + 0.1, truth)
    assert set(report) == {"mse", "psnr", "ssim"}
    assert all(v.shape == (3,) for v in report.values())
    np.testing.assert_allclose(report["psnr"], 20.0, atol=1e-8)


def test_match_batch_recovers_known_permutation() -> None:
    truth = _images(n=8, c=3)
    rng = np.random.default_rng(7)
    true_perm = rng.permutation(8)
    recon = np.empty_like(truth)
    recon[true_perm] = np.clip(truth + 0.02 * rng.standard_normal(truth.shape), 0, 1)
    perm = match_batch(recon, truth)
    np.testing.assert_array_equal(perm, true_perm)
    assert identifiability(recon[perm], truth) == 1.0
    assert identifiability(recon, truth) < 0.5  # unmatched order: most are wrong


def test_match_batch_with_surplus_reconstructions() -> None:
    truth = _images(n=4)
    recon = np.concatenate([_images(n=3, seed=9), truth[::-1]])
    np.testing.assert_array_equal(match_batch(recon, truth), [6, 5, 4, 3])
    with pytest.raises(ValueError, match="at least as many"):
        match_batch(truth[:2], truth)


def test_identifiability_of_noise_is_near_chance() -> None:
    n = 40
    truth = _images(n=n, seed=2)
    noise = np.random.default_rng(5).uniform(size=truth.shape)
    assert identifiability(noise, truth) <= 0.15  # chance is 1/40


# ----------------------------------------------------------------------------------- label metrics


def test_label_accuracy_trivial_cases() -> None:
    y = np.array([0, 1, 2, 1])
    assert label_accuracy(y, y) == 1.0
    assert label_accuracy((y + 1) % 3, y) == 0.0
    assert label_accuracy(np.array([0, 1, 0, 0]), y) == 0.5
    assert label_accuracy(np.eye(3)[y], torch.tensor(y)) == 1.0  # scores are arg-maxed


def test_label_auc_separating_and_random() -> None:
    y = np.array([0] * 50 + [1] * 50)
    assert label_auc(y + 0.1 * np.arange(100) / 100, y) == 1.0
    assert label_auc(-y, y) == 0.0
    rng = np.random.default_rng(11)
    yr = rng.integers(0, 2, 2000)
    assert abs(label_auc(rng.uniform(size=2000), yr) - 0.5) < 0.04


def test_label_auc_multiclass_ovr() -> None:
    y = np.repeat(np.arange(4), 25)
    assert label_auc(np.eye(4)[y] * 3.0 - 1.0, y) == 1.0  # not probabilities: still accepted
    rng = np.random.default_rng(12)
    assert abs(label_auc(rng.standard_normal((4000, 4)), rng.integers(0, 4, 4000)) - 0.5) < 0.04
    with pytest.raises(ValueError, match="integers in 0..3"):
        label_auc(np.zeros((4, 4)), np.array([0, 1, 2, 7]))


# ------------------------------------------------------------------------------------- dependence


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_ksg_matches_gaussian_closed_form(rho: float) -> None:
    x, y = _gaussian_pair(rho, n=2000, seed=100)
    exact = -0.5 * math.log(1 - rho**2)
    assert abs(ksg_mutual_information(x, y) - exact) < 0.05


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_ksg_two_independent_pairs_sum(rho: float) -> None:
    # In the 4-D joint space one n=2000 estimate has a std of ~0.04 nats at rho=0.9 (measured over
    # 10 seeds, mean error +0.003), so the unbiasedness check averages four independent samples.
    exact = -2 * 0.5 * math.log(1 - rho**2)
    estimates = [ksg_mutual_information(*_gaussian_pair(rho, n=2000, d=2, seed=200 + s)) for s in range(4)]
    assert abs(np.mean(estimates) - exact) < 0.05
    assert all(abs(e - exact) < 0.15 for e in estimates)


def test_ksg_agrees_with_sklearn_in_1d() -> None:
    # sklearn's mutual_info_regression is the same KSG estimator 1 (standardised, max-norm).
    x, y = _gaussian_pair(0.7, n=800, seed=3)
    ref = mutual_info_regression(x, y[:, 0], n_neighbors=3, random_state=0)[0]
    assert ksg_mutual_information(x, y) == pytest.approx(ref, abs=1e-6)


def test_ksg_projection_runs_and_is_recorded() -> None:
    rng = np.random.default_rng(4)
    latent = rng.standard_normal((500, 3))  # both sides are driven by a 3-dim latent
    x = (latent @ rng.standard_normal((3, 64))).reshape(500, 1, 8, 8)  # image-shaped: 64 features
    z = np.tanh(latent @ rng.standard_normal((3, 32))) + 0.05 * rng.standard_normal((500, 32))
    res = DEPENDENCE.get("ksg")(x, z, project_to=4, seed=1)
    assert isinstance(res, DependenceResult) and res.estimator == "ksg"
    assert np.isfinite(res.value) and res.value > 0.5
    independent = DEPENDENCE.get("ksg")(x, rng.standard_normal((500, 32)), project_to=4, seed=1)
    assert abs(independent.value) < 0.1
    assert res.params["project_to"] == 4
    assert (res.params["d_x"], res.params["d_y"]) == (64, 32)
    assert (res.params["d_x_used"], res.params["d_y_used"]) == (4, 4)
    assert res.params["n"] == 500
    assert ksg_mutual_information(x, z, project_to=4, seed=1) == res.value  # seeded


@pytest.mark.parametrize(
    "estimator",
    [distance_correlation, lambda x, y: distance_correlation(x, y, unbiased=False), hsic, nhsic],
    ids=["dcor_unbiased", "dcor_biased", "hsic", "nhsic"],
)
def test_kernel_and_distance_dependence_monotone_in_rho(estimator) -> None:
    values = [estimator(*_gaussian_pair(rho, n=400, d=2, seed=300)) for rho in (0.0, 0.3, 0.6, 0.9)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert abs(values[0]) < 0.02


def test_dcor_identical_is_one_and_constant_is_zero() -> None:
    x = np.random.default_rng(6).standard_normal((100, 5))
    assert distance_correlation(x, x) == pytest.approx(1.0, abs=1e-12)
    assert distance_correlation(x, x, unbiased=False) == pytest.approx(1.0, abs=1e-12)
    assert distance_correlation(x, 3 * x + 1, squared=False) == pytest.approx(1.0, abs=1e-12)
    assert distance_correlation(x, np.ones((100, 2))) == 0.0
    assert nhsic(x, x) == pytest.approx(1.0, abs=1e-12)


def test_dcor_biased_matches_definition_on_small_sample() -> None:
    # Direct O(n^2) evaluation of Szekely et al. (2007), eq. 2.8-2.10, not via centring matrices.
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((12, 2)), rng.standard_normal((12, 1))
    a = np.linalg.norm(x[:, None] - x[None], axis=-1)
    b = np.abs(y[:, None, 0] - y[None, :, 0])

    def v2(p: np.ndarray, q: np.ndarray) -> float:
        return float(
            (p * q).mean() + p.mean() * q.mean() - 2 * (p.mean(1) * q.mean(1)).mean()
        )

    expected = v2(a, b) / math.sqrt(v2(a, a) * v2(b, b))
    assert distance_correlation(x, y, unbiased=False) == pytest.approx(expected, rel=1e-10)


def test_dependence_registry_entries_return_results() -> None:
    x, y = _gaussian_pair(0.6, n=200, seed=9)
    assert DEPENDENCE.names() == ["dcor", "hsic", "ksg", "nhsic"]
    for name in DEPENDENCE.names():
        res = DEPENDENCE.get(name)(x, y)
        assert isinstance(res, DependenceResult) and res.estimator == name
        assert res.params["n"] == 200 and np.isfinite(res.value) and res.value > 0
    assert DEPENDENCE.get("hsic")(x, y).value == pytest.approx(hsic(x, y))
    assert DEPENDENCE.get("dcor")(x, y).value == pytest.approx(distance_correlation(x, y))
    with pytest.raises(ConfigError, match="metrics.dependence"):
        DEPENDENCE.get("mine")


# -------------------------------------------------------------------------------------- registries


def test_metrics_registry_specs() -> None:
    assert METRICS.names() == sorted(
        ["mse", "psnr", "ssim", "identifiability", "label_accuracy", "label_auc", "dfil", "dfil_mse_bound"]
    )
    lower = {"mse", "dfil_mse_bound"}
    assert all(METRICS.get(n).higher_is_better is (n not in lower) for n in METRICS.names())
    assert {METRICS.get(n).needs for n in METRICS.names()} == {"images", "labels", "model"}
    spec = METRICS.get("psnr")
    assert isinstance(spec, MetricSpec) and spec.fn is psnr
    truth = 0.9 * _images(n=2)
    np.testing.assert_allclose(spec(truth + 0.1, truth), 20.0, atol=1e-8)
    assert METRICS.describe("ssim")


def test_unknown_metric_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        METRICS.get("lpips")
    message = str(info.value)
    assert "lpips" in message
    for name in METRICS.names():
        assert name in message
