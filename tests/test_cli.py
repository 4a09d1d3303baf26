"""The command line: help, listing, a real small run, and bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hasfl_sec.cli.app import cli

SMALL = ["--devices", "4", "--rounds", "4", "--set", "train.eval_every=2", "--set", "plan.candidate_cuts=[1,2]"]


@pytest.mark.parametrize("command", [[], ["train"], ["optimize"], ["list"], ["audit"]])
def test_help(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


@pytest.mark.parametrize("what, name", [("models", "hecnn"), ("datasets", "digits"), ("fleets", "paper-default"),
                                        ("strategies", "tiered"), ("partitions", "dirichlet"),
                                        ("channels", "rayleigh"), ("attacks", "threat model: edge-server"),
                                        ("metrics", "ssim")])
def test_list(what, name):
    result = CliRunner().invoke(cli, ["list", what])
    assert result.exit_code == 0 and name in result.output


def test_train_writes_a_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["-q", "train", *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    for name in ("config.yaml", "manifest.json", "plan.json", "fleet.yaml", "profile.csv", "rounds.csv",
                 "metrics.csv", "checkpoint.pt"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["rounds_done"] == 4
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header == "run_id,phase,round,device,cut,batch,attack,defense,metric,value"
    header = (out / "rounds.csv").read_text().splitlines()[0]
    assert header.split(",")[:6] == ["round", "train_loss", "test_loss", "test_accuracy", "sim_time_s", "wall_time_s"]
    # an existing run directory is not overwritten
    again = CliRunner().invoke(cli, ["train", *SMALL, "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output


BAD = [
    (["--model", "nonet"], "model.name"),
    (["--dataset", "imagenet"], "data.dataset"),
    (["--dataset", "cifar10", "--data-root", "/nonexistent"], "data.data_root"),
    (["--dataset", "cifar10"], "data.data_root"),
    (["--strategy", "fixed", "--cut", "99"], "plan.cut"),
    (["--strategy", "fixed", "--cut", "nolayer"], "plan.cut"),
    (["--batch-size", "0"], "plan.batch_size"),
    (["--batch-size", "1,2,3"], "plan.batch_size"),
    (["--strategy", "fixed", "--cut", "1,2"], "plan.cut"),
    (["--devices", "0"], "fleet.num_devices"),
    (["--heterogeneity", "extreme"], "fleet.heterogeneity"),
    (["--set", "train.bogus=1"], "train.bogus"),
    (["--set", "train.rounds=many"], "train.rounds"),
    (["--strategy", "magic"], "plan.strategy"),
    (["--batch-size", "100000000"], "plan.batch_size[0]"),
]


@pytest.mark.parametrize("args, field", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, field):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {field}"), result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_bad_fleet_files(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("server_flops: 1e12\ndevices:\n  - {flops: 1e9, uplink_bps: -5, downlink_bps: 1e6, memory_bytes: 1e9}\n")
    result = CliRunner().invoke(cli, ["train", "--fleet", str(fleet), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "uplink_bps" in result.output
    fleet.write_text("server_flops: 1e12\ndevices: []\n")
    result = CliRunner().invoke(cli, ["train", "--fleet", str(fleet), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "fleet" in result.output
    assert not (tmp_path / "r").exists()


def test_fleet_preset_by_name(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["-q", "train", *SMALL, "--fleet", "homogeneous", "--out", str(out)])
    assert result.exit_code == 0, result.output
    fleet = (out / "fleet.yaml").read_text()
    assert "homogeneous-4" in fleet


def test_resume_refuses_config_options(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path), "--resume", "--rounds", "3"])
    assert result.exit_code == 2 and "--resume" in result.output


def test_console_script_in_a_fresh_interpreter(tmp_path):
    """The installed entry point, as a user runs it: a new process, nothing imported before."""
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "from hasfl_sec.cli import main; main()", "-q", "train", "--devices", "3",
           "--rounds", "2", "--set", "plan.candidate_cuts=[1,2]", "--out", str(out)]
    # run outside the source tree, as a user does: from the repo root a non-editable install is
    # shadowed by the local hasfl_sec/ folder, which lacks the attacks/ and defenses/ mapping
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (out / "manifest.json").is_file() and "test accuracy" in done.stdout
    bad = subprocess.run([*cmd[:3], "train", "--devices", "abc"], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--devices" in bad.stderr
    # a config error (hasfl-sec's own, not click's) must reach the shell as exit code 2 as well
    wrong = subprocess.run([*cmd[:3], "-q", "train", "--set", "train.rounds=abc"], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
    assert wrong.returncode == 2 and "train.rounds" in wrong.stderr, (wrong.returncode, wrong.stderr)


@pytest.mark.parametrize("module", [f"hasfl_sec.{m}" for m in (
    "config", "data", "models", "fleet", "metrics", "privacy.profile", "defenses", "sfl.plan", "sfl.trainer",
    "optimizer", "planning.strategies", "runs", "attacks", "audit", "report", "evaluation", "cli")])
def test_every_module_imports_first(module, tmp_path):
    """No import cycle depends on which module a user happens to import first."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
