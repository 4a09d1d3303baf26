"""Convergence-bound constants: per-sample gradient statistics, Corollary 1, estimation, I/O."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import small_overrides

from hasfl_sec.config import load_config
from hasfl_sec.errors import ConfigError
from hasfl_sec.models import build_model
from hasfl_sec.planning.bound import BoundConstants
from hasfl_sec.planning.calibrate import fit_calibration
from hasfl_sec.planning.warmup import estimate_bound, per_block_gradient_stats
from hasfl_sec.runs.setup import prepare


def test_per_block_stats_match_a_loop_over_samples():
    torch.manual_seed(0)
    model = build_model("hecnn", in_channels=1, num_classes=10, image_size=8, width=4)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 10
    sigma2, G2, mean_grad, loss = per_block_gradient_stats(model, x, y, chunk=4)
    per_sample = []
    for i in range(6):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        per_sample.append([torch.cat([p.grad.flatten() for p in b.parameters()]) for b in model.blocks])
    for j in range(model.num_blocks):
        g = torch.stack([s[j] for s in per_sample]).double()
        assert G2[j] == pytest.approx(float(g.pow(2).sum(1).mean()), rel=1e-5)
        assert sigma2[j] == pytest.approx(float((g - g.mean(0)).pow(2).sum(1).mean()), rel=1e-4, abs=1e-9)
    full = torch.cat([torch.stack([s[j] for s in per_sample]).mean(0) for j in range(model.num_blocks)])
    np.testing.assert_allclose(mean_grad, full.numpy(), rtol=1e-4, atol=1e-5)
    assert loss == pytest.approx(float(F.cross_entropy(model(x), y).detach()), rel=1e-6)


def constants(interval=5):
    return BoundConstants(sigma2=(1.0, 2.0, 3.0), G2=(0.5, 1.0, 2.0), theta=2.3, beta=10.0, grad_norm0=4.0,
                          lr=0.01, num_devices=4, interval=interval)


def test_corollary_one_by_hand():
    b = constants()
    k = 10.0 * 0.01 * 6.0 / 16
    drift = 4.0 * (10.0 * 0.01 * 5) ** 2 * (0.5 + 1.0)
    eps = 3.0
    margin = eps - k * (1 / 2 + 1 / 4 + 1 / 8 + 1 / 8) - drift
    assert margin > 0
    assert b.rounds([2, 4, 8, 8], 2, eps) == pytest.approx(2 * 2.3 / (0.01 * margin), rel=1e-12)
    assert b.rounds([1, 1, 1, 1], 3, 0.1) == math.inf


def test_monotone_in_batch_and_cut():
    b = constants()
    eps = 2.0
    assert b.rounds([4, 4, 4, 8], 2, eps) < b.rounds([4, 4, 4, 4], 2, eps)
    assert b.rounds([4] * 4, 1, eps) <= b.rounds([4] * 4, 2, eps) <= b.rounds([4] * 4, 3, eps)
    flat = constants(interval=1)
    assert flat.rounds([4] * 4, 1, eps) == flat.rounds([4] * 4, 3, eps)


def test_save_load_round_trip(tmp_path):
    b = constants()
    b2 = BoundConstants.load(b.save(tmp_path / "bound.json"))
    assert b2 == b
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="optimizer.bound_file"):
        BoundConstants.load(tmp_path / "bad.json")


def test_calibration_fit_reproduces_the_pilots():
    b = constants()  # I = 5, 3 blocks, G2 shares 0.5/3.5, 1.5/3.5, 1
    a0, a1, a2 = 0.2, 0.1, 0.02
    share = [0.5 / 3.5, 1.5 / 3.5, 1.0]
    pilots = [(bs, c, 1.0 / (a0 - a1 / bs - a2 * share[c - 1])) for bs, c in [(2, 1), (16, 1), (8, 1), (8, 2), (8, 3)]]
    cal = fit_calibration(b, pilots, target_accuracy=0.9, max_rounds=100)
    for bs, c, r in pilots:
        assert cal.rounds([bs] * 4, c, cal.epsilon_calibrated) == pytest.approx(r, rel=1e-6)
    assert cal.sigma2 == b.sigma2 and cal.beta == b.beta  # the estimates stay on record
    assert cal.meta["calibration"]["coefficients"]["a1"] == pytest.approx(a1, rel=1e-6)


def test_dropout_model_can_be_measured():
    cfg = load_config(overrides=small_overrides(**{"model.dropout": 0.5}))
    s = prepare(cfg)
    bound = estimate_bound(s.model, s.dataset, s.parts, cfg.train, seed=0, warmup_rounds=1, probe_size=8,
                           warmup_batch=2)
    assert all(math.isfinite(v) for v in bound.sigma2)


def test_estimate_is_deterministic_and_sane():
    cfg = load_config(overrides=small_overrides())
    s = prepare(cfg)
    kw = dict(seed=cfg.seed, warmup_rounds=2, probe_size=32, warmup_batch=4)
    a = estimate_bound(s.model, s.dataset, s.parts, cfg.train, **kw)
    b = estimate_bound(s.model, s.dataset, s.parts, cfg.train, **kw)
    assert a == b
    assert len(a.sigma2) == s.model.num_blocks and all(v >= 0 for v in a.sigma2)
    assert all(g >= v for g, v in zip(a.G2, a.sigma2))  # second moment >= variance
    assert a.theta == pytest.approx(math.log(10), rel=0.2)  # untrained 10-class model
    assert a.beta > 0 and a.grad_norm0 > 0 and a.num_devices == 4 and a.interval == cfg.train.agg_interval
