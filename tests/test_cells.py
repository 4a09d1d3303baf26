"""Evaluations as cells: the same tables from every executor, resume without recomputation,
failure isolation, and one writer per output (hasfl_sec.evaluation.cells / executors / run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from hasfl_sec import load_config
from hasfl_sec.cli.app import cli
from hasfl_sec.cli.eval import EVAL_DEFAULTS
from hasfl_sec.evaluation import ExecutorConfig, build_arms, load_settings, run_eval
from hasfl_sec.evaluation.cells import CELL_FILE, read_cell
from hasfl_sec.results import EVAL_TABLES

TINY = ["train.rounds=6", "fleet.num_devices=4", "data.image_size=8", "optimizer.pilot_rounds=40",
        "optimizer.target_accuracy=0.4", "optimizer.warmup_rounds=2", "optimizer.probe_size=32", "train.eval_every=1"]
TINY_ARGS = [a for o in TINY for a in ("--set", o)]
#: Four cells: two plans, one privacy budget, one defense setting.
SETTINGS = dict(budgets=[20.0], attacks=["rmle", "label-direction"], images=2,
                attack_params={"rmle": {"steps": 5}}, seeds=[0], baselines=[], active={"attack": None, "honest": False})
DEFENSES = "defenses:\n  - {defense: noise, param: sigma, values: [1.0]}\n"
#: Columns that hold this machine's wall-clock times: the only ones that may differ between runs.
WALL = {"wall_time_s"}


def _settings(tmp_path: Path, sigma: float = 1.0):
    path = tmp_path / "eval.yaml"
    path.write_text(f"defenses:\n  - {{defense: noise, param: sigma, values: [{sigma}]}}\n")
    return load_settings(path, **SETTINGS)


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for name in EVAL_TABLES:
        if (out / f"{name}.csv").is_file():
            frame = pd.read_csv(out / f"{name}.csv")
            if "metric" in frame.columns:  # the audit's per-attack wall times
                frame = frame[~frame["metric"].isin(WALL)].reset_index(drop=True)
            frames[name] = frame.drop(columns=[c for c in frame.columns if c in WALL])
    return frames


def _assert_same_tables(a: Path, b: Path) -> None:
    ta, tb = _tables(a), _tables(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=True, obj=name)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("seq")
    result = run_eval(load_config(overrides=TINY), _settings(tmp), out=tmp / "out",
                      executor=ExecutorConfig(workers=1))
    return result


def test_sequential_path_runs_every_cell_in_order(sequential) -> None:
    assert list(sequential.summary["plan"]) == ["hasfl", "sfl", "private-20", "noise-sigma=1"]
    assert sequential.computed == ["hasfl.seed0", "sfl.seed0", "private-20.seed0", "noise-sigma=1.seed0"]
    assert sequential.reused == []
    assert sequential.failed.empty
    meta = json.loads((sequential.out / "eval.json").read_text())
    for name, cell in meta["cells"].items():
        record = read_cell(sequential.out / "runs" / name, cell["key"])
        assert record is not None and record.ok  # every folder verifies against the key eval.json records


def _pids(out: Path) -> set[int]:
    return {read_cell(folder).pid for folder in (out / "runs").iterdir() if folder.is_dir()}


def test_two_local_workers_give_the_same_tables(sequential, tmp_path: Path) -> None:
    result = run_eval(load_config(overrides=TINY), _settings(tmp_path), out=tmp_path / "pool",
                      executor=ExecutorConfig(workers=2))
    _assert_same_tables(sequential.out, result.out)
    assert sorted(result.computed) == sorted(sequential.computed)
    assert _pids(sequential.out) == {os.getpid()}  # one worker: in this process
    assert len(_pids(result.out)) == 2 and os.getpid() not in _pids(result.out)  # two spawned workers


def test_ray_gives_the_same_tables(sequential, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    # Ray's workers import from the driver's working directory: not the repository root, whose
    # hasfl_sec/ folder is not the installed package after a non-editable install (as in CI).
    monkeypatch.chdir(tmp_path)
    result = run_eval(load_config(overrides=TINY), _settings(tmp_path), out=tmp_path / "ray",
                      executor=ExecutorConfig(backend="ray", workers=2))
    _assert_same_tables(sequential.out, result.out)


def test_a_changed_setting_recomputes_exactly_the_cells_it_changes(sequential, tmp_path: Path) -> None:
    # Replacing the output with one defense setting changed: only that cell is computed again.
    out = tmp_path / "out"
    import shutil

    shutil.copytree(sequential.out, out)
    # A damaged file makes its cell unfinished: it is computed again too.
    damaged = out / "runs" / "private-20.seed0" / "rounds.csv"
    damaged.write_text(damaged.read_text()[:-10])
    result = run_eval(load_config(overrides=TINY), _settings(tmp_path, sigma=2.0), out=out, overwrite=True,
                      executor=ExecutorConfig(workers=1))
    assert sorted(result.computed) == ["noise-sigma=2.seed0", "private-20.seed0"]
    assert sorted(result.reused) == ["hasfl.seed0", "sfl.seed0"]
    assert not (out / "runs" / "noise-sigma=1.seed0").exists()
    same = _tables(sequential.out)["summary"].set_index("plan").loc[["hasfl", "sfl", "private-20"]]
    pd.testing.assert_frame_equal(_tables(out)["summary"].set_index("plan").loc[["hasfl", "sfl", "private-20"]], same)
    # --fresh reuses nothing.
    again = run_eval(load_config(overrides=TINY), _settings(tmp_path, sigma=2.0), out=out, overwrite=True,
                     executor=ExecutorConfig(workers=1), fresh=True)
    assert again.reused == [] and len(again.computed) == 4


def _eval_cmd(out: Path, *extra: str) -> list[str]:
    return [str(Path(sys.executable).with_name("hasfl-sec")), "eval", *TINY_ARGS, "--budgets", "20", "--no-defenses",
            "--no-active",
            "--images", "2", "--attacks", "rmle,label-direction", "--no-progress", "--seeds", "0", "--baselines", "",
            "--out", str(out), *extra]


def _wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_a_killed_evaluation_continues_and_computes_only_the_missing_cells(tmp_path: Path) -> None:
    out = tmp_path / "out"
    runs = tmp_path / ".out.tmp" / "runs"
    proc = subprocess.Popen(_eval_cmd(out, "--workers", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: any(runs.glob(f"*/{CELL_FILE}")) or proc.poll() is not None)
    finally:
        proc.kill()
        proc.wait()
    finished = sorted(p.parent.name for p in runs.glob(f"*/{CELL_FILE}"))
    assert finished and len(finished) < 3, proc.stderr.read().decode()[-2000:]
    assert not out.exists()
    settings = load_settings(budgets=[20.0], defenses=[], attacks=["rmle", "label-direction"], images=2, seeds=[0],
                             baselines=[], active={"attack": None, "honest": False})
    # the same config the command built: its own defaults (EVAL_DEFAULTS), then --set
    result = run_eval(load_config(overrides=[*EVAL_DEFAULTS, *TINY]), settings, out=out,
                      executor=ExecutorConfig(workers=1))
    assert sorted(result.reused) == finished
    assert len(result.computed) == 3 - len(finished) and not set(result.computed) & set(finished)
    assert list(result.summary["plan"]) == ["hasfl", "sfl", "private-20"]
    assert not (tmp_path / ".out.tmp").exists()


def test_a_failing_cell_leaves_the_others_and_the_report(tmp_path: Path) -> None:
    # A leakage budget below what any cut and noise can meet fails its cell only.
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["eval", *TINY_ARGS, "--budgets", "20,-50", "--no-defenses", "--no-active",
                                      "--images", "2",
                                      "--attacks", "label-direction", "--no-progress", "--out", str(out),
                                      "--workers", "2", "--seeds", "0", "--baselines", ""])
    assert result.exit_code == 1, result.output
    failed = pd.read_csv(out / "failed.csv")
    assert list(failed["plan"]) == ["private--50"] and failed["reason"].str.len().gt(0).all()
    assert list(pd.read_csv(out / "summary.csv")["plan"]) == ["hasfl", "sfl", "private-20"]
    assert "Failed cells" in (out / "report.md").read_text()
    assert "--overwrite" in result.output and str(out) in result.output
    assert (out / "runs" / "private--50.seed0" / CELL_FILE).is_file()


def test_a_killed_worker_fails_only_its_cell(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Long enough cells that both workers are busy when one is killed.
    proc = subprocess.Popen(_eval_cmd(out, "--workers", "2", "--set", "train.rounds=150"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        def workers() -> list[int]:
            """The spawned worker processes (not multiprocessing's resource tracker)."""
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            pids = [int(p) for p in children.read_text().split()] if children.exists() else []
            return [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]

        # Kill a worker once cells are being computed (the bound is estimated in the parent first).
        _wait_for(lambda: len(workers()) >= 2 and any((tmp_path / ".out.tmp" / "runs").glob("*/config.yaml"))
                  or proc.poll() is not None)
        os.kill(workers()[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr.decode()[-2000:]
    failed = pd.read_csv(out / "failed.csv")
    assert len(failed) == 1 and "SIGKILL" in failed["reason"].iloc[0]
    assert len(pd.read_csv(out / "summary.csv")) == 2


def test_a_second_evaluation_into_the_same_output_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = subprocess.Popen(_eval_cmd(out, "--workers", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: (tmp_path / ".out.lock").exists() or first.poll() is not None)
        second = subprocess.run(_eval_cmd(out), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"process {first.pid}" in lines[0] and "Traceback" not in second.stderr
        assert first.wait(timeout=300) == 0, first.stderr.read().decode()[-2000:]
    finally:
        first.kill()
    assert len(pd.read_csv(out / "summary.csv")) == 3


def test_executor_settings_are_checked_at_the_door(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, field in ((["--workers", "0"], "--workers"), (["--threads", "0"], "--threads"),
                        (["--address", "auto"], "--address")):
        result = runner.invoke(cli, ["eval", *TINY_ARGS, *args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and field in result.output, result.output
        assert not (tmp_path / "x").exists()


def test_ray_refuses_a_working_directory_that_would_shadow_the_package(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    (tmp_path / "hasfl_sec").mkdir()  # another copy of the package where Ray's workers would import it
    monkeypatch.chdir(tmp_path)
    from hasfl_sec.errors import ConfigError

    with pytest.raises(ConfigError, match="shadow"):
        ExecutorConfig(backend="ray").validate()


def test_two_arms_with_one_name_are_refused() -> None:
    from hasfl_sec.errors import ConfigError

    with pytest.raises(ConfigError, match="eval.budgets"):
        build_arms(load_settings(budgets=[20.0, 20.0000001]))


def test_a_cell_key_covers_the_contents_of_the_files_its_config_names(tmp_path: Path) -> None:
    from hasfl_sec.audit.config import AuditConfig
    from hasfl_sec.evaluation.cells import make_cell

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("server_flops: 1.0e13\n"
                     "devices:\n  - {flops: 1.0e12, uplink_bps: 1.0e8, downlink_bps: 1.0e8, memory_bytes: 4.0e9}\n")
    config = load_config(overrides=[f"fleet.file={fleet}"])
    arm = build_arms(load_settings(strategies=["fixed"], budgets=[], defenses=[]))[0]
    before = make_cell(arm, 0, config, AuditConfig(), 1, None).key
    assert make_cell(arm, 0, config, AuditConfig(), 1, None).key == before
    fleet.write_text(fleet.read_text().replace("1.0e12", "2.0e12"))  # the same name, another fleet
    assert make_cell(arm, 0, config, AuditConfig(), 1, None).key != before
    two_threads = make_cell(arm, 0, config, AuditConfig(), 2, None).key
    assert two_threads != make_cell(arm, 0, config, AuditConfig(), 1, None).key
