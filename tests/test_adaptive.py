"""Defenses in the audit and adaptive attackers.

What a defended run's audit attacks is what crossed the cut (defended smashed data, for replayed
and simulated devices alike); an adaptive attacker, which knows the defense but not the victims'
draws, reconstructs better than an unaware one; more noise never leaks more; the audit names both
variants' rows and adds none without a defense.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import small_overrides

from hasfl_sec.attacks.adaptive import changes_grad, changes_smashed, expected_transform
from hasfl_sec.attacks.base import make_context, observe
from hasfl_sec.attacks.feature_inversion import RMLEInversion
from hasfl_sec.attacks.inverse_network import InverseNetwork
from hasfl_sec.attacks.label_inference import LabelDirection
from hasfl_sec.attacks.registry import ATTACKS
from hasfl_sec.audit.config import AuditConfig
from hasfl_sec.audit.engine import build_attack, check_attacks, run_attack
from hasfl_sec.audit.entry import audit_run, collect_run
from hasfl_sec.cli.app import cli
from hasfl_sec.config import load_config
from hasfl_sec.data.datasets import load_dataset
from hasfl_sec.defenses.base import Defense, DefenseStack
from hasfl_sec.defenses.build import describe_defenses
from hasfl_sec.defenses.compress import TopK, topk_per_sample
from hasfl_sec.defenses.noise import SmashedNoise, clip_per_sample
from hasfl_sec.errors import ConfigError
from hasfl_sec.metrics import image_report
from hasfl_sec.models import build_model
from hasfl_sec.runs.training import train
from hasfl_sec.sfl.protocol import Exchange

SIGMA = 0.3
QUICK_INV = {"steps": 20, "width": 8, "auxiliary_samples": 64, "batch_size": 16}
#: Parameters that make any registered attack quick; only those an attack has are used.
QUICK = {"steps": 3, "outer_steps": 2, "inner_steps": 2, "restarts": 1, "auxiliary_samples": 32, "batch_size": 8,
         "probe_steps": 2}


# ------------------------------------------------------------------------ a defended run, audited


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    """The small 4-device run (cuts 1-4) trained with Gaussian noise of std SIGMA on the smashed data."""
    out = tmp_path_factory.mktemp("adaptive") / "run"
    train(load_config(overrides=small_overrides(**{"defense.use": "[noise]", "defense.noise.sigma": SIGMA})),
          out_dir=out)
    return out


def test_recorded_smashed_data_carry_the_runs_noise(noisy_run):
    """Replayed devices (cuts 1-4) and a simulated one (cut 6) record client(x) + noise of std SIGMA."""
    run = collect_run(noisy_run, AuditConfig(attacks=["rmle"], cuts=[1, 2, 3, 4, 6], images=16, batch_size=8))
    assert run.env.defense == describe_defenses(run.config.defense) and run.env.defense.startswith("noise(sigma=0.3")
    assert {t.source for t in run.traces} == {"replay", "simulated"}
    for trace in run.traces:
        diffs = []
        for view in trace.rounds:
            with torch.no_grad():
                diffs.append((view.exchange.smashed - view.client(view.truth.inputs)).flatten())
        diff = torch.cat(diffs)
        assert abs(float(diff.std()) - SIGMA) < 0.1 * SIGMA, (trace.cut, float(diff.std()))
        assert abs(float(diff.mean())) < 0.1 * SIGMA


def test_defended_run_audit_has_both_variants_and_the_defense_label(noisy_run):
    audit = AuditConfig(attacks=["rmle", "inverse-network", "label-direction"], cuts=[2], images=4,
                        attack_params={"rmle": {"steps": 5}, "inverse-network": QUICK_INV,
                                       "label-direction": {"auxiliary_samples": 32}},
                        dependence=[], dfil_relative_sigma=None)
    result = audit_run(noisy_run, audit)
    frame = result.frame
    # rMLE under unclipped zero-mean noise: the adaptive attack is the unaware one, so one row set
    assert set(frame.attack) == {"rmle", "inverse-network", "inverse-network+adaptive", "label-direction",
                                 "label-direction+adaptive"}
    assert frame.defense.str.startswith("noise(sigma=0.3,").all() and frame.defense.nunique() == 1
    threat = frame.groupby("attack").threat_model.first()
    assert "the defense" in threat["inverse-network+adaptive"] and "the defense" not in threat["inverse-network"]
    params = frame.groupby("attack").params.first().map(json.loads)
    assert params["inverse-network+adaptive"]["adaptive"] is True and params["inverse-network"]["adaptive"] is False
    assert "rmle" in result.meta["adaptive"]["same_as_unaware"]
    assert result.meta["defense"] == frame.defense.iloc[0]

    one = dataclasses.replace(audit, attacks=["inverse-network"], attack_params={"inverse-network": QUICK_INV})
    only = audit_run(noisy_run, dataclasses.replace(one, adaptive="only"))
    assert set(only.frame.attack) == {"inverse-network+adaptive"}
    off = audit_run(noisy_run, dataclasses.replace(one, adaptive="off"))
    assert set(off.frame.attack) == {"inverse-network"}


def test_no_defense_no_adaptive_rows(tmp_path):
    out = tmp_path / "run"
    train(load_config(overrides=small_overrides(**{"train.rounds": 3})), out_dir=out)
    result = audit_run(out, AuditConfig(attacks=["inverse-network"], cuts=[1], images=4,
                                        attack_params={"inverse-network": QUICK_INV}, dependence=[],
                                        dfil_relative_sigma=None))
    assert set(result.frame.attack) == {"inverse-network"} and (result.frame.defense == "none").all()
    assert "the defense" not in result.frame.threat_model.iloc[0]


def test_bare_model_audit_takes_a_defense_from_set(tmp_path):
    out = tmp_path / "audit"
    result = CliRunner().invoke(cli, [
        "-q", "audit", "--model", "hecnn", "--dataset", "digits", "--set", "defense.use=[noise]",
        "--set", "defense.noise.sigma=0.3", "--set", "defense.noise.clip=5.0", "--set", "train.agg_interval=1",
        "--epochs", "0", "--cuts", "1", "--images", "4", "--batch-size", "4", "--attacks", "rmle",
        "--attack-param", "rmle.steps=3", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "leakage.csv")
    # clipping makes the expected transform non-trivial: rMLE gets an adaptive variant
    assert set(frame[frame.attack != "none"].attack) == {"rmle", "rmle+adaptive"}
    assert frame.defense.str.startswith("noise(sigma=0.3, clip=5.0").all()
    assert (out / "reconstructions_rmle+adaptive.png").exists()


@pytest.mark.parametrize("args, field", [
    (AuditConfig(adaptive="sometimes"), "--adaptive"),
    (AuditConfig(preset="quick"), "--preset"),
    (AuditConfig(attack_params={"rmle": {"adaptive": True}}), "--attack-param"),
])
def test_bad_audit_settings_name_the_field(args, field):
    with pytest.raises(ConfigError, match=field):
        check_attacks(args, labels_shared=True)


def test_fast_preset_reduces_steps_and_explicit_params_win():
    fast = AuditConfig(preset="fast", attack_params={"rmle": {"steps": 7}})
    assert fast.params_for("rmle") == {"steps": 7}
    assert fast.params_for("inverse-network")["steps"] < InverseNetwork.Params().steps
    assert fast.params_for("unsplit")["steps"] < 1200


@pytest.fixture(scope="module")
def defended_trace():
    """A simulated device at cut 2 under clip-and-noise then top-k, and an env whose attacker knows it."""
    from hasfl_sec.audit.entry import _env
    from hasfl_sec.audit.victims import simulate
    from hasfl_sec.runs.setup import prepare

    cfg = load_config(overrides=small_overrides(**{"defense.use": "[noise, topk]", "defense.noise.sigma": 0.1,
                                                   "defense.noise.clip": 5.0, "defense.topk.ratio": 0.5}))
    setup = prepare(cfg)
    x, y = setup.dataset.x_train[:12], setup.dataset.y_train[:12]
    stack = DefenseStack(setup.defenses("simulated-device"))
    trace = simulate(list(setup.model.blocks), 2, x, y, torch.arange(12), 4, cfg.train, trained_rounds=3,
                     defense=stack)
    return trace, _env(cfg, setup.dataset, "test", torch.device("cpu"))


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_runs_unaware_and_adaptive_against_a_defense(defended_trace, name):
    trace, env = defended_trace
    # top-k zeroes half of what is sent: the simulated device's records show it
    assert (trace.rounds[0].exchange.smashed == 0).float().mean() >= 0.5
    fields = {f.name for f in dataclasses.fields(ATTACKS.get(name).Params)}
    audit = AuditConfig(attacks=[name], attack_params={name: {k: v for k, v in QUICK.items() if k in fields}})
    for adaptive in (False, True):
        attack = build_attack(name, audit, env, adaptive=adaptive)
        outcome = run_attack(attack, trace, env, images=6, seed=0)
        if isinstance(outcome, str):
            assert outcome.startswith(name)
            continue
        for rec in outcome[0]:
            values = rec.inputs if rec.inputs is not None else rec.label_scores
            assert torch.isfinite(values).all()
    if "adaptive" in fields and name != "label-norm":
        assert attack.adapts_to(env.attacker_copy(0)) and attack.threat_model.knows_defense


# ------------------------------------------------------------------------ expected transforms


class _Dropout(Defense):
    """Random, not additive: keep each value with probability 1/2, scaled by 2."""

    def __init__(self):
        self.gen = torch.Generator().manual_seed(0)

    def transform_smashed(self, smashed, *, round, device):
        return smashed * (torch.rand(smashed.shape, generator=self.gen) < 0.5) * 2


class _GradNoise(Defense):
    def transform_grad(self, grad, *, round, device):
        return grad + 1.0


def test_expected_transform_closed_forms_and_fallbacks():
    a = torch.randn(4, 3, 2, 2, requires_grad=True)
    assert expected_transform(None) is None and expected_transform(DefenseStack([])) is None
    assert expected_transform(SmashedNoise(SmashedNoise.Params(sigma=1.0))) is None  # E[a + n] = a
    clipped = expected_transform(DefenseStack([SmashedNoise(SmashedNoise.Params(sigma=1.0, clip=0.5))]))
    torch.testing.assert_close(clipped(a), clip_per_sample(a, 0.5))
    # deterministic: the transform itself, back-propagated as the defense does (top-k: through the kept entries)
    topk = TopK(TopK.Params(ratio=0.25))
    out = expected_transform(topk)(a)
    torch.testing.assert_close(out, topk_per_sample(a, 0.25))
    (g,) = torch.autograd.grad(out.sum(), a)
    torch.testing.assert_close(g, (out != 0).float())
    # random: closer to the mean (a) than one draw is
    big = torch.randn(2000)
    assert (expected_transform(_Dropout())(big) - big).abs().mean() < 0.7 * (_Dropout().transform_smashed(
        big, round=0, device=0) - big).abs().mean()
    assert changes_smashed(topk) and not changes_grad(topk)
    assert changes_grad(DefenseStack([_GradNoise()])) and not changes_smashed(DefenseStack([_GradNoise()]))
    assert not changes_smashed(SmashedNoise())  # sigma 0, no clip: the identity


def test_adaptive_sybil_goes_through_the_defended_split_step():
    """label-direction: the adaptive sybil asks for the defended step, the unaware one for the plain one."""
    calls = []

    def sybil(x, y, defense=None):
        calls.append(defense)
        return torch.randn(len(x), 5, generator=torch.Generator().manual_seed(len(calls)))

    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 4
    defense = SmashedNoise(SmashedNoise.Params(sigma=1.0))
    ex = Exchange(round=1, device=0, step=0, cut=1, smashed=None, labels=None, grad=torch.randn(3, 5))
    for adaptive in (False, True):
        attack = LabelDirection(LabelDirection.Params(auxiliary_samples=20, adaptive=adaptive))
        ctx = make_context(attack.threat_model, client=torch.nn.Identity(), fresh_client=torch.nn.Identity,
                           input_shape=(1, 8, 8), num_classes=4, cut=1, auxiliary=x, auxiliary_labels=y,
                           sybil_grad=sybil, defense=defense)
        assert (ctx.defense is defense) == adaptive  # granted only to the adaptive attacker
        attack.reconstruct(observe([ex], [], attack.threat_model), ctx)
    assert calls == [None, defense]


# ------------------------------------------------------------------------ measured adaptivity


@pytest.fixture(scope="module")
def digits8():
    """An untrained default CNN's client part at cut 2 on 8x8 digits, 64 victims, RMS of their smashed data."""
    ds = load_dataset("digits", image_size=8, seed=0)
    torch.manual_seed(0)
    client = build_model("hecnn", in_channels=1, num_classes=10, image_size=8).client_part(2).eval()
    x = ds.x_train[:64]
    with torch.no_grad():
        rms = float(client(x).pow(2).mean().sqrt())
    return ds, client, x, rms


def _inverse_network(digits8, relative_sigma: float, adaptive: bool) -> dict[str, float]:
    """Mean MSE and SSIM of the (tiny, 300-step) inverse network on victims noised at
    ``relative_sigma`` x RMS; the attacker's copy of the defense draws its own noise."""
    ds, client, x, rms = digits8
    sigma = relative_sigma * rms
    with torch.no_grad():
        sent = SmashedNoise(SmashedNoise.Params(sigma=sigma, seed=1)).transform_smashed(client(x), round=1, device=0)
    ex = Exchange(round=1, device=0, step=0, cut=2, smashed=sent, labels=None, grad=None)
    torch.manual_seed(0)  # the decoder's initialisation: the same for both variants
    attack = InverseNetwork(InverseNetwork.Params(steps=300, width=8, auxiliary_samples=256, adaptive=adaptive))
    ctx = make_context(attack.threat_model, client=client, fresh_client=lambda: copy.deepcopy(client),
                       input_shape=ds.input_shape, num_classes=10, cut=2, auxiliary=ds.x_test,
                       auxiliary_labels=ds.y_test, defense=SmashedNoise(SmashedNoise.Params(sigma=sigma, seed=2)),
                       seed=0)
    rec = attack.reconstruct(observe([ex], [], attack.threat_model), ctx)
    return {k: float(v.mean()) for k, v in image_report(rec.inputs, x).items()}


def test_adaptive_inverse_network_beats_the_unaware_one_under_strong_noise(digits8):
    """Noise of twice the smashed data's RMS: the decoder trained on noisy smashed data
    reconstructs with clearly lower MSE than the one trained on clean data (measured: 0.059 vs 0.127)."""
    unaware = _inverse_network(digits8, 2.0, adaptive=False)
    adaptive = _inverse_network(digits8, 2.0, adaptive=True)
    assert adaptive["mse"] < 0.75 * unaware["mse"], (adaptive, unaware)


def test_more_noise_never_leaks_more(digits8):
    """SSIM of the adaptive inverse network at sigma = 0, 0.5, 2 x RMS is non-increasing (within
    0.05), and strong noise costs it clearly (measured: 0.88, 0.84, 0.60)."""
    ssim = [_inverse_network(digits8, rel, adaptive=True)["ssim"] for rel in (0.0, 0.5, 2.0)]
    assert all(later <= earlier + 0.05 for earlier, later in zip(ssim, ssim[1:])), ssim
    assert ssim[-1] < ssim[0] - 0.1, ssim


def test_adaptive_rmle_inverts_through_a_clip():
    """A tight clip (0.3 x the median norm) and no noise: rMLE matching clip(client(x)) recovers
    the digits, matching client(x) to the clipped data does not (measured SSIM 0.72 vs 0.31)."""
    ds = load_dataset("digits", image_size=8, seed=0)
    torch.manual_seed(0)
    client = build_model("hecnn", in_channels=1, num_classes=10, image_size=8).client_part(2).eval()
    x = ds.x_train[:16]
    with torch.no_grad():
        clean = client(x)
    clip = 0.3 * float(clean.flatten(1).norm(dim=1).median())
    ex = Exchange(round=1, device=0, step=0, cut=2, smashed=clip_per_sample(clean, clip), labels=None, grad=None)
    assert RMLEInversion().adapts_to(SmashedNoise(SmashedNoise.Params(clip=clip)))
    ssim = {}
    for adaptive in (False, True):
        attack = RMLEInversion(RMLEInversion.Params(steps=300, adaptive=adaptive))
        ctx = make_context(attack.threat_model, client=client, fresh_client=lambda: copy.deepcopy(client),
                           input_shape=ds.input_shape, num_classes=10, cut=2,
                           defense=SmashedNoise(SmashedNoise.Params(clip=clip)), seed=0)
        rec = attack.reconstruct(observe([ex], [], attack.threat_model), ctx)
        ssim[adaptive] = float(image_report(rec.inputs, x)["ssim"].mean())
    assert ssim[True] > ssim[False] + 0.2, ssim
