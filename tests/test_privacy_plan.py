"""Privacy-constrained planning end to end: leakage profiles, the noise cost, plans with noise.

Real torch throughout: the noise cost against closed forms (a linear server) and against the
first-order derivation (exact Jacobians of a smooth network), the dFIL profile against
``metrics.fisher.dfil``, measured profiles from audit-like tables, plan.json with noise, the
``hasfl-sec optimize --strategy hasfl-private`` command and a short training run under the plan.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import small_overrides
from torch import nn
from torch.func import functional_call, grad, jacfwd

from hasfl_sec.cli.app import cli
from hasfl_sec.config import load_config
from hasfl_sec.data.datasets import load_dataset
from hasfl_sec.defenses.noise import SmashedNoise
from hasfl_sec.errors import ConfigError
from hasfl_sec.metrics.fisher import dfil
from hasfl_sec.models import build_model
from hasfl_sec.planning.privacy import measure_privacy
from hasfl_sec.privacy.noise_cost import NoiseCost, gradient_noise
from hasfl_sec.privacy.profile import LeakageProfile, rank_agreement
from hasfl_sec.runs.setup import prepare
from hasfl_sec.runs.training import train
from hasfl_sec.sfl.plan import Plan

# A 4-device fleet, the literal bound after a one-round warm-up, a quick profile: a few seconds.
FAST = ["--devices", "4", "--set", "optimizer.warmup_rounds=1", "--set", "optimizer.probe_size=16",
        "--set", "optimizer.b_max=16", "--set", "optimizer.target_accuracy=null", "--set", "data.partition=iid",
        "--set", "privacy.profile_epochs=1", "--set", "privacy.probe_images=8", "--set", "privacy.noise_pairs=1"]


# ----------------------------------------------------------------------------- the noise cost
def test_linear_server_gives_the_closed_form():
    """server(a + n) = W (a + n) + c with the loss <v, output>: g is affine in n, and the variance the
    noise adds is exactly sigma^2 m ||v||^2 (only dl/dW = v (a + n)^T depends on n)."""
    torch.manual_seed(0)
    d, m, k, n = 6, 16, 5, 64
    client, server = nn.Linear(d, m), nn.Linear(m, k)
    v = torch.randn(k)
    x, y = torch.randn(n, d), torch.zeros(n, dtype=torch.long)
    sigma = 0.3
    gn = gradient_noise(client, server, x, y, sigma=sigma, pairs=4, loss_fn=lambda out, _: (out * v).sum())
    exact = sigma**2 * m * float(v.pow(2).sum())
    assert gn.noise_variance == pytest.approx(exact, rel=0.15)  # 4 x 64 chi-square(16) draws: ~2% std
    assert gn.kappa == pytest.approx(m * float(v.pow(2).sum()), rel=0.15)
    # V: the clean per-sample gradient variance, against a plain autograd loop
    grads = []
    for i in range(n):
        client.zero_grad()
        server.zero_grad()
        (server(client(x[i:i + 1])) * v).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in [*client.parameters(), *server.parameters()]]))
    g = torch.stack(grads).double()
    assert gn.clean_variance == pytest.approx(float((g - g.mean(0)).pow(2).sum(1).mean()), rel=1e-5)
    with torch.no_grad():
        assert gn.activation_rms == pytest.approx(float(client(x).pow(2).mean().sqrt()), rel=1e-6)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")  # raised inside torch.func's jacfwd
def test_small_noise_matches_the_first_order_derivation():
    """E_x Var_n(g | x) / sigma^2 -> E_x ||dg/dn||_F^2 (kappa) as sigma -> 0, on a smooth network."""
    torch.manual_seed(1)
    client, server = nn.Sequential(nn.Linear(4, 3), nn.Tanh()), nn.Sequential(nn.Linear(3, 6), nn.Tanh(),
                                                                               nn.Linear(6, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    params = {**{f"c.{k}": p.detach() for k, p in client.named_parameters()},
              **{f"s.{k}": p.detach() for k, p in server.named_parameters()}}

    def loss(p, xi, yi, ni):
        a = functional_call(client, {k[2:]: t for k, t in p.items() if k[0] == "c"}, (xi[None],)) + ni[None]
        return F.cross_entropy(functional_call(server, {k[2:]: t for k, t in p.items() if k[0] == "s"}, (a,)), yi[None])

    kappa = 0.0
    for i in range(len(x)):
        jac = jacfwd(grad(loss), argnums=3)(params, x[i], y[i], torch.zeros(3))  # dg/dn per parameter
        kappa += sum(float(t.pow(2).sum()) for t in jac.values()) / len(x)
    gn = gradient_noise(client, server, x, y, sigma=1e-3, pairs=64)
    assert gn.kappa == pytest.approx(kappa, rel=0.1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", image_size=16, seed=0)


@pytest.fixture(scope="module")
def hecnn(digits):
    torch.manual_seed(0)
    return build_model("hecnn", in_channels=1, num_classes=10, image_size=16).eval()


def test_noise_cost_multiplier(hecnn, digits):
    x, y = digits.x_train[:8], digits.y_train[:8]
    cost = NoiseCost.measure(hecnn, hecnn, x, y, [1, 6], pairs=1)
    assert cost.multiplier(1, 0.0) == 1.0 and cost.clean_variance > 0
    m1 = cost.multiplier(1, 0.5)
    assert m1 > 1.0 and cost.multiplier(1, 0.5) == m1 and len(cost._cache) == 1  # measured once
    with torch.no_grad():
        rms = float(hecnn.client_part(6)(x).pow(2).mean().sqrt())
    assert cost.activation_rms[6] == pytest.approx(rms, rel=1e-6)
    with pytest.raises(ConfigError):
        cost.multiplier(3, 0.5)  # a cut that was not measured


# ----------------------------------------------------------------------------- leakage profiles
def test_dfil_profile_scales_as_one_over_sigma_squared(hecnn, digits):
    x, y = digits.x_train[:8], digits.y_train[:8]
    grid = [0.0, 0.5, 1.0, 2.0]
    prof, cost = measure_privacy(hecnn, hecnn, x, y, cuts=[2, 5], sigma_grid=grid, metric="dfil")
    assert prof.metric == "dfil" and prof.cuts == (2, 5) and set(cost.activation_rms) == {2, 5}
    for row in prof.values:
        assert math.isinf(row[0]) and row[1] == pytest.approx(4 * row[2]) and row[3] == pytest.approx(row[2] / 4)
    exact = float(dfil(hecnn.client_part(5), x, relative_sigma=1.0).dfil.mean())  # exact trace at this size
    assert prof.at(5, 1.0) == pytest.approx(exact, rel=0.1)  # Hutchinson, 32 probes per image
    psnr, _ = measure_privacy(hecnn, hecnn, x, y, cuts=[2, 5], sigma_grid=grid, metric="dfil_psnr")
    np.testing.assert_allclose(psnr.values[:, 1:], 10 * np.log10(prof.values[:, 1:]))
    with pytest.raises(ConfigError, match="privacy.metric"):
        measure_privacy(hecnn, hecnn, x, y, cuts=[2], sigma_grid=grid, metric="ssim")


def test_profile_is_monotone_and_conservative_between_grid_points():
    prof = LeakageProfile("ssim", (1, 2), (0.1, 0.5, 1.0), np.array([[0.9, 0.95, 0.4], [0.5, 0.3, 0.2]]))
    np.testing.assert_array_equal(prof.values, [[0.95, 0.95, 0.4], [0.5, 0.3, 0.2]])  # raised, never lowered
    assert prof.at(1, 0.7) == 0.95 and prof.at(2, 0.5) == 0.3 and prof.at(2, 9.0) == 0.2
    assert math.isinf(prof.at(2, 0.05)) and math.isinf(prof.at(3, 1.0))  # below the grid, unprofiled cut
    again = LeakageProfile.from_frame(prof.to_frame(), "ssim")
    np.testing.assert_array_equal(again.values, prof.values)
    assert again.sigmas == prof.sigmas and again.cuts == prof.cuts


def test_measured_profile_from_audit_rows(tmp_path):
    rows = pd.DataFrame({
        "cut": [1, 1, 2, 2, 3, 1, 2], "attack": ["rmle", "inverse-network"] * 2 + ["rmle", "none", "rmle"],
        "metric": ["ssim"] * 5 + ["dfil", "psnr"], "value": [0.8, 0.9, 0.7, 0.6, 0.3, 99.0, 30.0],
        "defense": ["none"] * 7,
    })
    prof = LeakageProfile.from_frame(rows, "ssim")
    assert prof.cuts == (1, 2, 3) and prof.sigmas == (0.0,)
    assert prof.by_cut(0.0) == {1: 0.9, 2: 0.7, 3: 0.3}  # the strongest attack per cut
    with_sigma = rows.assign(sigma=[0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0])
    prof = LeakageProfile.from_frame(with_sigma, "ssim")
    # cut 3 was measured at 0.5 only (nothing known without noise); cut 1 at 0 only (holds above)
    assert math.isinf(prof.at(3, 0.0)) and prof.at(3, 0.5) == 0.3 and prof.at(1, 0.5) == 0.9
    path = tmp_path / "leakage.csv"
    rows.to_csv(path, index=False)
    assert LeakageProfile.read(path, "ssim").by_cut(0.0) == {1: 0.9, 2: 0.7, 3: 0.3}
    with pytest.raises(ConfigError, match="sigma column"):
        LeakageProfile.from_frame(rows.assign(defense="noise(sigma=0.5)"), "ssim")
    with pytest.raises(ConfigError, match="privacy.metric"):
        LeakageProfile.from_frame(rows, "accuracy")
    with pytest.raises(ConfigError, match="privacy.profile"):
        LeakageProfile.read(tmp_path / "missing.csv", "ssim")


def test_rank_agreement():
    measured = {1: 0.99, 2: 0.9, 3: 0.5, 4: 0.2}
    same = rank_agreement({1: 40.0, 2: 30.0, 3: 20.0, 4: 10.0}, measured)
    assert same["spearman"] == pytest.approx(1.0) and same["kendall"] == pytest.approx(1.0) and same["n"] == 4
    flipped = rank_agreement({1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0}, measured)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["kendall"] == pytest.approx(-1.0)
    assert math.isnan(rank_agreement({1: 1.0, 2: 2.0}, measured)["spearman"])  # too few common cuts


# ----------------------------------------------------------------------------- plans with noise
def test_plan_json_round_trip_with_noise():
    plan = Plan((4, 8), (1, 3), strategy="hasfl-private", predicted={"rounds": 10.0}, noise_sigma=(0.5, 0.0),
                privacy={"metric": "dfil_psnr", "budget": [20.0, 20.0], "leakage": [19.0, 18.5],
                         "relative_sigma": [0.7, 0.0]})
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.noisy
    old = {"batch_sizes": [4, 8], "cuts": [1, 3], "strategy": "hasfl", "predicted": {}}  # plan.json before noise
    assert Plan.from_dict(old).noise_sigma is None
    assert json.loads(json.dumps(Plan.from_dict(old).to_dict())) == old  # written exactly as before
    with pytest.raises(ConfigError, match="plan.noise_sigma"):
        Plan((4, 8), (1, 3), noise_sigma=(0.5,))


def test_setup_adds_the_plan_noise_and_refuses_a_second_noise_source():
    cfg = load_config(overrides=small_overrides(**{"train.rounds": 2}))
    plan = Plan((4, 8, 12, 16), (1, 2, 3, 4), strategy="hasfl-private", noise_sigma=(0.3, 0.0, 0.6, 0.2))
    setup = prepare(cfg, plan=plan)
    noise = setup.defenses()[-1]
    assert isinstance(noise, SmashedNoise) and list(noise.params.sigma) == [0.3, 0.0, 0.6, 0.2]
    trainer = setup.trainer()
    trainer.step()
    trainer.step()
    quiet = prepare(cfg, plan=Plan(plan.batch_sizes, plan.cuts)).trainer()
    quiet.step()
    quiet.step()
    first = lambda t: next(iter(t.global_model().parameters()))  # noqa: E731
    assert not torch.equal(first(trainer), first(quiet))  # the noise reached training
    noisy_cfg = load_config(overrides=small_overrides(**{"defense.use": "[noise]"}))
    with pytest.raises(ConfigError, match="defense.use"):
        prepare(noisy_cfg, plan=plan).defenses()


def test_train_under_a_private_plan_saves_its_noise(tmp_path):
    overrides = [o for o in small_overrides(**{"plan.strategy": "hasfl-private", "train.rounds": 4})
                 if not o.startswith(("plan.cut=", "plan.batch_size="))]  # the planner chooses them
    overrides += ["optimizer.warmup_rounds=1", "optimizer.probe_size=16", "optimizer.b_max=16",
                  "optimizer.target_accuracy=null", "privacy.profile_epochs=1", "privacy.probe_images=8",
                  "privacy.noise_pairs=1", "privacy.budget=21"]
    result = train(load_config(overrides=overrides), out_dir=tmp_path / "run")
    saved = Plan.from_dict(json.loads((result.run_dir / "plan.json").read_text()))
    assert saved == result.plan and saved.strategy == "hasfl-private" and saved.noisy
    assert all(v <= 21.0 for v in saved.privacy["leakage"])
    assert len(result.rounds) == 4 and np.isfinite(result.rounds["train_loss"]).all()
    # cuts outside the plan have no planned noise: an audit there is refused, not silently mis-noised
    from hasfl_sec.audit.config import AuditConfig
    from hasfl_sec.audit.entry import audit_run
    from hasfl_sec.errors import ConfigError

    with pytest.raises(ConfigError, match="--cuts.*no planned noise"):
        audit_run(result.run_dir, AuditConfig(attacks=["rmle"], cuts="all", images=2))


# ----------------------------------------------------------------------------- the command line
def run_cli(args):
    return CliRunner().invoke(cli, ["optimize", *FAST, "--strategy", "hasfl-private", *args])


def test_optimize_hasfl_private_meets_the_budget():
    result = run_cli(["--set", "privacy.budget=21", "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["strategy"] == "hasfl-private" and out["privacy"]["metric"] == "dfil_psnr"
    for dev in out["devices"]:
        assert dev["leakage"] <= dev["budget"] == 21.0
        assert dev["noise_sigma"] > 0 and dev["relative_sigma"] > 0  # dFIL is infinite without noise
    assert out["time_to_target_s"] == pytest.approx(out["rounds"] * out["round_latency_s"], rel=1e-9)
    table = run_cli(["--set", "privacy.budget=[21, 30, 21, 30]"])
    assert table.exit_code == 0, table.output
    assert "noise_sigma" in table.output and "leakage" in table.output and "dfil_psnr" in table.output


@pytest.mark.parametrize("args, field", [
    (["--set", "privacy.budget=-300"], "privacy.budget"),
    (["--set", "privacy.budget=[20, 20]"], "privacy.budget"),
    (["--set", "privacy.metric=lpips"], "privacy.metric"),
    (["--set", "privacy.metric=ssim"], "privacy.metric"),
    (["--set", "privacy.sigma_grid=[0.5, 0.1]"], "privacy.sigma_grid"),
    (["--set", "defense.use=[noise]"], "defense.use"),
])
def test_optimize_hasfl_private_errors_are_one_line(args, field):
    result = run_cli(args)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {field}:"), line


def test_optimize_with_a_measured_profile(tmp_path):
    rows = pd.DataFrame({"cut": [1, 2, 3, 4, 5, 6, 7] * 2, "sigma": [0.0] * 7 + [1.0] * 7,
                         "metric": "ssim", "value": [0.99, 0.98, 0.9, 0.6, 0.5, 0.4, 0.45,
                                                     0.7, 0.6, 0.5, 0.3, 0.25, 0.2, 0.2]})
    path = tmp_path / "leakage.csv"
    rows.to_csv(path, index=False)
    # I = 1: no drift term, so the deep cuts this budget forces do not put the target out of reach
    result = run_cli(["--set", f"privacy.profile={path}", "--set", "privacy.metric=ssim", "--agg-interval", "1",
                      "--set", "privacy.budget=0.45", "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    for dev in out["devices"]:
        # within the budget: without noise only cuts 6 and 7, with noise 1.0 x RMS also cuts 4 and 5
        assert dev["leakage"] <= 0.45
        assert (dev["relative_sigma"] == 0.0 and dev["cut"] in (6, 7)) or (dev["relative_sigma"] == 1.0
                                                                             and dev["cut"] in (4, 5))
