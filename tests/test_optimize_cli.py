"""`hasfl-sec optimize` and `train --strategy`: the optimizer reached from the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hasfl_sec.cli.app import cli
from hasfl_sec.planning.bound import BoundConstants

# A small fleet, a short warm-up and a saved bound keep these tests fast.
FAST = ["--devices", "4", "--set", "optimizer.warmup_rounds=1", "--set", "optimizer.probe_size=16",
        "--set", "optimizer.b_max=16", "--set", "optimizer.target_accuracy=0.6", "--set", "optimizer.pilot_rounds=300",
        "--set", "data.partition=iid"]


@pytest.fixture(scope="module")
def bound_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bound") / "bound.json"
    result = CliRunner().invoke(cli, ["optimize", *FAST, "--save-bound", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    return path


def run_json(args):
    result = CliRunner().invoke(cli, ["optimize", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("strategy", ["hasfl", "sfl", "bs-only", "cut-only", "random", "tiered"])
def test_json_output_for_every_strategy(bound_file, strategy):
    out = run_json([*FAST, "--set", f"optimizer.bound_file={bound_file}", "--strategy", strategy])
    assert set(out) >= {"devices", "round_latency_s", "rounds", "time_to_target_s"}
    assert len(out["devices"]) == 4
    assert all(set(d) == {"device", "batch_size", "cut"} for d in out["devices"])
    if out["rounds"] is None:  # a plan that cannot reach the target predicts no finite time
        assert out["time_to_target_s"] is None and strategy != "hasfl"
    else:
        assert out["time_to_target_s"] == pytest.approx(out["rounds"] * out["round_latency_s"], rel=1e-9)


def test_hasfl_beats_the_baselines_it_generalises(bound_file):
    base = [*FAST, "--set", f"optimizer.bound_file={bound_file}"]
    hasfl = run_json([*base, "--strategy", "hasfl"])["time_to_target_s"]
    for strategy in ("sfl", "bs-only", "cut-only", "random"):
        other = run_json([*base, "--strategy", strategy])["time_to_target_s"]
        assert other is None or hasfl <= other * (1 + 1e-9), strategy


def test_saved_bound_round_trips(bound_file):
    bound = BoundConstants.load(bound_file)
    assert bound.num_devices == 4 and bound.meta["warmup_rounds"] == 1
    calibration = bound.meta["calibration"]
    assert calibration["target_accuracy"] == 0.6 and len(calibration["pilots"]) == 5
    assert bound.epsilon_calibrated is not None and bound.epsilon_calibrated > 0


def test_saved_bound_is_reused_and_recalibrated_only_for_a_new_target(bound_file, tmp_path):
    same, other = tmp_path / "same.json", tmp_path / "other.json"
    base = [*FAST, "--set", f"optimizer.bound_file={bound_file}", "--format", "json"]
    assert CliRunner().invoke(cli, ["optimize", *base, "--save-bound", str(same)]).exit_code == 0
    assert BoundConstants.load(same) == BoundConstants.load(bound_file)  # no second calibration
    result = CliRunner().invoke(cli, ["optimize", *base, "--set", "optimizer.target_accuracy=0.5",
                                      "--save-bound", str(other)])
    assert result.exit_code == 0, result.output
    assert BoundConstants.load(other).meta["calibration"]["target_accuracy"] == 0.5


def test_table_output(bound_file):
    result = CliRunner().invoke(cli, ["optimize", *FAST, "--set", f"optimizer.bound_file={bound_file}"])
    assert result.exit_code == 0, result.output
    assert "batch_size" in result.output and "time to target" in result.output


@pytest.mark.parametrize("args, field", [
    (["--set", "optimizer.b_max=0"], "optimizer.b_max"),
    (["--set", "optimizer.target_accuracy=null", "--set", "optimizer.target_ratio=1e-9"], "optimizer.target"),
    (["--set", "optimizer.target_accuracy=0.999", "--set", "optimizer.pilot_rounds=3"], "optimizer.target_accuracy"),
    (["--set", "optimizer.bound_file=/nonexistent.json"], "optimizer.bound_file"),
])
def test_bad_optimizer_input(args, field):
    result = CliRunner().invoke(cli, ["optimize", *FAST, *args])
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {field}:"), result.output


def test_train_with_the_hasfl_strategy(bound_file, tmp_path):
    result = CliRunner().invoke(cli, ["-q", "train", *FAST, "--set", f"optimizer.bound_file={bound_file}",
                                      "--strategy", "hasfl", "--rounds", "3", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    plan = json.loads((tmp_path / "r" / "plan.json").read_text())
    assert plan["strategy"] == "hasfl" and "time_to_target_s" in plan["predicted"]
