"""NoPeek, top-k and quantization: zero strength is the identity, each does what its paper says per
sample, gradients flow as documented, bad parameters name their field, and every registered
defense is reachable from the config and ``hasfl-sec list defenses``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import train_small

from hasfl_sec.cli.app import cli
from hasfl_sec.config import load_config
from hasfl_sec.defenses.build import describe_defenses
from hasfl_sec.defenses.compress import Quantize, TopK
from hasfl_sec.defenses.nopeek import NoPeek, nopeek_loss
from hasfl_sec.defenses.registry import DEFENSES
from hasfl_sec.errors import ConfigError
from hasfl_sec.metrics.dependence import distance_correlation

_train = train_small


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.global_model().parameters(), b.global_model().parameters()))


@pytest.fixture(scope="module")
def plain():
    return _train([])


@pytest.mark.parametrize("defense", [NoPeek(NoPeek.Params(weight=0.0)), TopK(TopK.Params(ratio=1.0)),
                                     Quantize(Quantize.Params(bits=32)), Quantize(Quantize.Params(bits=None))],
                         ids=["nopeek", "topk", "quantize32", "quantize-null"])
def test_zero_strength_is_bit_identical_to_no_defense(plain, defense):
    assert _same(plain, _train([defense]))


@pytest.mark.parametrize("defense", [NoPeek(NoPeek.Params(weight=1.0)), TopK(TopK.Params(ratio=0.5)),
                                     Quantize(Quantize.Params(bits=2))], ids=["nopeek", "topk", "quantize"])
def test_active_defense_changes_training(plain, defense):
    defended = _train([defense])
    assert not _same(plain, defended)
    assert all(torch.isfinite(p).all() for p in defended.global_model().parameters())


# NoPeek -----------------------------------------------------------------------------------------
def test_nopeek_loss_is_the_dcor_metric_and_differentiable():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 4, 4, generator=g)
    z = (x.flatten(1)[:, :6] + 0.5 * torch.randn(16, 6, generator=g)).requires_grad_(True)
    loss = nopeek_loss(x, z)
    assert float(loss.detach()) == pytest.approx(distance_correlation(x, z.detach(), unbiased=False, squared=False), rel=1e-5)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # descending the penalty lowers the dependence, including with duplicated rows (zero distances)
    z2 = torch.cat([z.detach()[:8], z.detach()[:8]]).requires_grad_(True)
    x2 = torch.cat([x[:8], x[:8]])
    start = float(nopeek_loss(x2, z2).detach())
    opt = torch.optim.SGD([z2], lr=20.0)  # dCor is scale-free: its gradients are small
    for _ in range(30):
        opt.zero_grad()
        nopeek_loss(x2, z2).backward()
        assert torch.isfinite(z2.grad).all()
        opt.step()
    assert float(nopeek_loss(x2, z2).detach()) < start - 0.2


def test_nopeek_loss_term_is_weighted_and_skips_single_samples():
    x, z = torch.randn(8, 5), torch.randn(8, 3)
    term = NoPeek(NoPeek.Params(weight=2.5)).loss_term(x, z, round=1, device=0)
    assert float(term) == pytest.approx(2.5 * float(nopeek_loss(x, z)))
    assert NoPeek().loss_term(x[:1], z[:1], round=1, device=0) is None


def test_metric_reuses_the_torch_estimator():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 2))
    y[:, 0] += x[:, 0]
    for unbiased in (True, False):
        a = np.linalg.norm(x[:, None] - x[None], axis=-1)
        b = np.linalg.norm(y[:, None] - y[None], axis=-1)
        if unbiased:  # Szekely & Rizzo 2014, eq. 2.1, written out independently
            def centre(d):
                n = len(d)
                out = d - d.sum(1, keepdims=True) / (n - 2) - d.sum(0, keepdims=True) / (n - 2) \
                    + d.sum() / ((n - 1) * (n - 2))
                np.fill_diagonal(out, 0.0)
                return out
        else:
            def centre(d):
                return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()
        ca, cb = centre(a), centre(b)
        expected = (ca * cb).sum() / np.sqrt((ca * ca).sum() * (cb * cb).sum())
        assert distance_correlation(x, y, unbiased=unbiased) == pytest.approx(expected, rel=1e-12)


# top-k ------------------------------------------------------------------------------------------
def test_topk_keeps_each_samples_largest_entries_and_their_gradient_only():
    a = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = TopK(TopK.Params(ratio=0.3)).transform_smashed(a, round=1, device=0)
    flat, got = a.detach().flatten(1), out.detach().flatten(1)
    for s in range(3):
        kept = set(flat[s].abs().argsort(descending=True)[:3].tolist())  # ceil(0.3 * 10) = 3
        assert set(got[s].nonzero().flatten().tolist()) == kept
        assert torch.equal(got[s, sorted(kept)], flat[s, sorted(kept)])
    out.backward(torch.full_like(out, 2.0))
    assert torch.equal(a.grad.flatten(1), 2.0 * (got != 0))


def test_topk_ratio_one_returns_the_tensor_itself():
    a = torch.randn(2, 4)
    assert TopK(TopK.Params(ratio=1.0)).transform_smashed(a, round=1, device=0) is a


# quantization -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 3, 8])
def test_quantize_uses_2_to_the_bits_levels_per_sample(bits):
    a = (5 * torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(bits))).requires_grad_(True)
    out = Quantize(Quantize.Params(bits=bits)).transform_smashed(a, round=1, device=0)
    flat, got = a.detach().flatten(1), out.detach().flatten(1)
    for s in range(4):
        lo, hi = flat[s].min(), flat[s].max()
        step = (hi - lo) / (2 ** bits - 1)
        assert len(torch.unique(got[s])) <= 2 ** bits
        assert float((got[s] - flat[s]).abs().max()) <= float(step) / 2 + 1e-5
        assert got[s].min() == lo and torch.isclose(got[s].max(), hi)
    w = torch.randn_like(a)
    (out * w).sum().backward()
    assert torch.equal(a.grad, w)  # straight-through


def test_quantize_constant_and_empty_batches():
    q = Quantize(Quantize.Params(bits=4))
    const = torch.full((2, 5), 3.0)
    assert torch.equal(q.transform_smashed(const, round=1, device=0), const)
    assert q.transform_smashed(torch.zeros(0, 5), round=1, device=0).shape == (0, 5)
    assert TopK().transform_smashed(torch.zeros(0, 5), round=1, device=0).shape == (0, 5)


# parameters, config and CLI ---------------------------------------------------------------------
@pytest.mark.parametrize("cls, kw, field", [
    (NoPeek, {"weight": -0.1}, "defense.nopeek.weight"), (TopK, {"ratio": 0.0}, "defense.topk.ratio"),
    (TopK, {"ratio": 1.5}, "defense.topk.ratio"), (Quantize, {"bits": 0}, "defense.quantize.bits"),
    (Quantize, {"bits": 33}, "defense.quantize.bits"),
])
def test_bad_parameters_name_the_field(cls, kw, field):
    with pytest.raises(ConfigError, match=field):
        cls(cls.Params(**kw))


def test_every_defense_transforms_without_prepare():
    """An adaptive attacker calls transform_smashed on its own data, never having prepared."""
    for name in DEFENSES.names():
        d = DEFENSES.get(name)(DEFENSES.get(name).Params())
        out = d.transform_smashed(torch.randn(3, 2, 4), round=1, device=0)
        assert out.shape == (3, 2, 4) and torch.isfinite(out).all()


def test_config_sections_and_list_command():
    cfg = load_config(overrides=["defense.use=[topk, quantize]", "defense.topk.ratio=0.25", "defense.quantize.bits=4"])
    assert describe_defenses(cfg.defense) == "topk(ratio=0.25)+quantize(bits=4)"
    with pytest.raises(ConfigError, match="defense.quantize.bits"):
        load_config(overrides=["defense.use=[quantize]", "defense.quantize.bits=0"])
    result = CliRunner().invoke(cli, ["list", "defenses"])
    assert result.exit_code == 0
    assert all(name in result.output for name in ("dpsgd", "noise", "nopeek", "quantize", "topk"))


def test_zero_strength_defenses_say_they_are_identities():
    """The audit runs no adaptive variant against a defense that changes nothing."""
    from hasfl_sec.attacks.adaptive import changes_smashed
    from hasfl_sec.defenses.noise import SmashedNoise

    for identity in (TopK(TopK.Params(ratio=1.0)), Quantize(Quantize.Params(bits=32)), Quantize(Quantize.Params(bits=None)),
                     SmashedNoise(SmashedNoise.Params(sigma=0.0))):
        assert identity.is_identity() and not changes_smashed(identity)
    for active in (TopK(TopK.Params(ratio=0.5)), Quantize(Quantize.Params(bits=4)),
                   SmashedNoise(SmashedNoise.Params(sigma=0.1))):
        assert not active.is_identity() and changes_smashed(active)
