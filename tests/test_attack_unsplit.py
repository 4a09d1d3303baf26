"""UnSplit (Erdogan et al. 2022): threat model, output contract, the polarity mirror, inversion at cut 1."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import small_overrides
from torch import nn

from hasfl_sec.attacks.base import make_context, observe
from hasfl_sec.attacks.registry import ATTACKS
from hasfl_sec.attacks.unsplit import UnSplit, mirror_first_layer, relative_total_variation
from hasfl_sec.config import load_config
from hasfl_sec.metrics import ssim
from hasfl_sec.models import build_model
from hasfl_sec.runs.setup import prepare
from hasfl_sec.sfl.tap import CutLayerTap, TapSelector


@pytest.fixture(scope="module")
def recorded():
    """Seven trained rounds, then round 8 recorded; 8 digits per device at cuts 1..4."""
    cfg = load_config(overrides=small_overrides(**{"train.rounds": 8, "plan.batch_size": "[8, 8, 8, 8]"}))
    setup = prepare(cfg)
    tr = setup.trainer()
    for _ in range(7):
        tr.step()
    clients = [copy.deepcopy(c) for c in tr.clients]
    tap = CutLayerTap(TapSelector(rounds={8}))
    with tap.attached(tr):
        tr.step()
    return setup, clients, tap


def _fresh_client(setup, cut: int):
    """An UNTRAINED client part of the victim's architecture (different initialisation)."""
    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)
            m, ds = setup.model, setup.dataset
            model = build_model(m.arch, in_channels=ds.in_channels, num_classes=ds.num_classes,
                                image_size=ds.image_size, norm=m.config["norm"], width=m.config["width"],
                                dropout=m.config["dropout"])
        return model.client_part(cut)
    return build


def _context(recorded, attack, device: int, seed: int = 0):
    setup, clients, tap = recorded
    ex = tap.exchanges[(8, device, 0)]
    ctx = make_context(attack.threat_model, client=clients[device], fresh_client=_fresh_client(setup, ex.cut),
                       input_shape=setup.dataset.input_shape, num_classes=10, cut=ex.cut, seed=seed)
    return ex, ctx


def test_registered_with_its_threat_model(recorded):
    cls = ATTACKS.get("unsplit")
    assert cls is UnSplit and cls.unit == "trace" and cls.recovers == "inputs"
    tm = cls.threat_model
    assert tm.position == "edge-server" and tm.observes == frozenset({"smashed"})
    assert tm.client_architecture and not tm.client_weights and not tm.query_access and tm.auxiliary_samples == 0
    _, ctx = _context(recorded, cls(), device=0)
    assert ctx.client_model is None and ctx.query is None and ctx.client_template is not None
    assert cls.from_dict({"steps": 5, "restarts": 2}).params == UnSplit.Params(steps=5, restarts=2)


def test_output_contract_shared_clone_and_determinism(recorded):
    """Two exchanges of one device and round share a clone; output aligned, in [0, 1], seeded."""
    setup, clients, tap = recorded
    attack = UnSplit(UnSplit.Params(steps=12, restarts=2, probe_steps=4))
    ex, ctx = _context(recorded, attack, device=1)  # cut 2
    assert ex.cut == 2
    second = dataclasses.replace(ex, step=1, smashed=ex.smashed[:3])
    template_state = copy.deepcopy(ctx.client_template.state_dict())
    rng = torch.get_rng_state()
    rec = attack.reconstruct(observe([ex, second], [], attack.threat_model), ctx)
    n = len(ex.smashed) + 3
    assert rec.inputs.shape == (n, *setup.dataset.input_shape)
    assert torch.isfinite(rec.inputs).all() and rec.inputs.min() >= 0 and rec.inputs.max() <= 1
    assert rec.keys == [ex.key] * len(ex.smashed) + [second.key] * 3
    assert rec.positions == list(range(len(ex.smashed))) + [0, 1, 2]
    assert len(rec.stats["probe_losses"]) == 4 and rec.stats["final_loss"] >= 0
    assert rec.stats["final_loss"] <= min(rec.stats["probe_losses"]) * 1.5
    assert torch.equal(torch.get_rng_state(), rng)  # only the context's generator is used
    for k, v in ctx.client_template.state_dict().items():  # the template is copied, never trained
        torch.testing.assert_close(v, template_state[k])
    with torch.no_grad():  # the stolen clone reproduces what it was fitted to
        assert attack.clone(rec.inputs[: len(ex.smashed)]).shape == ex.smashed.shape
    _, ctx2 = _context(recorded, attack, device=1)
    again = UnSplit(attack.params).reconstruct(observe([ex, second], [], attack.threat_model), ctx2)
    torch.testing.assert_close(again.inputs, rec.inputs)


def test_mirror_first_layer_inverts_intensity():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))  # no padding: exact
    x = torch.rand(3, 1, 8, 8)
    twin = copy.deepcopy(net)
    assert mirror_first_layer(twin)
    torch.testing.assert_close(twin(1 - x), net(x))
    padded = nn.Conv2d(1, 4, 3, padding=1)  # with zero padding: equal away from the border only
    twin = copy.deepcopy(padded)
    mirror_first_layer(twin)
    torch.testing.assert_close(twin(1 - x)[..., 1:-1, 1:-1], padded(x)[..., 1:-1, 1:-1])
    assert not torch.allclose(twin(1 - x), padded(x))
    assert not mirror_first_layer(nn.Sequential(nn.Conv2d(1, 2, 3, bias=False)))
    assert not mirror_first_layer(nn.ReLU())


def test_relative_total_variation_ignores_contrast():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    base = relative_total_variation(x)
    torch.testing.assert_close(relative_total_variation(0.2 * x + 0.3), base)
    smooth = torch.linspace(0, 1, 8).expand(2, 1, 8, 8)
    assert relative_total_variation(smooth) < base


def test_unsplit_inverts_the_first_cut(recorded):
    """At cut 1 the reconstructions beat random and flat-grey guesses by a wide margin, and are
    not contrast-inverted (the polarity is settled by the matching loss)."""
    setup, clients, tap = recorded
    attack = UnSplit.from_dict({"steps": 800, "restarts": 2, "probe_steps": 150})
    ex, ctx = _context(recorded, attack, device=0)
    assert ex.cut == 1
    truth = tap.truths[ex.key].inputs
    rec = attack.reconstruct(observe([ex], [], attack.threat_model), ctx)
    score = float(ssim(rec.inputs, truth).mean())
    noise = float(ssim(torch.rand(truth.shape, generator=torch.Generator().manual_seed(0)), truth).mean())
    grey = float(ssim(torch.full_like(truth, 0.5), truth).mean())
    inverted = float(ssim(1 - rec.inputs, truth).mean())
    assert score > 0.8 and score > max(noise, grey) + 0.6, (score, noise, grey)
    assert score > inverted + 0.5
