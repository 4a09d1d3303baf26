"""Confidence intervals and paired comparisons (hasfl_sec.stats) against hand-computed cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hasfl_sec.stats import mean_ci, paired_difference, paired_ratio, summarize


def test_mean_ci_matches_hand_computed_student_t() -> None:
    # 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), se = s / 2, t_{0.975, 3} = 3.182446
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * math.sqrt(5.0 / 3.0) / 2.0
    assert ci.n == 4
    assert ci.mean == pytest.approx(2.5)
    assert ci.low == pytest.approx(2.5 - half, rel=1e-9)
    assert ci.high == pytest.approx(2.5 + half, rel=1e-9)
    assert ci.half_width == pytest.approx(2.05426, abs=1e-5)


def test_mean_ci_leaves_out_missing_values_and_has_no_interval_for_one() -> None:
    ci = mean_ci([float("nan"), 3.0, float("inf")])
    assert (ci.n, ci.mean) == (1, 3.0)
    assert math.isnan(ci.low) and math.isnan(ci.high) and not ci.significant
    empty = mean_ci([])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_paired_ratio_is_a_geometric_mean_with_a_log_scale_interval() -> None:
    # ratios 2, 4, 4: geometric mean 32^(1/3); logs have s = 0.40018, t_{0.975, 2} = 4.302653
    ci = paired_ratio({0: 2.0, 1: 4.0, 2: 8.0}, {0: 1.0, 1: 1.0, 2: 2.0})
    assert ci.mean == pytest.approx(32 ** (1 / 3))
    logs = [math.log(2), math.log(4), math.log(4)]
    m = sum(logs) / 3
    s = math.sqrt(sum((x - m) ** 2 for x in logs) / 2)
    half = 4.302652729911275 * s / math.sqrt(3)
    assert ci.low == pytest.approx(math.exp(m - half), rel=1e-9)
    assert ci.high == pytest.approx(math.exp(m + half), rel=1e-9)
    assert ci.significant  # the interval (1.17, 8.58) excludes 1


def test_a_difference_whose_interval_holds_zero_is_not_flagged() -> None:
    flagged = paired_difference({0: 1.3, 1: 1.1, 2: 1.2}, {0: 1.0, 1: 0.9, 2: 1.0})
    assert flagged.significant and flagged.low > 0
    unsure = paired_difference({0: 2.0, 1: 0.0, 2: 1.5}, {0: 1.0, 1: 1.0, 2: 1.0})
    assert unsure.low < 0 < unsure.high and not unsure.significant


def test_pairs_use_only_seeds_both_arms_finished() -> None:
    ci = paired_difference({0: 1.0, 1: 5.0, 2: float("nan")}, {0: 0.5, 2: 1.0, 3: 2.0})
    assert ci.n == 1 and ci.mean == pytest.approx(0.5) and not ci.significant


def test_summarize_gives_mean_interval_count_and_joins_text() -> None:
    frame = pd.DataFrame({"plan": ["a", "a", "a", "b"], "x": [1.0, 2.0, 3.0, 7.0], "cut": ["2", "2", "3", "4"]})
    out = summarize(frame, ["plan"], ["x"], text=["cut"]).set_index("plan")
    assert out.loc["a", "x"] == pytest.approx(2.0)
    assert out.loc["a", "x_low"] == pytest.approx(2.0 - 4.302652729911275 / math.sqrt(3))
    assert out.loc["a", "seeds"] == 3 and out.loc["b", "x_n"] == 1
    assert out.loc["a", "cut"] == "2/3" and out.loc["b", "cut"] == "4"
