"""The cut-layer tap and the defense hook points, on a real small run."""

from __future__ import annotations

import copy

import pytest
import torch

from hasfl_sec.defenses.base import Defense
from hasfl_sec.runs.setup import prepare
from hasfl_sec.sfl.tap import CutLayerTap, TapSelector


def make(cfg, defenses=()):
    return prepare(cfg).trainer(defenses)


def test_tap_records_what_crosses_the_cut(small_config):
    tr = make(small_config)
    clients = [copy.deepcopy(c) for c in tr.clients]
    tap = CutLayerTap(TapSelector(rounds={1, 3}, devices={0, 2}, max_records=100))
    with tap.attached(tr):
        for _ in range(3):
            tr.step()
    assert sorted(tap.exchanges) == [(1, 0, 0), (1, 2, 0), (3, 0, 0), (3, 2, 0)]
    assert tr.observers == []  # nothing left attached
    ex, truth = tap.exchanges[(1, 2, 0)], tap.truths[(1, 2, 0)]
    assert ex.cut == tr.cuts[2] and ex.smashed.shape[0] == tr.batch_sizes[2]
    # the smashed data is the device's client part applied to the private inputs (round 1 weights)
    torch.testing.assert_close(ex.smashed, clients[2](truth.inputs).detach())
    assert torch.equal(ex.labels, truth.labels)
    assert ex.grad.shape == ex.smashed.shape and ex.grad.abs().sum() > 0
    assert not ex.smashed.requires_grad and ex.smashed.device.type == "cpu"
    # uploads at the aggregation round (I = 3) for the selected devices only
    assert [(u.round, u.device) for u in tap.uploads] == [(3, 0), (3, 2)]
    assert set(tap.uploads[1].state) == set(tr.clients[2].state_dict())


def test_tap_memory_bound_and_detach(small_config):
    tr = make(small_config)
    tap = CutLayerTap(TapSelector(max_records=5))
    tap.attach(tr)
    with pytest.raises(RuntimeError):
        tap.attach(tr)
    for _ in range(3):
        tr.step()
    assert len(tap.exchanges) == 5 and tap.dropped == 3 * tr.n - 5
    tap.detach()
    tr.step()
    assert len(tap.exchanges) == 5 and tap.dropped == 3 * tr.n - 5


def test_tap_save_loads_with_weights_only(small_config, tmp_path):
    tr = make(small_config)
    tap = CutLayerTap(TapSelector(max_records=4))
    with tap.attached(tr):
        tr.step()
    tap.save(tmp_path / "obs.pt")
    data = torch.load(tmp_path / "obs.pt", weights_only=True)
    assert len(data["exchanges"]) == 4 and data["exchanges"][0]["smashed"].ndim >= 2


class Shift(Defense):
    name = "shift"

    def transform_smashed(self, smashed, *, round, device):
        return smashed + 1.0


class ZeroGrad(Defense):
    name = "zero-grad"

    def transform_grad(self, grad, *, round, device):
        return torch.zeros_like(grad)


class L2OnSmashed(Defense):
    name = "l2"

    def loss_term(self, inputs, smashed, *, round, device):
        return 0.1 * smashed.pow(2).mean()


class CountingWrap(Defense):
    name = "wrap"

    def __init__(self):
        self.wrapped = []

    def wrap_optimizer(self, optimizer, *, device):
        self.wrapped.append(device)
        return optimizer


def _client_params(tr):
    return [[p.detach().clone() for p in c.parameters()] for c in tr.clients]


def test_uplink_transform_is_what_the_server_sees(small_config):
    tr = make(small_config, [Shift()])
    clients = [copy.deepcopy(c) for c in tr.clients]
    tap = CutLayerTap()
    with tap.attached(tr):
        tr.step()
    ex, truth = tap.exchanges[(1, 1, 0)], tap.truths[(1, 1, 0)]
    torch.testing.assert_close(ex.smashed, clients[1](truth.inputs).detach() + 1.0)


def test_downlink_transform_and_loss_term(small_config):
    tr = make(small_config, [ZeroGrad()])
    before = _client_params(tr)
    tr.train_round()
    for b, c in zip(before, _client_params(tr)):
        assert all(torch.equal(x, y) for x, y in zip(b, c))  # zero returned gradient: no client update

    tr = make(small_config, [ZeroGrad(), L2OnSmashed()])
    before = _client_params(tr)
    tr.train_round()
    changed = [any(not torch.equal(x, y) for x, y in zip(b, c)) for b, c in zip(before, _client_params(tr))]
    assert all(changed)  # only the device-side loss term moved them


def test_wrap_optimizer_called_once_per_device(small_config):
    wrap = CountingWrap()
    make(small_config, [wrap])
    assert wrap.wrapped == list(range(small_config.fleet.num_devices))
