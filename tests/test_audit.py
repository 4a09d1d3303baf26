"""The audit: victim traces, a run audited end to end, a bare model over its cuts, and bad input."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import small_overrides

from hasfl_sec.attacks.registry import ATTACKS
from hasfl_sec.audit.config import AuditConfig
from hasfl_sec.audit.engine import build_attack, run_attack
from hasfl_sec.audit.entry import _env, audit_model, audit_run
from hasfl_sec.audit.victims import replay, simulate
from hasfl_sec.cli.app import cli
from hasfl_sec.config import load_config
from hasfl_sec.errors import ConfigError
from hasfl_sec.results import LEAKAGE_COLUMNS
from hasfl_sec.runs.setup import prepare
from hasfl_sec.runs.training import train

FAST = {"rmle": {"steps": 150}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished small run: 4 devices at cuts 1-4, I = 3, 12 rounds."""
    out = tmp_path_factory.mktemp("audit") / "run"
    train(load_config(overrides=small_overrides()), out_dir=out)
    return out


def test_simulated_trace_reproduces_the_split_step_and_its_periods():
    cfg = load_config(overrides=small_overrides())
    setup = prepare(cfg)
    blocks = list(setup.model.blocks)
    before = [p.detach().clone() for p in setup.model.parameters()]
    x, y = setup.dataset.x_train[:24], setup.dataset.y_train[:24]
    trace = simulate(blocks, 2, x, y, torch.arange(24), 4, cfg.train, trained_rounds=3)
    assert [v.round for v in trace.rounds] == [4, 5, 6, 7, 8, 9]
    assert sorted(trace.uploads) == [6, 9] and len(trace.periods()) == 2
    first = trace.rounds[0]
    # the recorded smashed data is what the client part (as it was in that round) makes of the inputs
    torch.testing.assert_close(first.client(x[:4]), first.exchange.smashed)
    # the model handed in was not trained
    assert all(torch.equal(a, b) for a, b in zip(before, setup.model.parameters()))
    # the upload is the client part after the period's steps: not the start weights
    start = trace.periods()[1][0].client.state_dict()
    end = trace.uploads[9].state
    assert any(not torch.equal(start[k], end[k]) for k in end)


#: Parameters that make any registered attack quick; only those an attack has are used.
QUICK = {"steps": 3, "outer_steps": 2, "inner_steps": 2, "restarts": 1, "auxiliary_samples": 32, "batch_size": 8}


@pytest.fixture(scope="module")
def small_trace():
    cfg = load_config(overrides=small_overrides())
    setup = prepare(cfg)
    x, y = setup.dataset.x_train[:12], setup.dataset.y_train[:12]
    trace = simulate(list(setup.model.blocks), 2, x, y, torch.arange(12), 4, cfg.train, trained_rounds=3)
    return setup, trace, _env(cfg, setup.dataset, "test", torch.device("cpu"))


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_registered_attack_dry_run(small_trace, name):
    """Each attack, given what its threat model grants, returns finite output of the right shapes."""
    setup, trace, env = small_trace
    cls = ATTACKS.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    audit = AuditConfig(attacks=[name], attack_params={name: {k: v for k, v in QUICK.items() if k in fields}})
    attack = build_attack(name, audit, env)
    outcome = run_attack(attack, trace, env, images=6, seed=0)
    if isinstance(outcome, str):  # e.g. a binary-only attack on 10 classes: it must say so
        assert outcome.startswith(name)
        return
    recs, truths = outcome
    n = sum(len(r.keys) for r in recs)
    assert n >= 6 and all(len(r.keys) == len(r.positions) for r in recs)
    for rec in recs:
        if cls.recovers == "inputs":
            assert rec.inputs.shape == (len(rec.keys), *setup.dataset.input_shape)
            assert torch.isfinite(rec.inputs).all() and rec.inputs.min() >= 0 and rec.inputs.max() <= 1
        else:
            assert rec.labels.shape == (len(rec.keys),) and rec.labels.max() < env.num_classes
            assert rec.label_scores is None or rec.label_scores.shape == (len(rec.keys), env.num_classes)
    with pytest.raises(ConfigError, match=f"attack.{name}.nonsense"):
        cls.from_dict({"nonsense": 1})


def test_replay_records_every_round_with_the_weights_in_use(small_config):
    setup = prepare(small_config)
    trainer = setup.trainer()
    for _ in range(4):
        trainer.step()
    traces = replay(trainer, [0, 3], 3)
    assert trainer.round == 9  # trained on to the aggregation at 6, then recorded 7..9
    assert [t.cut for t in traces] == [1, 4] and [t.batch for t in traces] == [4, 16]
    for trace in traces:
        assert [v.round for v in trace.rounds] == [7, 8, 9] and list(trace.uploads) == [9]
        view = trace.rounds[1]
        torch.testing.assert_close(view.client(view.truth.inputs), view.exchange.smashed)


def test_audit_of_a_run_writes_a_tidy_table_and_figures(run_dir):
    result = CliRunner().invoke(cli, ["-q", "audit", str(run_dir), "--attacks", "rmle", "--images", "4",
                                      "--attack-param", "rmle.steps=100", "--no-progress"])
    assert result.exit_code == 0, result.output
    out = run_dir / "audit"
    frame = pd.read_csv(out / "leakage.csv")
    assert list(frame.columns) == LEAKAGE_COLUMNS
    assert set(frame.cut) == {1, 2, 3, 4} and set(frame.device) == {0, 1, 2, 3}
    ssim = frame[(frame.attack == "rmle") & (frame.metric == "ssim")]
    assert len(ssim) == 4 and (ssim.n == 4).all() and ssim.value.between(-1, 1).all()
    assert set(frame[frame.attack == "none"].metric) >= {"dcor", "nhsic", "ksg", "dfil", "dfil_mse_bound"}
    ksg = frame[frame.metric == "ksg"].iloc[0]
    assert json.loads(ksg.params)["project_to"] == 4  # the estimator's projection is recorded
    assert (frame["round"] == 12).all() and (frame.source == "replay").all()
    meta = json.loads((out / "audit.json").read_text())
    assert "rmle" in meta["attacks"] and "weights" in meta["attacks"]["rmle"]
    for name in ("leakage_ssim.png", "leakage_psnr.png", "reconstructions_rmle.png"):
        assert (out / name).stat().st_size > 1000, name
    # the same audit again is refused unless --overwrite: no results are lost
    again = CliRunner().invoke(cli, ["audit", str(run_dir), "--attacks", "rmle", "--images", "4"])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_audit_all_cuts_simulates_the_cuts_the_plan_did_not_use(run_dir):
    audit = AuditConfig(attacks=["rmle"], cuts=[2, 6], images=4, batch_size=4, attack_params=FAST,
                        dependence=[], dfil_relative_sigma=None)
    result = audit_run(run_dir, audit)
    sources = result.frame.groupby("cut").source.first().to_dict()
    assert sources == {2: "replay", 6: "simulated"}


def test_leakage_falls_with_cut_depth_on_a_trained_cnn():
    """He et al. (2019)'s finding on the default CNN trained centrally on digits: white-box
    inversion is near exact at the first conv and far worse after five blocks."""
    cfg = load_config(overrides=["train.agg_interval=1"])
    audit = AuditConfig(attacks=["rmle"], cuts=[1, 6], images=8, batch_size=8,
                        attack_params={"rmle": {"steps": 400}}, dependence=["dcor"], dfil_relative_sigma=0.1)
    result, _ = audit_model(cfg, audit, epochs=3)
    ssim = result.frame[(result.frame.metric == "ssim")].set_index("cut").value
    assert ssim[1] > 0.9 and ssim[6] < ssim[1] - 0.3, ssim.to_dict()
    assert result.meta["test_accuracy"] > 0.8


def test_bare_model_audit_from_a_checkpoint(tmp_path):
    cfg = load_config(overrides=["train.agg_interval=1"])
    audit = AuditConfig(attacks=["rmle"], cuts=[1], images=2, batch_size=2, attack_params={"rmle": {"steps": 5}},
                        dependence=[], dfil_relative_sigma=None)
    _, model = audit_model(cfg, audit, epochs=0)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    result, again = audit_model(cfg, audit, checkpoint=tmp_path / "model.pt")
    torch.testing.assert_close(again.blocks[0][0].weight, model.blocks[0][0].weight)
    assert result.meta["training"] == "checkpoint"


BAD = [
    (["--attacks", "nosuch"], "--attacks"),
    (["--cuts", "9"], "--cuts"),
    (["--cuts", "conv99"], "--cuts"),
    (["--cuts", "some"], "--cuts"),
    (["--images", "0"], "--images"),
    (["--seeds", "a,b"], "--seeds"),
    (["--devices", "7"], "--devices"),
    (["--attack-param", "rmle.nosuch=1"], "--attack-param rmle.nosuch"),
    (["--attack-param", "steps=1"], "--attack-param"),
    (["--model", "hecnn"], "RUN_DIR"),
    (["--threads", "0"], "--threads"),
    (["--adaptive", "sometimes"], "--adaptive"),
    (["--preset", "quick"], "--preset"),
    (["--attack-param", "rmle.adaptive=false"], "--attack-param"),
]


@pytest.mark.parametrize("args, field", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_dir, tmp_path, args, field):
    out = tmp_path / "audit"
    result = CliRunner().invoke(cli, ["audit", str(run_dir), "--attacks", "rmle", *args, "--out", str(out)]
                                if args[0] != "--attacks" else ["audit", str(run_dir), *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], result.output
    assert not out.exists()


def test_a_directory_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notarun").mkdir()
    for target in (tmp_path / "notarun", tmp_path / "missing"):
        result = CliRunner().invoke(cli, ["audit", str(target), "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and "RUN_DIR" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bare_model_bad_names_list_the_valid_ones(tmp_path):
    result = CliRunner().invoke(cli, ["audit", "--model", "nonet", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "hecnn" in result.output


def test_an_attack_needing_labels_on_a_label_private_run_says_what_to_rerun(tmp_path, monkeypatch):
    from hasfl_sec.attacks.base import ThreatModel
    from hasfl_sec.attacks.feature_inversion import RMLEInversion

    class NeedsLabels(RMLEInversion):
        name = "needs-labels"
        threat_model = ThreatModel("edge-server", frozenset({"smashed", "labels"}), True, True)

    monkeypatch.setitem(ATTACKS._items, "needs-labels", NeedsLabels)
    out = tmp_path / "run"
    train(load_config(overrides=small_overrides(**{"train.rounds": 3, "train.share_labels": "false"})), out_dir=out)
    result = CliRunner().invoke(cli, ["audit", str(out), "--attacks", "needs-labels", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "train.share_labels=true" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "a").exists()


def test_audit_of_a_run_in_memory_equals_the_audit_read_back_from_disk(tmp_path):
    """``hasfl-sec eval`` audits each arm on the trainer it just trained (no second setup, no reading
    the run back); with a stateful defense on, every figure equals the audit of the run directory."""
    from hasfl_sec.audit.entry import audit_trained

    cfg = load_config(overrides=small_overrides(**{"defense.use": "[noise]", "defense.noise.sigma": 0.3}))
    result = train(cfg, out_dir=tmp_path / "run")
    audit = AuditConfig(attacks=["rmle", "inverse-network", "label-direction"], images=4, devices=[0, 2],
                        grid_images=2, attack_params={"rmle": {"steps": 20}, "inverse-network": {"steps": 20}})
    from_disk = audit_run(tmp_path / "run", audit).frame
    in_memory = audit_trained(result, audit).frame
    timed = in_memory.metric == "wall_time_s"
    assert (~timed).sum() > 10 and in_memory.attack.str.endswith("+adaptive").any()
    pd.testing.assert_frame_equal(in_memory[~timed].reset_index(drop=True),
                                  from_disk[from_disk.metric != "wall_time_s"].reset_index(drop=True))
    with pytest.raises(ValueError, match="audited already"):  # the replay advanced the trainer
        audit_trained(result, audit)
