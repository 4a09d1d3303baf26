"""The attack protocol: threat-model filtering, granted context, the registry, and rMLE inversion."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import small_overrides
from skimage.metrics import structural_similarity

from hasfl_sec.attacks.base import ThreatModel, make_context, observe
from hasfl_sec.attacks.registry import ATTACKS
from hasfl_sec.config import load_config
from hasfl_sec.errors import ConfigError
from hasfl_sec.runs.setup import prepare
from hasfl_sec.sfl.tap import CutLayerTap, TapSelector


@pytest.fixture(scope="module")
def recorded():
    """A few trained rounds, then recorded rounds; the client parts as they were in round 8."""
    cfg = load_config(overrides=small_overrides(**{"train.rounds": 8}))
    setup = prepare(cfg)
    tr = setup.trainer()
    for _ in range(7):
        tr.step()
    clients = [copy.deepcopy(c) for c in tr.clients]
    tap = CutLayerTap(TapSelector(rounds={8, 9}))  # 9 is an aggregation round (I = 3): uploads too
    with tap.attached(tr):
        tr.step()
        tr.step()
    return setup, clients, tap


def test_observe_keeps_only_what_is_granted(recorded):
    _, _, tap = recorded
    exchanges = list(tap.exchanges.values())
    smashed_only = ThreatModel("edge-server", frozenset({"smashed"}))
    seen = observe(exchanges, tap.uploads, smashed_only)
    assert all(e.smashed is not None and e.labels is None and e.grad is None and e.meta == {} for e in seen.exchanges)
    assert seen.uploads == ()
    both = observe(exchanges, tap.uploads, ThreatModel("edge-server", frozenset({"labels", "grad", "uploads"})))
    assert all(e.smashed is None and e.labels is not None and e.grad is not None for e in both.exchanges)
    assert len(both.uploads) == len(tap.uploads) > 0
    assert [e.key for e in seen.exchanges] == [e.key for e in exchanges]


def test_context_grants_exactly_the_threat_model(recorded):
    setup, clients, _ = recorded
    kw = dict(client=clients[0], fresh_client=lambda: copy.deepcopy(clients[0]), input_shape=setup.dataset.input_shape,
              num_classes=10, cut=1)
    black = make_context(ThreatModel("edge-server", frozenset({"smashed"}), query_access=True), **kw)
    assert black.client_model is None and black.client_template is None and black.query is not None
    x = setup.dataset.x_train[:3]
    torch.testing.assert_close(black.query(x), clients[0](x))
    white = make_context(ThreatModel("edge-server", frozenset({"smashed"}), True, True), **kw)
    assert white.client_model is not None and white.query is None
    assert all(not p.requires_grad for p in white.client_model.parameters())
    with pytest.raises(ConfigError, match="auxiliary"):
        make_context(ThreatModel("edge-server", frozenset({"smashed"}), auxiliary_samples=10), **kw)


def test_threat_model_validation():
    with pytest.raises(ValueError, match="position"):
        ThreatModel("client", frozenset({"smashed"}))
    with pytest.raises(ValueError, match="observes"):
        ThreatModel("edge-server", frozenset({"inputs"}))
    with pytest.raises(ValueError, match="architecture"):
        ThreatModel("edge-server", frozenset({"smashed"}), client_weights=True)


def _ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.mean([structural_similarity(x[0].numpy(), y[0].numpy(), data_range=1.0, gaussian_weights=True,
                                                sigma=1.5, use_sample_covariance=False) for x, y in zip(a, b)]))


def test_rmle_inverts_the_first_cut(recorded):
    setup, clients, tap = recorded
    ex, truth = tap.exchanges[(8, 0, 0)], tap.truths[(8, 0, 0)]  # device 0 has cut 1
    assert ex.cut == 1
    attack = ATTACKS.get("rmle").from_dict({"steps": 600})
    ctx = make_context(attack.threat_model, client=clients[0], fresh_client=lambda: copy.deepcopy(clients[0]),
                       input_shape=setup.dataset.input_shape, num_classes=10, cut=1)
    rec = attack.reconstruct(observe([ex], [], attack.threat_model), ctx)
    score = _ssim(rec.inputs, truth.inputs)
    guess = _ssim(torch.rand_like(truth.inputs, generator=None), truth.inputs)
    assert score > 0.9 and score > guess + 0.5
