"""``hasfl-sec sweep``: a grid over config axes as the cells of one study, one tidy table, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from hasfl_sec import load_config
from hasfl_sec.cli.app import cli
from hasfl_sec.cli.eval import EVAL_DEFAULTS
from hasfl_sec.evaluation import ExecutorConfig
from hasfl_sec.evaluation.study import Grid, grid_points, load_grid, run_sweep

TINY = ["train.rounds=5", "fleet.num_devices=4", "data.image_size=8", "optimizer.pilot_rounds=80",
        "optimizer.target_accuracy=0.4", "optimizer.warmup_rounds=2", "optimizer.probe_size=32", "train.eval_every=1"]
GRID = """\
name: tiny-study
set: [fleet.num_devices=4]
axes:
  fleet.heterogeneity: [low, high]
  data.alpha: [0.5, 1.0]
eval:
  seeds: [0]
  baselines: []
  strategies: [hasfl, sfl]
  budgets: []
  defenses: []
  attacks: [label-direction]
  images: 2
  active: {attack: null, honest: false}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "grid.yaml").write_text(GRID)
    args = ["sweep", str(tmp / "grid.yaml"), *[a for o in TINY for a in ("--set", o)], "--out", str(tmp / "study"),
            "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return tmp, args


def test_a_sweep_writes_one_tidy_table_and_a_report_per_point(study) -> None:
    tmp, _ = study
    out = tmp / "study"
    points = pd.read_csv(out / "points.csv")
    assert list(points["fleet.heterogeneity"]) == ["low", "low", "high", "high"]
    assert list(points["data.alpha"]) == [0.5, 1.0, 0.5, 1.0]
    assert points["finished"].all() and (points["cells"] == 2).all()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[:3]) == ["point", "fleet.heterogeneity", "data.alpha"]
    assert len(summary) == 8 and set(summary["plan"]) == {"hasfl", "sfl"}
    for point in points["point"]:
        assert (out / "points" / point / "report.html").is_file()
        assert (out / "points" / point / "runs" / "hasfl.seed0" / "cell.json").is_file()
    for point, alpha, level in zip(points["point"], points["data.alpha"], points["fleet.heterogeneity"]):
        config = json.loads((out / "points" / point / "eval.json").read_text())["config"]
        assert config["data"]["alpha"] == alpha and config["fleet"]["heterogeneity"] == level
    assert "Summary per point and plan" in (out / "report.md").read_text()


def test_a_sweep_run_again_reuses_every_finished_cell(study) -> None:
    tmp, _ = study
    grid = load_grid(tmp / "grid.yaml")
    before = pd.read_csv(tmp / "study" / "summary.csv")
    config = load_config(overrides=[*EVAL_DEFAULTS, *TINY, "fleet.num_devices=4"])  # what the command built
    result = run_sweep(config, grid, out=tmp / "study",
                       overwrite=True, executor=ExecutorConfig(workers=1))
    assert result.computed == [] and len(result.reused) == 8
    pd.testing.assert_frame_equal(before, pd.read_csv(tmp / "study" / "summary.csv"))


def test_grid_points_are_the_product_of_the_axes() -> None:
    grid = Grid(axes={"seed": [0, 1, 2], "model.name": ["hecnn"], "plan.cut": [1, 2]})
    points = grid_points(load_config(), grid)
    assert len(points) == 6 and len({p for p, _, _ in points}) == 6
    assert [(c.seed, c.plan.cut) for _, _, c in points] == [(s, k) for s in (0, 1, 2) for k in (1, 2)]
    # Strings YAML would read as something else stay strings; lists stay lists.
    odd = grid_points(load_config(), Grid(axes={"name": ["yes", "null", "1e3"], "privacy.budget": [[20, 30]]}))
    assert [c.name for _, _, c in odd] == ["yes", "null", "1e3"]
    assert all(c.privacy.budget == [20.0, 30.0] for _, _, c in odd)


@pytest.mark.parametrize("text, field", [
    ("axes: {data.alpha: [1]}\nextra: 1\n", "GRID"),
    ("axes: {data.alpha: []}\n", "grid.axes.data.alpha"),
    ("axes: {model.name: [nope]}\n", "model.name"),
    ("axes: {data.alpha: [1]}\neval: {budgets: [abc]}\n", "grid.eval"),
    ("name: ../x\naxes: {data.alpha: [1]}\n", "grid.name"),
    ("axes: {seed: [0, 1]}\n", "eval.seeds"),  # seeds are every point's, not an axis
])
def test_bad_grids_fail_before_anything_is_written(tmp_path: Path, text: str, field: str) -> None:
    (tmp_path / "grid.yaml").write_text(text)
    result = CliRunner().invoke(cli, ["sweep", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and field in result.output, result.output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_a_grown_grid_keeps_its_points_and_computes_only_the_new_ones(study, tmp_path: Path) -> None:
    import shutil

    tmp, _ = study
    out = shutil.copytree(tmp / "study", tmp_path / "study")
    grid = load_grid(tmp / "grid.yaml")
    grid.axes["data.alpha"] = [0.5, 1.0, 2.0]
    config = load_config(overrides=[*EVAL_DEFAULTS, *TINY, "fleet.num_devices=4"])
    result = run_sweep(config, grid, out=out, overwrite=True,
                       executor=ExecutorConfig(workers=1))
    assert len(result.reused) == 8 and sorted(c.split("/")[1] for c in result.computed) == [
        "hasfl.seed0", "hasfl.seed0", "sfl.seed0", "sfl.seed0"]
    assert all("alpha=2" in c for c in result.computed) and len(result.points) == 6
