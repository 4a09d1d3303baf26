"""User strings in report.md are literal text: no table broken, no HTML, no link, no heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hasfl_sec.config import load_config
from hasfl_sec.evaluation.collect import collect_runs
from hasfl_sec.report.doc import Document, Items, Section, Table, Text
from hasfl_sec.report.markdown import escape, render_markdown
from hasfl_sec.runs.training import train

HOSTILE = "x|y*z_<b>[l](http://e)\n# h`c`~~s~~"


def _unescaped(text: str, char: str) -> int:
    """Occurrences of ``char`` not preceded by a backslash."""
    return len(re.findall(r"(?<!\\)" + re.escape(char), text))


@pytest.mark.parametrize("text", [HOSTILE, "# heading", "- item", "1. first", "> quote", "<script>x</script>"])
def test_escaped_text_has_no_markup_left(text: str) -> None:
    out = escape(text)
    assert "\n" not in out
    for char in "|*_<>[]`~":
        assert _unescaped(out, char) == 0, (char, out)
    assert not re.match(r"\s*(#|[-+*]\s|>|\d+[.)]\s)", out), out


@pytest.mark.parametrize("text", ["hasfl-sec (1)", "0.95 ± 0.07", "-0.23", "edge-mix", "cut×devices 2/4"])
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert escape(text) == text


def test_a_hostile_name_keeps_the_table_and_the_document_intact() -> None:
    doc = Document(f"report: {HOSTILE}", [Text(f"plans: {HOSTILE}")], [Section(
        "plans", "Plans", [Items([HOSTILE]), Table(["plan", "value"], [[HOSTILE, "1"]], [False, True], HOSTILE)])])
    md = render_markdown(doc)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert all(_unescaped(row, "|") == 3 for row in rows), rows  # two columns: three pipes per row
    assert "<b>" not in md and "](http" not in md.replace("\\](http", "")
    assert [line for line in md.splitlines() if line.startswith("#")] == [
        line for line in md.splitlines() if line.startswith(("# report", "## Plans"))]


def test_report_of_a_run_with_a_hostile_folder_name(tmp_path: Path) -> None:
    """Through the real pipeline: the run id (from the folder name) lands in report.md as text."""
    run = tmp_path / "a|b*c_<i>[x](y)"
    train(load_config(overrides=["train.rounds=2", "fleet.num_devices=2", "data.image_size=8"]), out_dir=run)
    collect_runs([run], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "a\\|b\\*c\\_\\<i\\>\\[x\\](y)" in md
    assert "<i>" not in md and "[x](y)" not in md
    lines = md.splitlines()
    for i, line in enumerate(lines):  # every row of a table has as many cell borders as its header
        if line.startswith("| ") and not lines[i - 1].startswith(("| ", "|-", "| -")):
            width = _unescaped(line, "|")
            for row in (r for r in lines[i + 1:] if r.startswith("|")):
                assert _unescaped(row, "|") == width, row
                break
