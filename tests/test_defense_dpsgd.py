"""DP-SGD on the client parts (Opacus): zero strength is the identity, the mean-loss convention
matches Opacus', clipping is per sample, epsilon is the accountant's, Poisson batches (even empty
ones) train, the model is made Opacus-compatible up front, and runs record their epsilon."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import small_overrides
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.validators import ModuleValidator
from torch import nn
from torch.func import functional_call, grad, vmap

from hasfl_sec.config import load_config
from hasfl_sec.defenses.base import Defense, DefenseStack
from hasfl_sec.defenses.dpsgd import DPSGD
from hasfl_sec.defenses.nopeek import NoPeek
from hasfl_sec.defenses.opacus_utils import dp_sgd_epsilon, make_private_compatible
from hasfl_sec.defenses.registry import DEFENSES
from hasfl_sec.errors import ConfigError
from hasfl_sec.models.split import SplitModel
from hasfl_sec.runs.setup import prepare
from hasfl_sec.runs.training import train
from hasfl_sec.sfl.plan import Plan
from hasfl_sec.sfl.trainer import SFLTrainer


def _setup(rounds=4, **extra):
    return prepare(load_config(overrides=small_overrides(**{"train.rounds": rounds, **extra})))


def _train(defenses, rounds=4, **extra):
    trainer = _setup(rounds, **extra).trainer(defenses)
    for _ in range(rounds):
        trainer.step()
    return trainer


def _dp(**kw):
    return DPSGD(DPSGD.Params(**kw))


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_zero_strength_is_bit_identical_to_no_defense():
    # DP-SGD always trains in the per-device execution (Opacus wraps each device), so that is
    # the one to compare with bit for bit
    plain = _train([], **{"train.execution": "per-device"})
    zero = _train([_dp(noise_multiplier=0.0, max_grad_norm=None)])
    for a, b in zip(plain.global_model().parameters(), zero.global_model().parameters()):
        assert torch.equal(a, b)


def test_no_noise_and_a_huge_clip_match_vanilla_sgd():
    """Opacus must be told the server's mean-loss convention: a sum (or a wrong batch size)
    would scale every client update by b_i."""
    plain = _train([])
    dp = _train([_dp(noise_multiplier=0.0, max_grad_norm=1e6, poisson=False)])
    identical = True
    for cp, cd in zip(plain.clients, dp.clients):
        for a, b in zip(cp.parameters(), cd.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
            identical &= torch.equal(a, b)
    assert not identical  # the per-sample path really ran


def test_clipping_is_per_sample_not_per_batch():
    clip, lr = 0.05, 0.05
    tr = _setup().trainer([_dp(noise_multiplier=0.0, max_grad_norm=clip, poisson=False)])
    batches = [copy.deepcopy(s).next(b) for s, b in zip(tr.samplers, tr.batch_sizes)]
    models = [nn.Sequential(*copy.deepcopy(tr.copies[i]), *copy.deepcopy(tr.common)) for i in range(tr.n)]
    before = [_params(c) for c in tr.clients]
    tr.train_round()
    for i, idx in enumerate(batches):
        # reference: per-sample gradients of each sample's own loss, with torch.func
        model, cut = models[i], tr.cuts[i]
        params = {k: v.detach() for k, v in model.named_parameters()}

        def loss(p, x, y):
            return F.cross_entropy(functional_call(model, p, (x[None],)), y[None])

        g = vmap(grad(loss), in_dims=(None, 0, 0))(params, tr.x_train[idx], tr.y_train[idx])
        client = [k for k in params if int(k.split(".")[0]) < cut]
        flat = torch.cat([g[k].flatten(1) for k in client], dim=1)
        norms = flat.norm(dim=1)
        assert bool((norms > clip).all())  # clipping is active for every sample
        clipped = (flat * (clip / (norms + 1e-6)).clamp(max=1.0)[:, None]).mean(0)
        batch = flat.mean(0)
        batch_clipped = batch * min(1.0, clip / float(batch.norm()))
        step = torch.cat([(a - b).flatten() for a, b in zip(_params(tr.clients[i]), before[i])])
        torch.testing.assert_close(step, -lr * clipped, rtol=1e-3, atol=1e-7)
        assert float((step + lr * batch_clipped).norm()) > 100 * 1e-7 * step.numel() ** 0.5


def test_epsilon_is_the_opacus_accountants():
    # golden value of Opacus' RDP accountant (sigma 1, q 0.01, 1000 steps, delta 1e-5)
    assert dp_sgd_epsilon(1.0, 0.01, 1000, 1e-5) == pytest.approx(2.1013652716430564, rel=1e-9)
    d = _dp(noise_multiplier=1.0, max_grad_norm=1.0)
    tr = _setup().trainer([d])
    tr.step()
    tr.step()
    report = d.report()
    for i, (b, n) in enumerate(zip(tr.batch_sizes, tr._part_sizes)):
        q = b / n
        assert report[f"sample_rate.device{i}"] == q and report[f"noise_multiplier.device{i}"] == 1.0
        for key, steps in (("epsilon", 2), ("epsilon_final", 4)):  # spent so far / at the end
            fresh = RDPAccountant()
            fresh.history = [(1.0, q, steps)]
            assert report[f"{key}.device{i}"] == pytest.approx(fresh.get_epsilon(1e-5), rel=1e-12)
    assert report["epsilon"] == max(report[f"epsilon.device{i}"] for i in range(tr.n))
    assert report["poisson"] == 1.0 and report["epsilon"] < report["epsilon_final"]


def test_target_epsilon_solves_the_noise_per_device():
    d = _dp(target_epsilon=1.0, max_grad_norm=1.0)
    tr = _train([d], rounds=4)
    report = d.report()
    sigmas = set()
    for i, (b, n) in enumerate(zip(tr.batch_sizes, tr._part_sizes)):
        expected = get_noise_multiplier(target_epsilon=1.0, target_delta=1e-5, sample_rate=b / n, steps=4,
                                        accountant="rdp", epsilon_tolerance=0.01)
        assert report[f"noise_multiplier.device{i}"] == pytest.approx(expected, rel=1e-12)
        assert 0.99 <= report[f"epsilon.device{i}"] <= 1.0
        sigmas.add(round(expected, 6))
    assert len(sigmas) == tr.n  # each device's own sampling rate


@pytest.mark.parametrize("accountant", ["rdp", "gdp"])
def test_target_epsilon_is_met_without_poisson_sampling_too(accountant):
    """The noise is solved for the sampling the accountant is told about when reporting."""
    d = _dp(target_epsilon=2.0, max_grad_norm=1.0, poisson=False, accountant=accountant)
    tr = _train([d], rounds=4)
    report = d.report()
    spent = {k: v for k, v in report.items() if k.startswith("epsilon.device")}
    assert len(spent) == tr.n  # one figure per device, each at the target after the planned rounds
    for key, value in spent.items():
        assert 1.97 <= value <= 2.0 + 1e-9, (key, value)


def test_unreachable_epsilon_is_a_config_error_saying_what_to_change():
    with pytest.raises(ConfigError, match="defense.dpsgd.target_epsilon.*raise target_epsilon"):
        _setup().trainer([_dp(target_epsilon=0.05)])


class Sizes(Defense):
    name = "sizes"

    def __init__(self):
        self.seen = {}

    def transform_smashed(self, smashed, *, round, device):
        self.seen[(round, device)] = len(smashed)
        return smashed


def test_poisson_batches_vary_and_empty_ones_still_step_and_count():
    d, sizes = _dp(noise_multiplier=1.0, max_grad_norm=1.0), Sizes()
    tr = _setup(rounds=6, **{"plan.batch_size": 2}).trainer([d, sizes])
    empty_steps = 0
    for t in range(1, 7):
        before = [_params(c) for c in tr.clients]
        tr.step()
        for i in range(tr.n):
            if sizes.seen[(t, i)] == 0 and t % 3:  # no aggregation overwrote the copy this round
                after = _params(tr.clients[i])
                assert any(not torch.equal(a, b) for a, b in zip(after, before[i]))  # noise only
                empty_steps += 1
    counts = set(sizes.seen.values())
    assert 0 in counts and len(counts) >= 3 and empty_steps >= 1
    assert all(sum(h[2] for h in d.accountants[i].history) == 6 for i in range(tr.n))  # empty steps count
    assert all(torch.isfinite(p).all() for p in tr.global_model().parameters())


def test_resume_continues_bit_for_bit():
    setup = _setup()
    full = setup.trainer([_dp(noise_multiplier=1.0, seed=5)])
    for _ in range(4):
        full.step()
    first = setup.trainer([_dp(noise_multiplier=1.0, seed=5)])
    first.step()
    first.step()
    state = first.state_dict()
    resumed = setup.trainer([_dp(noise_multiplier=1.0, seed=5)])
    resumed.load_state_dict(state)
    resumed.step()
    resumed.step()
    for a, b in zip(full.global_model().parameters(), resumed.global_model().parameters()):
        assert torch.equal(a, b)
    assert full.defense.report() == resumed.defense.report()


def test_replan_rewraps_clients_and_accounts_both_rates():
    d = _dp(noise_multiplier=1.0)
    tr = _setup(rounds=6).trainer([d])
    for _ in range(3):  # I = 3: re-plans happen right after an aggregation
        tr.step()
    tr.replan(Plan(batch_sizes=(2, 4, 6, 8), cuts=(2, 2, 3, 4)))
    tr.step()
    rates = [h[1] for h in d.accountants[1].history]
    assert rates == [8 / tr._part_sizes[1], 4 / tr._part_sizes[1]]
    # a white-box copy of a client part (an attacker's view) back-propagates to its input
    view = copy.deepcopy(tr.clients[0])
    x = tr.x_train[:3].clone().requires_grad_(True)
    view(x).sum().backward()
    assert x.grad is not None


def test_incompatible_with_nopeek():
    with pytest.raises(ConfigError, match="defense.use.*couples the samples"):
        load_config(overrides=["defense.use=[nopeek, dpsgd]"])
    with pytest.raises(ConfigError, match="drop dpsgd or nopeek"):
        DefenseStack([_dp(), NoPeek()])


def _bn_model(extra=None):
    blocks = [nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
              nn.Sequential(nn.Flatten(1), extra or nn.Linear(4 * 16 * 16, 10))]
    return SplitModel(blocks, ["conv", "fc"], arch="bn-net", input_shape=(1, 16, 16), num_classes=10)


def test_batchnorm_is_replaced_before_any_copy_is_made():
    model = _bn_model()
    fixed, fixes = make_private_compatible(model)
    assert fixes == ["blocks.0.1: BatchNorm2d -> GroupNorm"] and ModuleValidator.is_valid(fixed)
    assert isinstance(model.blocks[0][1], nn.BatchNorm2d)  # the caller's model is left alone
    setup = _setup(**{"plan.cut": 1})
    d = _dp(noise_multiplier=1.0)
    tr = SFLTrainer(model, setup.dataset, setup.parts, setup.plan, setup.config.train, seed=0,
                    clock=lambda t, plan: 0.0, defenses=[d])
    tr.step()
    assert d.report()["model_fixes"] == 1.0
    assert all(isinstance(c[0][1], nn.GroupNorm) for c in tr.copies)


class _WithBuffer(nn.Linear):
    def __init__(self):
        super().__init__(4 * 16 * 16, 10)
        self.register_buffer("scale", torch.ones(10))


def test_unfixable_model_is_a_config_error():
    with pytest.raises(ConfigError, match="defense.dpsgd.*buffers.*drop dpsgd"):
        make_private_compatible(_bn_model(_WithBuffer()))


@pytest.mark.parametrize("kw, field", [
    ({"noise_multiplier": -1.0}, "noise_multiplier"), ({"target_epsilon": 0.0}, "target_epsilon"),
    ({"noise_multiplier": 1.0, "target_epsilon": 2.0}, "target_epsilon"), ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ({"noise_multiplier": 1.0, "max_grad_norm": None}, "max_grad_norm"), ({"delta": 1.0}, "delta"),
    ({"accountant": "moments"}, "accountant"),
])
def test_bad_parameters_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=f"defense.dpsgd.{field}"):
        _dp(**kw)


def test_config_section_and_run_records_epsilon(tmp_path):
    assert DEFENSES.get("dpsgd") is DPSGD
    cfg = load_config(overrides=small_overrides(**{"train.rounds": 2, "defense.use": "[dpsgd]",
                                                   "defense.dpsgd.noise_multiplier": 1.0}))
    result = train(cfg, out_dir=tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["defense"].startswith("dpsgd(noise_multiplier=1.0")
    assert manifest["execution"] == "per-device"  # train.execution=batched fell back, and the run says so
    assert manifest["defense_report"]["dpsgd.epsilon"] == pytest.approx(result.trainer.defense.report()["dpsgd.epsilon"])
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    eps = metrics[(metrics.phase == "defense") & (metrics.metric == "dpsgd.epsilon")]
    assert len(eps) == cfg.fleet.num_devices + 1 and eps.device.notna().sum() == cfg.fleet.num_devices
    assert (eps.defense == manifest["defense"]).all() and (eps["round"] == 2).all()
