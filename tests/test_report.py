"""Reports: eval directories collected from real (tiny, audited) runs, rendered to HTML and Markdown."""

from __future__ import annotations

import base64
import json
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import small_overrides

from hasfl_sec.audit.config import AuditConfig
from hasfl_sec.audit.entry import audit_run
from hasfl_sec.audit.output import write_audit
from hasfl_sec.cli.app import cli
from hasfl_sec.config import load_config
from hasfl_sec.errors import ConfigError
from hasfl_sec.evaluation.collect import collect_runs
from hasfl_sec.evaluation.hijack_tables import detector_table, hijack_table
from hasfl_sec.report import build_report, device_classes, pareto_front
from hasfl_sec.report.figures import FIGURES
from hasfl_sec.report.sections import SECTIONS
from hasfl_sec.results import EVAL_TABLES, LEAKAGE_COLUMNS
from hasfl_sec.runs.training import train

XHTML = "{http://www.w3.org/1999/xhtml}"
TARGET = 0.2
#: two plans: heterogeneous cuts 1..4, and every device at cut 2 with batch 8.
RUNS = {"hetero": {}, "uniform": {"plan.cut": "[2, 2, 2, 2]", "plan.batch_size": 8}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two finished, audited runs (6 rounds each, rmle with 20 steps on 4 images per device)."""
    root = tmp_path_factory.mktemp("report-runs")
    out = []
    for name, extra in RUNS.items():
        overrides = small_overrides(**{"train.rounds": 6, "train.eval_every": 3, "train.checkpoint_every": 0,
                                       "optimizer.target_accuracy": TARGET, **extra})
        path = root / name
        train(load_config(overrides=overrides), out_dir=path)
        audit = AuditConfig(attacks=["rmle"], images=4, attack_params={"rmle": {"steps": 20}})
        write_audit(audit_run(path, audit), path / "audit")
        out.append(path)
    return out


@pytest.fixture(scope="module")
def collected(runs, tmp_path_factory) -> Path:
    return collect_runs(runs, tmp_path_factory.mktemp("report-eval") / "eval")


@pytest.fixture
def full(collected, tmp_path) -> Path:
    """A copy of the collected eval directory with a small, well-formed defenses.csv added (plain
    runs have no defense sweep), rendered."""
    path = shutil.copytree(collected, tmp_path / "full")
    rows = [("none", "none", 0.0, 0.80, 0.0, "rmle", False, 0.50, 0.050, 13.0, float("nan")),
            ("noise", "sigma=0.5", 0.5, 0.75, 5.0, "rmle", False, 0.30, 0.080, 11.0, 8.0),
            ("noise", "sigma=0.5", 0.5, 0.75, 5.0, "rmle+adaptive", True, 0.45, 0.060, 12.5, 8.0),
            ("noise", "sigma=1", 1.0, 0.70, 10.0, "rmle", False, 0.20, 0.100, 10.0, 3.0),
            ("noise", "sigma=1", 1.0, 0.70, 10.0, "rmle+adaptive", True, 0.40, 0.070, 11.5, 3.0)]
    frame = pd.DataFrame([(d, 0, s, st, 2, a, ad, at, adp, ss, "ssim", ss, m, p, e)
                          for d, s, st, a, ad, at, adp, ss, m, p, e in rows],
                         columns=EVAL_TABLES["defenses"])
    frame.to_csv(path / "defenses.csv", index=False)
    pd.DataFrame([("private-5", 0, "private", "privacy.budget: got 5.0; expected a budget >= 9.2")],
                 columns=EVAL_TABLES["failed"]).to_csv(path / "failed.csv", index=False)
    pd.DataFrame([("speed", "hetero", "uniform", "speedup_time_to_target", "ratio", 2.0, 1.5, 2.7, 3, True,
                   "paired, Student t, 95%, log scale")],
                 columns=EVAL_TABLES["comparisons"]).to_csv(path / "comparisons.csv", index=False)
    _hijack_tables(path)
    build_report(path)
    return path


def _hijack_tables(path: Path) -> None:
    """A malicious server's per-seed rows (two seeds, two rounds, one hijacked device per arm and an
    honest one) and the tables over seeds the evaluation derives from them."""
    active, detections = [], []
    for seed in (0, 1):
        for plan, defense, mse in (("fsha-hetero", "none", 0.01), ("fsha-hetero-noise", "noise", 0.02)):
            for rnd in (10, 20):
                active.append((plan, seed, "fsha", defense, "", rnd, 0, "slow", 2, 8, mse * 30 / rnd, 15.0, 0.6,
                               0.05, 0.1))
            for device, hijacked, caught in ((0, True, 20), (1, False, None)):
                detections.append((plan, seed, defense, "", "splitguard", device, "slow", 2, hijacked, caught, 4,
                                   0.02 if caught else None, 0.5 if caught else None))
    active_frame = pd.DataFrame(active, columns=EVAL_TABLES["active"])
    detection_frame = pd.DataFrame(detections, columns=EVAL_TABLES["detections"])
    accuracy = active_frame[["plan", "seed"]].drop_duplicates().assign(final_accuracy=0.8)
    for name, frame in (("active", active_frame), ("detections", detection_frame),
                        ("hijack", hijack_table(active_frame, accuracy)), ("detectors", detector_table(detection_frame))):
        frame.to_csv(path / f"{name}.csv", index=False)


# reading helpers -------------------------------------------------------------------------------------
class _Balance(HTMLParser):
    """Checks that every opened element is closed in order (void elements are self-closed)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def _parse(html_path: Path) -> ET.Element:
    text = html_path.read_text(encoding="utf-8")
    checker = _Balance()
    checker.feed(text)
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    return ET.fromstring(text)


def _tables(root: ET.Element) -> dict[str, list[dict[str, str]]]:
    """Captioned tables as lists of {header: cell}."""
    out = {}
    for t in root.iter(f"{XHTML}table"):
        caption = t.find(f"{XHTML}caption")
        headers = [th.text or "" for th in t.iter(f"{XHTML}th")]
        rows = [[td.text or "" for td in tr.iter(f"{XHTML}td")] for tr in t.find(f"{XHTML}tbody")]
        out[caption.text if caption is not None else f"#{len(out)}"] = [dict(zip(headers, r)) for r in rows]
    return out


def _pngs(path: Path) -> list[Path]:
    return sorted((path / "figures").glob("*.png"))


# collecting ------------------------------------------------------------------------------------------
def test_collect_writes_the_eval_tables_from_the_runs(runs, collected):
    meta = json.loads((collected / "eval.json").read_text())
    assert {"name", "created", "config", "settings", "timings", "wall_time_s", "versions", "notes"} <= set(meta)
    assert meta["config"]["optimizer"]["target_accuracy"] == TARGET and meta["name"] == "eval"
    assert any("plan.cut" in note for note in meta["notes"])  # the runs differ in their cuts
    for name in ("plans", "summary", "rounds", "leakage", "pareto"):
        assert list(pd.read_csv(collected / f"{name}.csv").columns) == EVAL_TABLES[name]
    assert not (collected / "defenses.csv").exists()

    plans = pd.read_csv(collected / "plans.csv")
    summary = pd.read_csv(collected / "summary.csv").set_index("plan")
    leakage = pd.read_csv(collected / "leakage.csv")
    assert list(leakage.columns) == ["plan", "seed", *LEAKAGE_COLUMNS]
    for run in runs:
        plan = json.loads((run / "plan.json").read_text())
        rows = plans[plans.plan == run.name].sort_values("device")
        assert list(rows.batch) == plan["batch_sizes"] and list(rows.cut) == plan["cuts"]
        assert rows.loc[rows.compute_flops.idxmax(), "device_class"] == "fast"
        assert rows.loc[rows.compute_flops.idxmin(), "device_class"] == "slow"
        manifest = json.loads((run / "manifest.json").read_text())
        own = pd.read_csv(run / "rounds.csv")
        reached = own[own.test_accuracy >= TARGET]
        row = summary.loc[run.name]
        assert row.final_accuracy == pytest.approx(manifest["final_test_accuracy"])
        if reached.empty:
            assert pd.isna(row.measured_time_to_target_s)
        else:
            assert row.measured_time_to_target_s == pytest.approx(reached.sim_time_s.iloc[0])
        audit = pd.read_csv(run / "audit" / "leakage.csv")
        ssim = audit[(audit.attack == "rmle") & (audit.metric == "ssim")]
        assert row.max_leakage == pytest.approx(ssim.value.max()) and row.strongest_attack == "rmle"
        assert len(leakage[leakage.plan == run.name]) == len(audit)
        grid = collected / "figures" / f"reconstructions_{run.name}_rmle.png"
        assert grid.read_bytes() == (run / "audit" / "reconstructions_rmle.png").read_bytes()
    pareto = pd.read_csv(collected / "pareto.csv")
    assert set(pareto.plan) == {r.name for r in runs} and pareto.leakage.between(-1, 1).all()
    for _, part in pareto.groupby("device_class"):
        assert part.on_front.any() == part.measured_time_to_target_s.notna().any()
    assert not list(collected.parent.glob(".*"))  # no temporary directory left


def test_pareto_front_and_device_classes():
    # A; B is worse than A on both; C leaks least; D never reached the target; E ties with A
    assert pareto_front([0.5, 0.6, 0.2, 0.1, 0.5], [10, 12, 20, float("nan"), 10]) == [True, False, True, False, True]
    assert device_classes([5, 1, 3]) == ["fast", "slow", "medium"]
    assert device_classes([2, 2, 1, 9, 4, 3]).count("slow") == 2


# rendering -------------------------------------------------------------------------------------------
def test_report_has_every_section_table_and_embedded_figure(full):
    root = _parse(full / "report.html")
    titles = [h.text for h in root.iter(f"{XHTML}h2")]
    assert titles == [t for k, t in SECTIONS.items() if k != "transformer"]  # the model is a CNN
    assert not [p for p in root.iter(f"{XHTML}p") if p.get("class") == "absent"]
    assert {h.text.split(" ")[0] for h in root.iter(f"{XHTML}h3")} >= {"hetero", "uniform", "Plan"}

    tables = _tables(root)
    plans = pd.read_csv(full / "plans.csv")
    for caption, n in (("Summary per plan", 2),
                       ("Cells that did not finish (missing from every other table)", 1), ("Predicted against measured time to target (simulated clock)", 2),
                       ("Threat models of the attacks", 1), ("Accuracy cost against leakage reduction", 5),
                       ("Leakage against time to target per device class", len(pd.read_csv(full / "pareto.csv"))),
                       ("Attacks on plan hetero (per seed: means over images and attack seeds)", 4),
                       ("Attacks on plan uniform (per seed: means over images and attack seeds)", 1)):
        assert len(tables[caption]) == n, caption
    device_tables = [rows for key, rows in tables.items() if key.startswith("#") and rows and "noise σ" in rows[0]]
    assert [len(t) for t in device_tables] == [4, 4]
    assert [r["cut"] for r in device_tables[0]] == [str(c) for c in plans[plans.plan == "hetero"].cut]
    attacks = tables["Attacks on plan hetero (per seed: means over images and attack seeds)"]
    assert [r["cut"] for r in attacks] == ["1", "2", "3", "4"]
    assert all(r["threat model"].startswith("edge-server") and r["ssim"] not in ("", "–") for r in attacks)
    defended = {(r["setting"], r["attacker"]): r for r in tables["Accuracy cost against leakage reduction"]}
    assert defended[("sigma=1", "adaptive")]["SSIM reduction"] == "0.1"
    assert defended[("sigma=1", "unaware")]["SSIM reduction"] == "0.3"
    assert defended[("sigma=0.5", "unaware")]["ε"] == "8" and defended[("none", "unaware")]["ε"] == "–"

    # every figure file is embedded exactly once, byte for byte
    pngs = _pngs(full)
    assert {p.name for p in pngs} >= {"accuracy_vs_time.png", "leakage_vs_cut.png", "defenses.png",
                                      "reconstructions_hetero_rmle.png", "reconstructions_uniform_rmle.png"}
    sources = [img.get("src") for img in root.iter(f"{XHTML}img")]
    assert all(s.startswith("data:image/png;base64,") for s in sources) and len(sources) == len(pngs)
    embedded = sorted(base64.b64decode(s.split(",", 1)[1]) for s in sources)
    assert embedded == sorted(p.read_bytes() for p in pngs)

    md = (full / "report.md").read_text(encoding="utf-8")
    for key, title in SECTIONS.items():
        if key == "transformer":  # a CNN: no such section
            continue
        assert f"\n## {title}\n" in md
    for caption in ("Summary per plan", "Accuracy cost against leakage reduction", "Threat models of the attacks"):
        head = md.split(f"**{caption}**", 1)[1].strip().splitlines()
        assert head[0].startswith("| ") and re.fullmatch(r"\|( -{3}:? \|)+", head[1])
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(f"figures/{p.name}" for p in pngs)
    assert all((full / link).is_file() for link in links)


def test_sections_without_data_are_left_out_and_named_in_one_line(collected, tmp_path):
    path = shutil.copytree(collected, tmp_path / "partial")
    build_report(path)
    assert (path / "figures" / "leakage_vs_cut.png").is_file()
    for name in ("leakage.csv", "pareto.csv"):
        (path / name).unlink()
    for grid in (path / "figures").glob("reconstructions_*.png"):
        grid.unlink()
    pd.read_csv(path / "summary.csv").head(0).to_csv(path / "summary.csv", index=False)
    build_report(path)
    root = _parse(path / "report.html")
    assert [h.text for h in root.iter(f"{XHTML}h2")] == ["Plans", "Training", "Notes"]
    absent = [p.text for p in root.iter(f"{XHTML}p") if p.get("class") == "absent"]
    assert len(absent) == 1
    for part in ("Leakage per split (no leakage.csv)", "Reconstructions", "Defenses (no defenses.csv)",
                 "Pareto front (no pareto.csv)"):
        assert part in absent[0]
    # figures of data that is gone are removed; the rest is still embedded one to one
    assert [p.name for p in _pngs(path)] == ["accuracy_vs_time.png"]
    assert len(list(root.iter(f"{XHTML}img"))) == 1
    assert "> Not in this report (no data): " in (path / "report.md").read_text(encoding="utf-8")


def test_rebuilding_is_byte_for_byte_reproducible(full):
    first = {p.name: p.read_bytes() for p in [full / "report.html", full / "report.md", *_pngs(full)]}
    build_report(full)
    again = {p.name: p.read_bytes() for p in [full / "report.html", full / "report.md", *_pngs(full)]}
    assert first == again
    assert all(b"matplotlib" not in again[name] for name in FIGURES if name in again)  # no Software tag


def test_a_malformed_table_is_a_one_line_error_and_keeps_the_old_report(full):
    before = (full / "report.html").read_bytes()
    pd.read_csv(full / "plans.csv").drop(columns=["cut"]).to_csv(full / "plans.csv", index=False)
    with pytest.raises(ConfigError, match=r"plans\.csv.*missing column\(s\): cut") as err:
        build_report(full)
    assert "\n" not in str(err.value)
    assert (full / "report.html").read_bytes() == before and not (full / ".report.tmp").exists()


def test_optional_columns_may_be_absent_and_extra_ones_are_shown(collected, tmp_path):
    path = shutil.copytree(collected, tmp_path / "lenient")
    summary = pd.read_csv(path / "summary.csv").drop(columns=["budget_metric", "predicted_rounds"])
    summary["measured_rounds"] = [3, 3]
    summary.to_csv(path / "summary.csv", index=False)
    build_report(path)
    rows = _tables(_parse(path / "report.html"))["Predicted against measured time to target (simulated clock)"]
    assert [r["measured rounds"] for r in rows] == ["3", "3"] and {r["predicted rounds"] for r in rows} == {"–"}


def test_an_eval_written_before_leakage_metrics_scores_its_defenses_by_ssim(full, tmp_path):
    """An older eval directory has no ``leakage``/``leakage_metric`` columns: its defense table and
    summary are SSIM, and the report still shows them under that name."""
    path = shutil.copytree(full, tmp_path / "older")
    pd.read_csv(path / "defenses.csv").drop(columns=["leakage", "leakage_metric"]).to_csv(path / "defenses.csv",
                                                                                        index=False)
    pd.read_csv(path / "summary.csv").drop(columns=["leakage_metric"]).to_csv(path / "summary.csv", index=False)
    build_report(path)
    rows = _tables(_parse(path / "report.html"))["Accuracy cost against leakage reduction"]
    assert {r["SSIM"] for r in rows} == {"0.5", "0.3", "0.45", "0.2", "0.4"} and "SSIM reduction" in rows[0]
    assert "max leakage (SSIM)" in (path / "report.md").read_text()


# command line ----------------------------------------------------------------------------------------
def test_cli_collects_runs_then_rebuilds_the_eval_directory(runs, tmp_path, monkeypatch):
    out = tmp_path / "cli"
    result = CliRunner().invoke(cli, ["-q", "report", *map(str, runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.html'}" in result.output
    assert {"eval.json", "plans.csv", "report.html", "report.md"} <= {p.name for p in out.iterdir()}
    (out / "report.html").unlink()
    result = CliRunner().invoke(cli, ["-q", "report", str(out)])
    assert result.exit_code == 0, result.output
    assert "Reconstructions" in (out / "report.html").read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["-q", "report", str(runs[0])])
    assert result.exit_code == 0, result.output
    [made] = (tmp_path / "reports").glob("report-*")
    assert (made / "report.html").is_file()
    assert "Examples:" in CliRunner().invoke(cli, ["report", "--help"]).output


@pytest.mark.parametrize("case", ["missing", "neither", "mixed", "two-evals", "taken", "out-with-eval", "damaged",
                                  "unfinished", "same-name"])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(case, runs, collected, tmp_path):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    if case in ("damaged", "unfinished"):
        shutil.copytree(runs[1], bad)
        if case == "damaged":
            (bad / "plan.json").write_text("{not json")
        else:
            manifest = json.loads((bad / "manifest.json").read_text())
            (bad / "manifest.json").write_text(json.dumps({**manifest, "status": "failed"}))
    if case == "same-name":
        shutil.copytree(runs[0], tmp_path / "again" / runs[0].name)
    args = {
        "missing": [str(tmp_path / "nope"), "--out", str(out)],
        "neither": [str(empty), "--out", str(out)],
        "mixed": [str(collected), str(runs[0])],
        "two-evals": [str(collected), str(collected)],
        "taken": [str(runs[0]), "--out", str(runs[1] / "audit")],
        "out-with-eval": [str(collected), "--out", str(out)],
        "damaged": [str(runs[0]), str(bad), "--out", str(out)],
        "unfinished": [str(runs[0]), str(bad), "--out", str(out)],
        "same-name": [str(runs[0]), str(tmp_path / "again" / runs[0].name), "--out", str(out)],
    }[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["report", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    assert ("DIR" in lines[0]) or ("--out" in lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary directory
