"""Feature-space hijacking (attacks/fsha.py) and the hijacked-training runner (hasfl_sec/audit/active.py).

Each player's gradient comes from its own loss only (checked network by network against
gradients recomputed on separate graphs); on the bundled digits at a shallow cut the attacker's
reconstruction error falls with rounds well below the mean-image baseline.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import small_overrides
from torch import nn

from hasfl_sec.attacks.fsha import FeatureSpaceHijacking, gradient_penalty
from hasfl_sec.audit.active import HijackSettings, run_hijack
from hasfl_sec.config import load_config
from hasfl_sec.errors import ConfigError


def _client(cut: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1))[: 2 * cut]


def _attack(**params) -> FeatureSpaceHijacking:
    torch.manual_seed(1)
    public = torch.rand(40, 1, 8, 8)
    return FeatureSpaceHijacking(FeatureSpaceHijacking.Params(batch_size=16, **params), public=public,
                                 fresh_client=_client, num_devices=3)


def test_the_reply_is_the_critics_gradient_at_the_smashed_data_and_touches_no_player():
    attack = _attack()
    z = torch.randn(5, 4, 8, 8)
    g = attack.reply(1, 0, 1, z, torch.zeros(5, dtype=torch.long))
    players = attack.players[1]
    zz = z.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(copy.deepcopy(players.critic)(zz).mean(), zz)
    assert torch.allclose(g, expected * attack.params.reply_scale)
    for net in players.modules().values():
        assert all(p.grad is None for p in net.parameters())


def test_each_player_gets_the_gradient_of_its_own_loss_only():
    attack = _attack()
    private = torch.randn(12, 4, 8, 8)
    attack.reply(1, 0, 1, private, torch.zeros(12, dtype=torch.long))
    pl = attack.players[1]
    before = {k: copy.deepcopy(m) for k, m in pl.modules().items()}
    state = attack.generator.get_state()
    attack.step(1, private)

    # the same draws, on fresh graphs: each loss differentiated in isolation
    gen = torch.Generator()
    gen.set_state(state)
    idx = torch.randperm(len(attack.public), generator=gen)[: attack.params.batch_size]
    x = attack.public[idx]
    pilot, dec, critic = before["pilot"], before["decoder"], before["critic"]
    rec = F.mse_loss(dec(pilot(x)), x)
    tilde = [*pilot.parameters(), *dec.parameters()]
    want_tilde = torch.autograd.grad(rec, tilde)
    fake = pilot(x).detach()
    d_loss = critic(fake).mean() - critic(private).mean() + attack.params.gradient_penalty * gradient_penalty(
        critic, private, fake, gen)
    want_critic = torch.autograd.grad(d_loss, list(critic.parameters()))

    got_tilde = [p.grad for p in (*pl.pilot.parameters(), *pl.decoder.parameters())]
    got_critic = [p.grad for p in pl.critic.parameters()]
    for got, want in zip(got_tilde + got_critic, list(want_tilde) + list(want_critic)):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    # the critic's loss did not leak into the pilot: with it, the pilot's gradient would differ
    z_pub = pilot(x)
    leaked = torch.autograd.grad(F.mse_loss(dec(z_pub), x) + critic(z_pub).mean(), list(pilot.parameters()))
    assert not all(torch.allclose(a, b) for a, b in zip(leaked, got_tilde[: len(leaked)]))


def test_targets_and_task_follow_the_settings():
    attack = _attack(devices=[1], start_round=3, task_on_others=False)
    assert not attack.replaces(2, 1) and attack.replaces(3, 1) and not attack.replaces(3, 0)
    assert not attack.trains_task(3, 1) and not attack.trains_task(3, 0)
    assert _attack().trains_task(1, 2) is False and _attack(devices=[0]).trains_task(1, 2) is True
    with pytest.raises(ConfigError, match="attack.fsha.devices"):
        _attack(devices=[3])
    with pytest.raises(ConfigError, match="attack.fsha.lr_pilot"):
        _attack(lr_pilot=-1.0)


def test_a_checkpointed_attacker_continues_bit_for_bit():
    a, b = _attack(), _attack()
    z = torch.randn(6, 4, 8, 8)
    for t in (1, 2):
        a.reply(t, 0, 1, z, torch.zeros(6, dtype=torch.long))
        a.end_round(t)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for t in (3, 4):
        ga = a.reply(t, 0, 1, z, torch.zeros(6, dtype=torch.long))
        gb = b.reply(t, 0, 1, z, torch.zeros(6, dtype=torch.long))
        assert torch.equal(ga, gb)
        a.end_round(t)
        b.end_round(t)
    assert a.history[-1] == b.history[-1]


@pytest.mark.slow
def test_fsha_reconstructs_hijacked_devices_on_digits_below_the_baseline():
    overrides = small_overrides(**{"fleet.num_devices": 2, "plan.cut": "[1, 2]", "plan.batch_size": "[32, 32]",
                                   "train.rounds": 120, "train.agg_interval": 5, "train.eval_every": 60,
                                   "train.checkpoint_every": 0})
    settings = HijackSettings(params={"devices": [0]}, measure_every=20, images=32)
    result = run_hijack(load_config(overrides=overrides), settings)
    first, last = result.records[0], result.records[-1]
    assert [r["device"] for r in result.records] == [0] * len(result.records)
    assert (first["round"], last["round"]) == (20, 120)
    assert last["mse"] < 0.5 * last["baseline_mse"] and last["mse"] < 0.5 * first["mse"]
    assert last["ssim"] > last["baseline_ssim"]
    assert "edge-server (active)" in result.threat_model and result.cuts == [1]


def test_audit_active_writes_the_hijacked_run(tmp_path):
    import json

    import pandas as pd
    from click.testing import CliRunner

    from hasfl_sec.cli.app import cli

    out = tmp_path / "active"
    args = ["audit", "--active", "fsha", "--set", "train.rounds=20", "--set", "fleet.num_devices=3",
            "--attack-param", "fsha.devices=[1]", "--measure-every", "10", "--images", "8", "--no-progress",
            "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "device 1 (cut" in result.output and "edge-server (active)" in result.output
    frame = pd.read_csv(out / "metrics.csv")
    assert set(frame["round"]) == {10, 20} and set(frame.device) == {1}
    assert set(frame.attack) == {"fsha", "mean-image"} and set(frame.phase) == {"hijack"}
    meta = json.loads((out / "active.json").read_text())
    assert meta["targets"] == [1] and meta["settings"]["params"] == {"devices": [1]}
    for name in ("attacker.csv", "rounds.csv", "hijack_mse.png", "reconstructions_fsha.png"):
        assert (out / name).stat().st_size > 0
    assert CliRunner().invoke(cli, args).exit_code == 2  # the output exists: refused, not replaced


def test_a_hijacked_trainer_resumes_from_its_checkpoint_bit_for_bit():
    from hasfl_sec.audit.active import _attacker
    from hasfl_sec.defenses.splitguard import SplitGuard
    from hasfl_sec.runs.setup import prepare
    from hasfl_sec.sfl.parties import Parties

    config = load_config(overrides=small_overrides(**{"fleet.num_devices": 2, "plan.cut": "[1, 2]",
                                                      "plan.batch_size": "[8, 8]", "train.rounds": 6}))
    settings = HijackSettings(params={"devices": [0]})

    def trainer():
        setup = prepare(config)
        guard = SplitGuard(SplitGuard.Params(warmup=1, p_fake=0.5), num_classes=10, devices=[0, 1])
        return setup.trainer(parties=Parties(server=_attacker(config, settings, setup), monitors=(guard,)))

    straight = trainer()
    for _ in range(3):
        straight.step()
    twin = trainer()  # a fresh trainer, attacker and detector, restored from the checkpoint
    twin.load_state_dict(copy.deepcopy(straight.state_dict()))
    for _ in range(3):
        assert straight.step().device_losses == twin.step().device_losses
    assert straight.parties.server.history == twin.parties.server.history
    a, b = straight.parties.monitors[0].devices, twin.parties.monitors[0].devices
    assert all(a[d].scores == b[d].scores and a[d].fakes.n == b[d].fakes.n for d in (0, 1))


def test_an_empty_batch_gets_a_zero_reply_and_trains_no_player():
    attack = _attack()
    g = attack.reply(1, 0, 1, torch.empty(0, 4, 8, 8), torch.empty(0, dtype=torch.long))
    assert g.shape == (0, 4, 8, 8)
    attack.end_round(1)
    assert attack.history == [] and attack.players == {}


def test_without_task_on_others_the_server_is_honest_until_the_hijacking_starts():
    attack = _attack(devices=[0], start_round=5, task_on_others=False)
    assert attack.trains_task(4, 1) and attack.trains_task(4, 0)  # before: everyone is served honestly
    assert not attack.trains_task(5, 1) and not attack.trains_task(5, 0)
