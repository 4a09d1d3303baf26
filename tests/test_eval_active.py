"""The malicious edge server in ``hasfl-sec eval``: its arms, cells, tables over seeds and report section."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest

from hasfl_sec.config import load_config
from hasfl_sec.errors import ConfigError
from hasfl_sec.evaluation import build_arms, load_settings
from hasfl_sec.evaluation.cells import make_cell, run_cell
from hasfl_sec.evaluation.hijack_tables import detector_table, hijack_comparisons, hijack_table, wilson
from hasfl_sec.evaluation.run import arm_configs, plan_point

TINY = ["train.rounds=8", "fleet.num_devices=4", "data.image_size=8", "train.eval_every=4"]


def _active(settings) -> list:
    return [a for a in build_arms(settings) if a.kind == "active"]


def test_default_arms_attack_the_hasfl_plan_and_keep_an_honest_server_for_false_alarms() -> None:
    arms = _active(load_settings())
    assert [a.name for a in arms] == ["fsha-hasfl", "honest-hasfl"]
    attacked, honest = arms
    assert attacked.overrides == ["plan.strategy=hasfl"] and not attacked.audited
    assert attacked.hijack().attack == "fsha" and attacked.active["choose"] == "representatives"
    assert attacked.hijack().detectors == ["splitguard", "splitout"]
    assert honest.hijack().attack is None and honest.hijack().detectors == ["splitguard", "splitout"]


def test_full_attacks_every_defense_setting_and_the_file_keeps_it() -> None:
    full = _active(load_settings(full=True))
    sweeps = [a for a in build_arms(load_settings(full=True)) if a.kind == "defense"]
    defended = [a for a in full if a.defense != "none"]
    assert len(defended) == len(sweeps)
    for arm, sweep in zip(defended, sweeps):
        assert arm.overrides == ["plan.strategy=hasfl", *sweep.overrides[1:]]
        assert (arm.defense, arm.param, arm.strength) == (sweep.defense, sweep.param, sweep.strength)


def test_settings_turn_the_arms_off_or_name_the_devices(tmp_path: Path) -> None:
    assert _active(load_settings(active={"attack": None, "honest": False})) == []
    assert [a.name for a in _active(load_settings(active={"detectors": []}))] == ["fsha-hasfl"]
    assert [a.name for a in _active(load_settings(active={"attack": None}))] == ["honest-hasfl"]
    arm = _active(load_settings(active={"devices": [0, 2], "strategy": "sfl"}))[0]
    assert arm.name == "fsha-sfl" and arm.hijack().params["devices"] == [0, 2] and arm.active["choose"] == "list"
    path = tmp_path / "eval.yaml"
    path.write_text("active: {measure_every: 3}\n")
    merged = load_settings(path, full=True).active
    assert merged.defenses and merged.measure_every == 3  # --full's choice, then the file's


@pytest.mark.parametrize("active,field", [
    ({"attack": "nope"}, "eval.active.attack"),
    ({"strategy": "nope"}, "eval.active.strategy"),
    ({"devices": "some"}, "eval.active.devices"),
    ({"devices": [1, 1]}, "eval.active.devices"),
    ({"detectors": ["splitguard", "splitguard"]}, "eval.active.detectors"),
    ({"attack_params": {"other": {}}}, "eval.active.attack_params.other"),
    ({"attack_params": {"fsha": {"devices": [0]}}}, "eval.active.attack_params.fsha.devices"),
    ({"attack_params": {"fsha": {"lr_pilot": -1}}}, "eval.active.attack_params.fsha.lr_pilot"),
    ({"attack_params": {"fsha": {"public_samples": 1}}}, "eval.active.attack_params.fsha.public_samples"),
    ({"detector_params": {"splitout": {"window": 0}}}, "eval.active.detector_params.splitout"),
    ({"measure_every": 0}, "eval.active.measure_every"),
])
def test_bad_active_settings_name_their_field(active: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(active=active)
    assert err.value.field.startswith(field), err.value


def test_settings_that_need_the_config_are_checked_before_any_cell() -> None:
    config = load_config(overrides=TINY)
    late = {"attack_params": {"fsha": {"start_round": 9}}}
    for active, field in (({"devices": [9]}, "eval.active.devices"),
                          (late, "eval.active.attack_params.fsha.start_round")):
        settings = load_settings(strategies=["sfl"], baselines=[], budgets=[], defenses=[], attacks=["rmle"],
                                 active={**active, "strategy": "sfl"})
        with pytest.raises(ConfigError) as err:
            plan_point(config, settings)
        assert err.value.field == field


def test_a_changed_active_setting_changes_exactly_its_cells_keys() -> None:
    config = load_config(overrides=TINY)

    def keys(active: dict, attacks: tuple[str, ...] = ("rmle",)) -> dict[str, str]:
        settings = load_settings(strategies=["sfl"], baselines=[], budgets=[], defenses=[], attacks=list(attacks),
                                 seeds=[0], active={"strategy": "sfl", **active})
        arms = build_arms(settings)
        configs = arm_configs(config, arms, [0])
        return {a.name: make_cell(a, 0, configs[f"{a.name}.seed0"], settings.audit_config(), 1, None).key
                for a in arms}

    base, other = keys({}), keys({"attack_params": {"fsha": {"reply_scale": 0.5}}})
    assert base["sfl"] == other["sfl"] and base["honest-sfl"] == other["honest-sfl"]
    assert base["fsha-sfl"] != other["fsha-sfl"]
    audit = keys({}, ("rmle", "label-direction"))  # the passive audit: the active cells never run it
    assert audit["sfl"] != base["sfl"] and audit["fsha-sfl"] == base["fsha-sfl"]
    with pytest.raises(ConfigError, match="eval.strategies"):
        load_settings(strategies=[], baselines=[], budgets=[], defenses=[])


def test_an_active_cell_is_deterministic_and_scores_only_hijacked_devices(tmp_path: Path) -> None:
    config = load_config(overrides=[*TINY, "plan.strategy=sfl", "seed=3"])
    settings = load_settings(strategies=["sfl"], baselines=[], budgets=[], defenses=[], attacks=["rmle"], seeds=[3],
                             active={"strategy": "sfl", "devices": [1, 3], "measure_every": 4})
    arm = _active(settings)[0]
    cell = make_cell(arm, 3, config, settings.audit_config(), 1, None)
    first, second = (run_cell(cell, tmp_path / name) for name in ("a", "b"))
    assert first.ok, first.reason
    active, detections = first.frame("active"), first.frame("detections")
    assert sorted(active["device"].unique()) == [1, 3] and sorted(active["round"].unique()) == [4, 8]
    assert (active["plan"] == "fsha-sfl").all() and (active["seed"] == 3).all()
    assert len(detections) == 2 * 4 and set(detections.loc[detections["hijacked"], "device"]) == {1, 3}
    assert (tmp_path / "a" / "active" / "metrics.csv").is_file()
    assert first.active == second.active and first.detections == second.detections
    assert first.hijack["targets"] == [1, 3] and 0.0 <= first.hijack["final_accuracy"] <= 1.0


def _rows(plan: str, defense: str, seed: int, mses: list[float], baseline: float = 0.05) -> list[dict]:
    return [{"plan": plan, "seed": seed, "attack": "fsha", "defense": defense, "setting": "", "round": 10 * (k + 1),
             "device": 0, "device_class": "slow", "cut": 2, "images": 8, "mse": m, "psnr": 10.0, "ssim": 0.5,
             "baseline_mse": baseline, "baseline_ssim": 0.1} for k, m in enumerate(mses)]


def test_hijack_table_takes_the_last_round_and_pairs_each_defense_with_the_undefended_arm() -> None:
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.001), (2, -0.001)):
        rows += _rows("fsha", "none", seed, [0.08, 0.04, 0.01 + shift])
        rows += _rows("fsha-noise", "noise", seed, [0.09, 0.07, 0.03 + shift / 2])  # beats the guess later
    active = pd.DataFrame(rows)
    accuracy = pd.DataFrame([{"plan": p, "seed": s, "final_accuracy": 0.8} for p in ("fsha", "fsha-noise")
                             for s in range(3)])
    table = hijack_table(active, accuracy).set_index("plan")
    assert table.loc["fsha", "mse"] == pytest.approx(0.01) and table.loc["fsha", "round"] == 30
    assert table.loc["fsha", "below_guess_round"] == 20 and table.loc["fsha-noise", "below_guess_round"] == 30
    assert table.loc["fsha-noise", "mse_change"] == pytest.approx(0.02)
    assert table.loc["fsha-noise", "mse_change_significant"] and table.loc["fsha-noise", "mse_change_n"] == 3
    assert math.isnan(table.loc["fsha", "mse_change"]) and table.loc["fsha", "accuracy"] == pytest.approx(0.8)
    (mse_row, ssim_row) = hijack_comparisons(active)
    assert mse_row[:3] == ("fsha-noise", "fsha", "hijack_mse") and mse_row[3].mean == pytest.approx(0.02)
    assert ssim_row[3].mean == pytest.approx(0.0)
    # the hijacking's cost in accuracy: the undefended attacked arm against its plan trained honestly
    runs = accuracy.assign(strategy="hasfl", attack="fsha")
    summary = pd.DataFrame({"plan": ["hasfl"] * 3, "seed": [0, 1, 2], "final_accuracy": [0.9, 0.85, 0.88]})
    cost = [r for r in hijack_comparisons(active, runs, summary) if r[2] == "final_accuracy_points"]
    assert [r[:2] for r in cost] == [("fsha", "hasfl")] and cost[0][3].mean == pytest.approx(-7.666666, abs=1e-4)
    # with the honest-server arm (same plan, same detectors) that is the control, not the plain plan
    honest = pd.DataFrame({"plan": ["honest"] * 3, "seed": [0, 1, 2], "strategy": ["hasfl"] * 3,
                           "attack": ["none"] * 3, "final_accuracy": [0.82, 0.81, 0.8]})
    cost = [r for r in hijack_comparisons(active, pd.concat([runs, honest]), summary)
            if r[2] == "final_accuracy_points"]
    assert [r[:2] for r in cost] == [("fsha", "honest")] and cost[0][3].mean == pytest.approx(-1.0, abs=1e-6)


def test_detector_table_counts_catches_and_false_alarms_separately() -> None:
    rows = []
    for seed in range(2):
        rows.append({"plan": "fsha", "seed": seed, "defense": "none", "setting": "", "detector": "splitguard",
                     "device": 0, "device_class": "slow", "cut": 2, "hijacked": True,
                     "detected_round": 100 + 10 * seed, "checks": 9, "mse_at_detection": 0.02,
                     "ssim_at_detection": 0.7})
        rows.append({"plan": "fsha", "seed": seed, "defense": "none", "setting": "", "detector": "splitguard",
                     "device": 1, "device_class": "fast", "cut": 3, "hijacked": False,
                     "detected_round": 50 if seed == 0 else None, "checks": 9, "mse_at_detection": None,
                     "ssim_at_detection": None})
    table = detector_table(pd.DataFrame(rows)).iloc[0]
    assert (table["hijacked_runs"], table["caught"], table["honest_runs"], table["false_alarms"]) == (2, 2, 2, 1)
    assert table["detection_round"] == pytest.approx(105) and table["detection_round_n"] == 2
    assert table["mse_at_detection"] == pytest.approx(0.02)
    assert table["false_alarm_rate"] == pytest.approx(0.5)


def test_wilson_interval_matches_the_closed_form() -> None:
    p, low, high = wilson(3, 10)
    z = 1.959963984540054
    centre = (0.3 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * math.sqrt(0.3 * 0.7 / 10 + z * z / 400)
    assert p == 0.3 and low == pytest.approx(centre - half) and high == pytest.approx(centre + half)
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_arms_are_plain_records_saved_in_eval_json() -> None:
    arm = _active(load_settings())[0]
    assert dataclasses.asdict(arm)["active"]["attack"] == "fsha"


def test_the_curve_leaves_out_rounds_measured_at_some_seeds_only() -> None:
    from hasfl_sec.report.figures import _round_curve

    rows = _rows("fsha", "none", 0, [0.08, 0.04]) + _rows("fsha", "none", 1, [0.06, 0.02])
    rows.append({**rows[0], "round": 13, "mse": 0.5})  # a detector's alarm at seed 0 only
    rounds, mean, low, high = _round_curve(pd.DataFrame(rows))
    assert list(rounds) == [10.0, 20.0] and mean == pytest.approx([0.07, 0.03]) and (low < mean).all()
