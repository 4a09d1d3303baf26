"""The README's front door: ``hasfl-sec eval`` run twice never replaces an earlier report, a report
name never resolves to or outside ``reports/``, and ``--overwrite`` replaces only the folder it names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from hasfl_sec.cli.main import cli
from hasfl_sec.fileio import first_free_dir

TINY = ["train.rounds=3", "fleet.num_devices=2", "data.image_size=8", "train.eval_every=1"]
#: One arm (the sfl plan), no bound estimate, one cheap attack: a complete report in seconds.
ONE_ARM = [*(a for o in TINY for a in ("--set", o)), "--strategies", "sfl", "--budgets", "", "--no-defenses",
           "--attacks", "rmle", "--images", "2", "--threads", "1", "--no-progress"]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding two earlier reports and a file of the user's own."""
    for name in ("default", "other"):
        (tmp_path / "reports" / name).mkdir(parents=True)
        (tmp_path / "reports" / name / "report.md").write_text(f"# {name}\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", [".", "..", "", "a/b", "a\\b", "../escape", "/abs", ".hidden"])
def test_bad_report_names_are_refused_and_nothing_is_deleted(workspace: Path, name: str) -> None:
    before = _snapshot(workspace)
    result = CliRunner().invoke(cli, ["eval", "--name", name, "--overwrite", *ONE_ARM])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --name:") and repr(name) in lines[0]
    assert _snapshot(workspace) == before


@pytest.mark.parametrize("out", [".", "..", "reports/..", "/"])
def test_out_that_would_replace_the_working_directory_is_refused(workspace: Path, out: str) -> None:
    before = _snapshot(workspace)
    result = CliRunner().invoke(cli, ["eval", "--out", out, "--overwrite", *ONE_ARM])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: --out:") and len(result.output.strip().splitlines()) == 1
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

    # --name NAME --overwrite replaces reports/NAME only, once the new report is complete.
    third = runner.invoke(cli, ["eval", "--name", "other", "--overwrite", *ONE_ARM])
    assert third.exit_code == 0, third.output
    final = _snapshot(workspace)
    assert (workspace / "reports" / "other" / "report.html").is_file()
    assert not (workspace / "reports" / "other" / "report.md").read_text().startswith("# other")
    unrelated = {k: v for k, v in after.items() if not k.startswith("reports/other/")}
    assert {k: final.get(k) for k in unrelated} == unrelated
    assert not [p for p in (workspace / "reports").iterdir() if p.name.startswith(".")]  # no work dirs left


def test_help_leads_with_eval() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    commands = result.output.split("Commands:")[1].split()
    assert commands[0] == "eval"
    assert result.output.index("hasfl-sec eval") < result.output.index("hasfl-sec train")
