"""The README's front door: ``hasfl-sec eval`` run twice never replaces an earlier report, a report
name never resolves to or outside ``reports/``, and ``--overwrite`` replaces only the folder it names."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hasfl_sec.cli.app import cli
from hasfl_sec.errors import ConfigError
from hasfl_sec.fileio import first_free_dir, work_dir

TINY = ["train.rounds=3", "fleet.num_devices=2", "data.image_size=8", "train.eval_every=1"]
#: One arm (the sfl plan), no bound estimate, one cheap attack: a complete report in seconds.
ONE_ARM = [*(a for o in TINY for a in ("--set", o)), "--strategies", "sfl", "--budgets", "", "--no-defenses",
           "--no-active", "--attacks", "rmle", "--images", "2", "--threads", "1", "--no-progress"]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding two earlier evaluations, a folder and a file of the user's own."""
    for name in ("default", "other"):
        (tmp_path / "reports" / name).mkdir(parents=True)
        (tmp_path / "reports" / name / "report.md").write_text(f"# {name}\n")
        (tmp_path / "reports" / name / "eval.json").write_text("{}\n")
    (tmp_path / "reports" / "mine").mkdir()
    (tmp_path / "reports" / "mine" / "draft.md").write_text("mine\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", [".", "..", "", "a/b", "a\\b", "../escape", "/abs", ".hidden", "nul\x00", "tab\there"])
def test_bad_report_names_are_refused_and_nothing_is_deleted(workspace: Path, name: str) -> None:
    before = _snapshot(workspace)
    result = CliRunner().invoke(cli, ["eval", "--name", name, "--overwrite", *ONE_ARM])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --name:") and repr(name) in lines[0]
    assert _snapshot(workspace) == before


@pytest.mark.parametrize("out", [".", "..", "reports/..", "/", "reports", "reports/mine", "notes.txt/x"])
def test_out_that_is_not_an_earlier_eval_is_never_replaced(workspace: Path, out: str) -> None:
    """The working directory or a parent, a folder of reports, a folder of the user's own, a path
    below a file: refused with one line even with --overwrite, and nothing changes."""
    before = _snapshot(workspace)
    result = CliRunner().invoke(cli, ["eval", "--out", out, "--overwrite", *ONE_ARM])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: --out:") and len(result.output.strip().splitlines()) == 1
    assert _snapshot(workspace) == before


def test_overwrite_by_name_refuses_a_folder_of_the_users_own(workspace: Path) -> None:
    before = _snapshot(workspace)
    result = CliRunner().invoke(cli, ["eval", "--name", "mine", "--overwrite", *ONE_ARM])
    assert result.exit_code == 2 and result.output.startswith("Error: --name:") and "eval.json" in result.output
    assert _snapshot(workspace) == before


def test_bad_name_in_an_eval_settings_file_is_refused(workspace: Path) -> None:
    (workspace / "eval.yaml").write_text("name: ..\n")
    before = _snapshot(workspace)
    result = CliRunner().invoke(cli, ["eval", "--eval-config", "eval.yaml", "--overwrite", *ONE_ARM])
    assert result.exit_code == 2 and result.output.startswith("Error: eval.name:"), result.output
    assert _snapshot(workspace) == before


def test_first_free_dir_skips_reports_and_stopped_evaluations(tmp_path: Path) -> None:
    assert first_free_dir(tmp_path, "default") == tmp_path / "default"
    (tmp_path / "default").mkdir()
    (tmp_path / ".default-2.tmp").mkdir()  # a stopped evaluation's work directory
    assert first_free_dir(tmp_path, "default") == tmp_path / "default-3"
    (tmp_path / "default-3").mkdir()
    assert first_free_dir(tmp_path, "default") == tmp_path / "default-4"


def test_default_eval_twice_keeps_the_first_report_and_overwrite_replaces_one_folder(workspace: Path) -> None:
    runner = CliRunner()
    before = _snapshot(workspace)
    first = runner.invoke(cli, ["eval", *ONE_ARM])
    assert first.exit_code == 0, first.output
    assert "reports/default-2/report.html" in first.output  # reports/default was taken
    second = runner.invoke(cli, ["eval", *ONE_ARM])
    assert second.exit_code == 0, second.output
    assert "reports/default-3/report.html" in second.output
    after = _snapshot(workspace)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing the user had changed
    produced = _snapshot(workspace / "reports" / "default-2")
    assert "report.html" in produced and "summary.csv" in produced

    # --name NAME --overwrite replaces reports/NAME (an earlier evaluation) and nothing else.
    third = runner.invoke(cli, ["eval", "--name", "other", "--overwrite", *ONE_ARM])
    assert third.exit_code == 0, third.output
    final = _snapshot(workspace)
    assert (workspace / "reports" / "other" / "report.html").is_file()
    assert not (workspace / "reports" / "other" / "report.md").read_text().startswith("# other")
    unrelated = {k: v for k, v in after.items() if not k.startswith("reports/other/")}
    assert {k: final.get(k) for k in unrelated} == unrelated
    assert not [p for p in (workspace / "reports").iterdir() if p.name.startswith(".")]  # no work dirs left


def test_overwrite_replaces_only_once_the_new_report_is_complete(workspace: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("report failed")

    monkeypatch.setattr("hasfl_sec.evaluation.run.build_report", fail)
    before = _snapshot(workspace / "reports")
    result = CliRunner().invoke(cli, ["eval", "--name", "other", "--overwrite", *ONE_ARM])
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    after = _snapshot(workspace / "reports")
    assert {k: v for k, v in after.items() if not k.startswith(".other.tmp/")} == before
    assert any(k.startswith(".other.tmp/runs/") for k in after)  # the finished arm is kept, not lost


def test_a_work_directory_in_use_by_another_process_is_never_deleted(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "x"
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tmp = work_dir(out)
        (tmp / ".owner").write_text(str(busy.pid))  # as if that process were building it
        (tmp / "partial.csv").write_text("a\n")
        with pytest.raises(ConfigError, match=f"process {busy.pid} is building it"):
            work_dir(out)
        assert (tmp / "partial.csv").is_file()
    finally:
        busy.kill()
        busy.wait()
    assert not (work_dir(out) / "partial.csv").exists()  # its owner has ended: a stale one is replaced


def test_help_leads_with_eval() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    commands = result.output.split("Commands:")[1].split()
    assert commands[0] == "eval"
    assert result.output.index("hasfl-sec eval") < result.output.index("hasfl-sec train")
