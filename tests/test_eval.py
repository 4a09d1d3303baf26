"""``hasfl-sec eval``: a tiny evaluation writes every table, figure and report file; bad settings
fail before anything is written."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from hasfl_sec.cli.app import cli
from hasfl_sec.errors import ConfigError
from hasfl_sec.evaluation import DefenseSweep, build_arms, load_settings
from hasfl_sec.evaluation.aggregate import class_table, comparisons, pareto_over_seeds
from hasfl_sec.evaluation.tables import device_leakage, representatives

TINY = ["train.rounds=12", "fleet.num_devices=4", "data.image_size=8", "optimizer.pilot_rounds=60",
        "optimizer.target_accuracy=0.5",
        "optimizer.warmup_rounds=2", "optimizer.probe_size=32", "train.eval_every=1"]
TINY_ARGS = [a for o in TINY for a in ("--set", o)]
LIGHT = ["--images", "2", "--attacks", "rmle,label-direction", "--threads", "1", "--no-progress"]


class _Tags(HTMLParser):
    """Counts unclosed tags (void elements excluded) and data-URI images."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.mismatched = 0
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img" and (dict(attrs).get("src") or "").startswith("data:image/png;base64,"):
            self.images += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """``<img ... />``: counted, never pushed."""
        stack = list(self.stack)
        self.handle_starttag(tag, attrs)
        self.stack = stack

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.mismatched += 1


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("eval") / "tiny"
    settings = tmp_path_factory.mktemp("cfg") / "eval.yaml"
    settings.write_text(
        "attack_params: {rmle: {steps: 10}}\n"
        "defenses:\n  - {defense: noise, param: sigma, values: [1.0]}\n"
        "active: {defenses: true, measure_every: 4}\n"
    )
    result = CliRunner().invoke(cli, ["eval", *TINY_ARGS, *LIGHT, "--eval-config", str(settings), "--budgets", "20",
                                      "--seeds", "0,1", "--baselines", "random", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_eval_trains_the_malicious_server_arms_and_reports_them(tiny_eval):
    out, _ = tiny_eval
    active = pd.read_csv(out / "active.csv")
    assert set(active["plan"]) == {"fsha-hasfl", "fsha-hasfl-noise-sigma=1"} and set(active["seed"]) == {0, 1}
    assert sorted(active["round"].unique()) == [4, 8, 12]
    plans = pd.read_csv(out / "plans.csv")  # the attacked devices: one per cut and class of each seed's plan
    hasfl = plans[(plans["plan"] == "hasfl") & (plans["seed"] == 0)]
    attacked = active[(active["plan"] == "fsha-hasfl") & (active["seed"] == 0)]
    assert attacked["device"].nunique() == len(hasfl.groupby(["cut", "device_class"]))
    hijack = pd.read_csv(out / "hijack.csv")
    assert set(hijack["plan"]) == set(active["plan"]) and (hijack["seeds"] <= 2).all()
    assert hijack.loc[hijack["plan"] != "fsha-hasfl", "mse_change"].notna().any()
    detectors = pd.read_csv(out / "detectors.csv")
    honest = detectors[detectors["plan"] == "honest-hasfl"]
    assert set(honest["detector"]) == {"splitguard", "splitout"} and (honest["honest_runs"] == 4 * 2).all()
    assert (honest["hijacked_runs"] == 0).all()
    comp = pd.read_csv(out / "comparisons.csv")
    assert set(comp.loc[comp["comparison"] == "hijack", "metric"]) == {"hijack_mse", "hijack_ssim",
                                                                       "final_accuracy_points"}
    summary = pd.read_csv(out / "summary.csv")
    assert not summary["plan"].isin(active["plan"]).any()  # an attacked training is not a plan to compare
    report = (out / "report.md").read_text()
    section = report[report.index("## A malicious edge server"):]
    assert "edge-server (active)" in section and "figures/hijack.png" in section
    assert "false alarms (honest devices)" in section and "hijack_fsha-hasfl.png" in section
    assert (out / "figures" / "hijack.png").is_file() and (out / "runs" / "fsha-hasfl.seed0" / "active").is_dir()


def test_eval_writes_every_table_figure_and_report(tiny_eval):
    out, output = tiny_eval
    assert "report:" in output
    for name in ("comparisons", "plans", "classes", "summary", "rounds", "leakage", "defenses", "pareto"):
        frame = pd.read_csv(out / f"{name}.csv")
        assert not frame.empty, name
    summary = pd.read_csv(out / "summary.csv")
    arms = ["hasfl", "sfl", "random", "private-20", "noise-sigma=1"]
    assert list(summary["plan"]) == arms * 2 and list(summary["seed"]) == [0] * 5 + [1] * 5
    assert summary["final_accuracy"].between(0, 1).all() and (summary["rounds"] == 12).all()
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds.groupby(["plan", "seed"]).size().eq(12).all() and len(rounds) == 12 * 10
    # one fleet for both seeds (the default), different training draws
    plans = pd.read_csv(out / "plans.csv")
    flops = plans[plans["plan"] == "sfl"].pivot(index="device", columns="seed", values="compute_flops")
    assert (flops[0] == flops[1]).all()
    assert not rounds[rounds["seed"] == 0]["train_loss"].equals(rounds[rounds["seed"] == 1]["train_loss"])
    comp = pd.read_csv(out / "comparisons.csv")
    assert {("speed", "sfl"), ("speed", "random"), ("privacy", "hasfl"), ("defense", "sfl")} <= set(
        zip(comp["comparison"], comp["reference"]))
    assert (comp["pairs"] <= 2).all() and comp["method"].str.contains("Student t").all()
    # why hasfl took its cuts: each class at its own cut is the plan itself (ratio 1), at every seed
    cuts = pd.read_csv(out / "cuts.csv")
    assert set(cuts["plan"]) == {"hasfl"} and set(cuts["seed"]) == {0, 1}
    assert cuts.loc[cuts["chosen"], "time_ratio"].eq(1.0).all()
    assert (cuts["time_ratio"] == cuts["rounds_ratio"] * cuts["round_s_ratio"]).all() or \
        ((cuts["time_ratio"] - cuts["rounds_ratio"] * cuts["round_s_ratio"]).abs() < 1e-9).all()
    plans = pd.read_csv(out / "plans.csv")
    private = plans[plans["plan"] == "private-20"]
    assert (private["noise_sigma"] > 0).all() and (private["predicted_leakage"] <= 20).all()
    leak = pd.read_csv(out / "leakage.csv")
    assert leak.loc[leak["plan"] == "private-20", "defense"].str.startswith("plan-noise").all()
    meta = json.loads((out / "eval.json").read_text())
    assert meta["settings"]["defenses"][0]["defense"] == "noise" and meta["wall_time_s"] > 0
    assert any(note.startswith("Label-only reference: the class-mean image") for note in meta["notes"])
    for run, seed in zip(summary["plan"], summary["seed"]):
        audited = (out / "runs" / f"{run}.seed{seed}" / "audit" / "leakage.csv").is_file()
        assert audited == (run != "random"), run  # baselines are trained, not audited, by default
    md = (out / "report.md").read_text()
    assert "Headline" in md and "training seeds" in md and "Plans per device class" in md
    assert "Why plan hasfl took its cuts" in md  # the explanation of its cuts, whether they differ or not
    html = (out / "report.html").read_text()
    parser = _Tags()
    parser.feed(html)
    assert parser.mismatched == 0 and parser.stack == []
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures and parser.images >= len(figures)
    md = (out / "report.md").read_text()
    assert "Label-only reference" in md and "Label-only reference" in html
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (out / link).is_file(), link
    assert not list(out.parent.glob(".tiny*")), "the work directory must be renamed away"


def test_defense_rows_name_the_defense_and_the_reference(tiny_eval):
    out, _ = tiny_eval
    d = pd.read_csv(out / "defenses.csv")
    assert set(d["defense"]) == {"none", "noise"}
    assert (d.loc[d["defense"] == "none", "accuracy_drop"] == 0).all()
    leak = pd.read_csv(out / "leakage.csv")
    assert leak.loc[leak["plan"] == "noise-sigma=1", "defense"].str.startswith("noise(").all()


def test_report_rebuild_refuses_a_hand_edited_non_number(tiny_eval, tmp_path):
    import shutil

    out, _ = tiny_eval
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("runs"))
    summary = pd.read_csv(copy / "summary.csv")
    summary["final_accuracy"] = summary["final_accuracy"].astype(object)
    summary.loc[0, "final_accuracy"] = "abc"
    summary.to_csv(copy / "summary.csv", index=False)
    before = (copy / "report.html").read_bytes()
    result = CliRunner().invoke(cli, ["report", str(copy)])
    assert result.exit_code == 2 and "final_accuracy" in result.output and "Traceback" not in result.output
    assert (copy / "report.html").read_bytes() == before


def test_bad_settings_fail_before_anything_is_written(tmp_path):
    runner = CliRunner()
    cases = [
        (["--strategies", "hasfl,nope"], "eval.strategies"),
        (["--attacks", "nope"], "attack"),
        (["--images", "0"], "eval.images"),
        (["--budgets", "a,b"], "--budgets"),
        (["--set", "defense.noise.sigma=-1", "--set", "defense.use=[noise]"], "defense.noise.sigma"),
        (["--threads", "0"], "--threads"),
    ]
    for args, field in cases:
        out = tmp_path / "x"
        result = runner.invoke(cli, ["eval", *TINY_ARGS, "--no-progress", *args, "--out", str(out)])
        assert result.exit_code == 2, (args, result.output)
        assert field in result.output and "Traceback" not in result.output
        assert not out.exists() and not list(tmp_path.glob(".x*"))


def test_unreachable_target_leaves_nothing_behind(tmp_path):
    out = tmp_path / "x"
    result = CliRunner().invoke(cli, ["eval", *TINY_ARGS, *LIGHT, "--set", "optimizer.target_accuracy=0.99",
                                      "--out", str(out)])
    assert result.exit_code == 2 and "optimizer.target_accuracy" in result.output
    assert not out.exists() and not list(tmp_path.glob(".x*"))


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("results")
    result = CliRunner().invoke(cli, ["eval", *TINY_ARGS, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (tmp_path / "x" / "keep.txt").read_text() == "results"


def test_arms_and_sweep_overrides():
    s = load_settings(budgets=[20.0], defenses=[{"defense": "noise", "param": "sigma", "values": [0.5, 1]}],
                      strategies=["hasfl"], baselines=[])
    arms = build_arms(s)
    assert [a.name for a in arms] == ["hasfl", "sfl", "private-20", "noise-sigma=0.5", "noise-sigma=1",
                                      "fsha-hasfl", "honest-hasfl"]
    assert "defense.noise.sigma=0.5" in arms[3].overrides and arms[3].setting == "sigma=0.5"
    with pytest.raises(ConfigError, match="eval.defenses.noise"):
        load_settings(defenses=[DefenseSweep("noise", "nope", [1.0])])
    with pytest.raises(ConfigError, match="eval.defenses"):
        load_settings(defenses=[{"defense": "noise", "param": "sigma"}])


def test_table_helpers():
    assert representatives([1, 2, 1, 2], [0.0, 0.0, 0.0, 0.5]) == {0: 0, 1: 1, 2: 0, 3: 3}
    # a device's leakage is its representative's, at its own cut; simulated rows at other cuts
    # (labelled device 0) and all-NaN scores do not count
    leak = pd.DataFrame({"device": [0, 0, 1, 1, 0], "cut": [2, 2, 3, 3, 6],
                         "attack": ["rmle", "inv", "rmle", "inv", "rmle"],
                         "metric": ["ssim"] * 5, "value": [0.4, 0.9, 0.2, float("nan"), 0.99]})
    reps = representatives([2, 3, 2], [0.0, 0.0, 0.0])
    assert device_leakage(leak, reps, [2, 3, 2], metric="ssim") == {0: (0.9, "inv"), 1: (0.2, "rmle"), 2: (0.9, "inv")}
    # two seeds; c is dominated by b (more leakage, slower); a and b trade leakage against time;
    # d is fastest and least leaky on average but missed the target at seed 1: never on the front
    names = ["a", "b", "c", "d"]
    plans = pd.DataFrame({"plan": names * 2, "seed": [0] * 4 + [1] * 4, "device": 0, "device_class": "slow",
                          "batch": 8, "cut": 2, "noise_sigma": 0.0, "compute_s": 0.5, "comm_s": 0.25,
                          "leakage": [0.9, 0.5, 0.6, 0.1, 0.8, 0.5, 0.7, 0.1]})
    summary = pd.DataFrame({"plan": names * 2, "seed": [0] * 4 + [1] * 4, "kind": "plan", "final_accuracy": 0.9,
                            "predicted_time_to_target_s": 1.0,
                            "measured_time_to_target_s": [1.0, 2.0, 3.0, 0.5, 1.2, 2.2, 3.1, float("nan")]})
    front = pareto_over_seeds(plans, summary).set_index("plan")
    assert front["on_front"].to_dict() == {"a": True, "b": True, "c": False, "d": False}
    assert front.loc["a", "leakage"] == pytest.approx(0.85) and front.loc["a", "seeds"] == 2
    assert front.loc["a", "leakage_low"] < 0.85 < front.loc["a", "leakage_high"]
    classes = class_table(plans).set_index("plan")
    assert classes.loc["a", "cuts"] == "2×1" and classes.loc["a", "batch"] == 8


def test_comparisons_are_paired_and_flag_only_real_differences():
    # hasfl is 4x faster than sfl at every seed (a real speed-up); random is as fast as hasfl on
    # average but scatters around it (not real); seed 2 of random missed the target (2 pairs)
    summary = pd.DataFrame({
        "plan": ["hasfl", "sfl", "random"] * 3, "seed": [0, 0, 0, 1, 1, 1, 2, 2, 2],
        "kind": ["plan", "plan", "baseline"] * 3,
        "final_accuracy": [0.9, 0.9, 0.9] * 3, "max_leakage": [0.5] * 9, "sim_time_s": [10.0] * 9,
        "measured_time_to_target_s": [1.0, 4.0, 2.0, 2.0, 8.1, 1.0, 1.5, 5.9, float("nan")]})
    rounds = pd.DataFrame({"plan": summary["plan"], "seed": summary["seed"], "sim_time_s": 5.0, "test_accuracy": 0.8})
    comp = comparisons(summary, rounds, 6.0).set_index(["reference", "metric"])
    fast = comp.loc[("sfl", "speedup_time_to_target")]
    assert fast["estimate"] == pytest.approx(4.0, rel=0.02) and fast["significant"] and fast["pairs"] == 3
    scattered = comp.loc[("random", "speedup_time_to_target")]
    assert scattered["pairs"] == 2 and not scattered["significant"]
    assert comp.loc[("sfl", "accuracy_at_budget_points"), "estimate"] == pytest.approx(0.0)


@pytest.mark.parametrize("dataset", ["lfw", "imagefolder"])
def test_bundled_faces_and_a_plain_image_folder_run_a_tiny_evaluation(tmp_path, dataset):
    from PIL import Image

    extra = ["--dataset", dataset]
    if dataset == "imagefolder":  # torchvision's convention: one folder per class, split here
        rng = np.random.default_rng(0)
        for c in ("a", "b"):
            (tmp_path / "img" / c).mkdir(parents=True)
            for k in range(25):
                Image.fromarray(rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)).save(tmp_path / "img" / c / f"{k}.png")
        extra += ["--data-root", str(tmp_path / "img")]
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["eval", *TINY_ARGS, *extra, "--images", "2", "--attacks", "label-direction",
                                      "--no-progress", "--threads", "1", "--seeds", "0,1", "--baselines", "",
                                      "--budgets", "", "--no-defenses", "--no-active", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and json.loads((out / "eval.json").read_text())["config"]["data"]["dataset"] == dataset
