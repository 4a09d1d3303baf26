"""Privacy-constrained HASFL on the optimizer side (hasfl_sec.optimizer.privacy): numpy only.

The unconstrained problem must be exactly what it was before variance multipliers existed (golden
plans and times to target recorded from the code before the change, as float hex); constrained
plans must meet every budget, never get faster when a budget tightens, and match the exhaustive
oracle on small instances.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from test_optimizer import real_problem, synthetic_problem

from hasfl_sec.errors import ConfigError
from hasfl_sec.models import build_model, profile_model
from hasfl_sec.optimizer import PLANNERS, PlannerParams, Problem
from hasfl_sec.optimizer.privacy import constrain

# (batch sizes, cuts, time to target as float.hex()) of every planner, recorded before the
# optimizer knew variance multipliers: synthetic_problem(seed, n=4, c=4, b_max=12), b_max=12.
GOLDEN_SYNTHETIC = {
    0: {"hasfl": ((12, 12, 12, 12), (5, 5, 1, 1), "0x1.9b4826fff9a62p+6"),
        "sfl": ((12, 12, 12, 12), (1, 1, 1, 1), "0x1.a1e89a2c7e68ep+6"),
        "bs-only": ((12, 12, 12, 12), (1, 1, 1, 1), "0x1.a1e89a2c7e68ep+6"),
        "cut-only": ((12, 12, 12, 12), (5, 5, 1, 1), "0x1.9b4826fff9a62p+6"),
        "random": ((11, 12, 11, 9), (1, 2, 1, 1), "0x1.d24c7ac5cefd5p+9"),
        "oracle": ((12, 12, 12, 12), (5, 5, 1, 1), "0x1.9b4826fff9a62p+6")},
    1: {"hasfl": ((10, 12, 12, 12), (1, 1, 1, 1), "0x1.1d07ef1cfe794p+4"),
        "sfl": ((12, 12, 12, 12), (1, 1, 1, 1), "0x1.245253aad1461p+4"),
        "bs-only": ((10, 12, 12, 12), (1, 1, 1, 1), "0x1.1d07ef1cfe794p+4"),
        "cut-only": ((12, 12, 12, 12), (1, 1, 1, 1), "0x1.245253aad1461p+4"),
        "random": ((11, 12, 11, 9), (1, 2, 1, 1), "0x1.45c047de3b00bp+7"),
        "oracle": ((10, 12, 12, 12), (1, 1, 1, 1), "0x1.1d07ef1cfe794p+4")},
    2: {"hasfl": ((12, 12, 12, 12), (4, 4, 4, 4), "0x1.9a13d2fe1f4eep+6"),
        "sfl": ((12, 12, 12, 12), (1, 1, 1, 1), "0x1.606005b51a52bp+9"),
        "bs-only": ((12, 12, 12, 12), (1, 1, 1, 1), "0x1.606005b51a52bp+9"),
        "cut-only": ((12, 12, 12, 12), (4, 4, 4, 4), "0x1.9a13d2fe1f4eep+6"),
        "random": ((11, 12, 11, 9), (1, 2, 1, 1), "0x1.224a8eb132ad4p+10"),
        "oracle": ((12, 12, 12, 12), (4, 4, 4, 4), "0x1.9a13d2fe1f4eep+6")},
    3: {"hasfl": ((12, 12, 12, 12), (2, 2, 2, 2), "0x1.f6c0b400d9dfbp+6"),
        "sfl": ((12, 12, 12, 12), (2, 2, 2, 2), "0x1.f6c0b400d9dfbp+6"),
        "random": ((7, 6, 11, 7), (2, 2, 5, 3), "inf")},
}
# hasfl on real_problem(hecnn profile, n, interval=5 / 1) with the default PlannerParams.
GOLDEN_REAL = {
    (8, 5): ((64, 35, 57, 40, 64, 64, 31, 64), (6,) * 8, "0x1.3f7b2ba9a9d7cp-4"),
    (30, 1): ((46, 29, 50, 35, 42, 63, 27, 64, 64, 63, 64, 58, 61, 36, 53, 58, 64, 59, 57, 47, 64, 55, 64, 46, 28,
               32, 64, 59, 59, 60),
              (4, 4, 4, 4, 4, 4, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 2, 4, 4, 4, 4),
              "0x1.964ee93095058p-4"),
}
GRID = (0.0, 0.1, 0.3, 1.0, 3.0)


@pytest.fixture(scope="module")
def profile():
    return profile_model(build_model("hecnn", in_channels=1, num_classes=10, image_size=16))


def _hex(x: float) -> str:
    return "inf" if math.isinf(x) else float(x).hex()


def with_ones(problem: Problem) -> Problem:
    return dataclasses.replace(problem, variance_mult=np.ones(problem.a.shape))


# ----------------------------------------------------------------------------- unchanged when unconstrained
@pytest.mark.parametrize("seed", sorted(GOLDEN_SYNTHETIC))
def test_unconstrained_plans_are_bit_identical_to_before(seed):
    base = synthetic_problem(seed, n=4, c=4, b_max=12)
    for problem in (base, with_ones(base)):
        assert not problem.noisy and problem.privacy is None
        for name, (b, cuts, f) in GOLDEN_SYNTHETIC[seed].items():
            sol = PLANNERS.get(name)(problem, PlannerParams(b_max=12))
            assert (sol.batch_sizes, sol.cuts, _hex(sol.time_to_target_s)) == (b, cuts, f), name
            assert sol.noise_sigma is None and sol.to_plan().noise_sigma is None


@pytest.mark.parametrize("n, interval", sorted(GOLDEN_REAL))
def test_unconstrained_real_plans_are_bit_identical_to_before(profile, n, interval):
    problem, _, _ = real_problem(profile, n, interval=interval)
    b, cuts, f = GOLDEN_REAL[(n, interval)]
    sol = PLANNERS.get("hasfl")(with_ones(problem), PlannerParams())
    assert (sol.batch_sizes, sol.cuts, _hex(sol.time_to_target_s)) == (b, cuts, f)


# ----------------------------------------------------------------------------- constrained instances
def leakage_table(rng: np.random.Generator, c: int) -> np.ndarray:
    """dfil_psnr-like: a per-cut level minus 20 log10 of the noise (inf without noise)."""
    level = rng.uniform(10, 30, c)
    with np.errstate(divide="ignore"):
        return level[:, None] - 20 * np.log10(np.asarray(GRID))[None, :]


def constrained(seed: int, budget: np.ndarray | None = None, *, n: int = 4, c: int = 4, b_max: int = 12,
                slack: float | None = None) -> tuple[Problem, dict]:
    """A constrained synthetic problem (epsilon set above its own floor) and what built it."""
    rng = np.random.default_rng(1000 + seed)
    base = synthetic_problem(seed, n=n, c=c, b_max=b_max)
    leak = leakage_table(rng, c)
    rho = rng.uniform(0.2, 3.0, c)
    budget = rng.uniform(8, 26, n) if budget is None else budget
    spec = dict(leakage=leak, sigma_grid=GRID, budget=budget, multiplier=lambda j, r: 1.0 + rho[j] * r * r,
                rms=rng.uniform(0.5, 2.0, c), metric="dfil_psnr")
    loose = constrain(dataclasses.replace(base, epsilon=1e300), **spec)
    slack = 10 ** rng.uniform(-1.0, 0.5) if slack is None else slack
    return dataclasses.replace(loose, epsilon=loose.variance_drift_floor() * (1 + slack)), spec


def predicted_leakage(spec: dict, cuts_idx: np.ndarray, rel: np.ndarray) -> np.ndarray:
    grid = np.asarray(spec["sigma_grid"])
    return np.array([spec["leakage"][j, int(np.searchsorted(grid, r))] for j, r in zip(cuts_idx, rel)])


@pytest.mark.parametrize("seed", range(8))
def test_constrained_plans_meet_every_budget(seed):
    problem, spec = constrained(seed)
    for name in ("hasfl", "cut-only", "random", "oracle"):
        sol = PLANNERS.get(name)(problem, PlannerParams(b_max=12))
        j = problem.cut_index(sol.cuts)
        rel = np.asarray(sol.relative_sigma)
        leak = predicted_leakage(spec, j, rel)
        assert np.all(leak <= spec["budget"]), name
        np.testing.assert_allclose(sol.leakage, leak)
        np.testing.assert_allclose(sol.noise_sigma, rel * spec["rms"][j])
        # the least grid noise meeting the budget: one level less would break it
        lower = [spec["leakage"][jj, max(int(np.searchsorted(GRID, r)) - 1, 0)] for jj, r in zip(j, rel)]
        assert all(r == 0 or low > bud for r, low, bud in zip(rel, lower, spec["budget"]))
        plan = sol.to_plan()
        assert plan.noise_sigma == sol.noise_sigma and plan.privacy["budget"] == list(spec["budget"])


@pytest.mark.parametrize("seed", range(8))
def test_hasfl_matches_oracle_on_constrained_instances(seed):
    problem, _ = constrained(seed)
    assert problem.noisy
    hasfl = PLANNERS.get("hasfl")(problem, PlannerParams(b_max=12))
    oracle = PLANNERS.get("oracle")(problem, PlannerParams(b_max=12))
    assert hasfl.time_to_target_s <= oracle.time_to_target_s * 1.01
    assert oracle.time_to_target_s <= hasfl.time_to_target_s * (1 + 1e-9)
    # the weighted oracle scores plans exactly as the problem does
    assert problem.time_to_target(oracle.batch_sizes, oracle.cuts) == pytest.approx(oracle.time_to_target_s,
                                                                                    rel=1e-12)


def test_cuts_without_a_guarantee_are_never_chosen():
    rng = np.random.default_rng(5)
    base = synthetic_problem(2, n=4, c=4, b_max=12)
    leak = leakage_table(rng, 4)
    leak[1:3] = np.inf  # e.g. cuts a measured profile does not cover
    problem = constrain(dataclasses.replace(base, epsilon=1e300), leakage=leak, sigma_grid=GRID,
                        budget=np.full(4, 40.0), multiplier=lambda j, r: 1.0 + r, rms=np.ones(4), metric="ssim")
    assert not problem.privacy.allowed[:, 1:3].any() and np.all(problem.mcap[:, 1:3] == 0)
    for name in ("hasfl", "random"):
        sol = PLANNERS.get(name)(problem, PlannerParams(b_max=12))
        assert not set(sol.cuts) & {problem.cuts[1], problem.cuts[2]}


def test_objective_applies_the_multiplier_of_each_devices_cut():
    problem, _ = constrained(3)
    rng = np.random.default_rng(0)
    rows = np.arange(problem.num_devices)
    for _ in range(20):
        keys = np.where(problem.ub >= 1, rng.random(problem.ub.shape), -np.inf)
        j = np.argmax(keys, axis=1)
        b = np.floor(rng.random(problem.num_devices) * problem.ub[rows, j]) + 1
        margin = (problem.epsilon - problem.k * np.sum(problem.variance_mult[rows, j] / b)
                  - problem.drift[j.max()])
        expect = problem.scale / margin * problem.round_time_idx(b, j).per_round_s if margin > 0 else math.inf
        assert problem.objective_idx(b, j) == pytest.approx(expect, rel=1e-12)
        assert problem.objective_many(b[None], j[None])[0] == pytest.approx(expect, rel=1e-12)


def test_constrained_rounds_agree_with_the_bound(profile):
    problem, _, bound = real_problem(profile, 6, interval=4, eps_factor=30.0)
    rng = np.random.default_rng(2)
    rho = rng.uniform(0.2, 2.0, problem.num_cuts)
    private = constrain(problem, leakage=leakage_table(rng, problem.num_cuts), sigma_grid=GRID,
                        budget=np.full(6, 22.0), multiplier=lambda j, r: 1.0 + rho[j] * r * r,
                        rms=np.ones(problem.num_cuts), metric="dfil_psnr")
    sol = PLANNERS.get("hasfl")(private, PlannerParams())
    j = private.cut_index(sol.cuts)
    mult = private.variance_mult[np.arange(6), j]
    assert np.all(mult == 1.0 + rho[j] * np.asarray(sol.relative_sigma) ** 2)
    assert sol.rounds == pytest.approx(bound.rounds(sol.batch_sizes, max(sol.cuts), private.epsilon, mult), rel=1e-12)
    plain = PLANNERS.get("hasfl")(problem, PlannerParams())
    assert sol.time_to_target_s >= plain.time_to_target_s * (1 - 1e-12)  # privacy is never free


@pytest.mark.parametrize("seed", range(4))
def test_tighter_budget_is_never_faster(seed):
    """Tightening every budget (same epsilon) never shortens the predicted time; infeasible = inf."""
    base = np.random.default_rng(seed).uniform(10, 24, 4)
    eps = constrained(seed, base, slack=50.0)[0].epsilon
    for name in ("hasfl", "oracle"):
        times = []
        for tighten in (0.0, 2.0, 4.0, 6.0):
            try:
                problem = dataclasses.replace(constrained(seed, base - tighten)[0], epsilon=eps)
                times.append(PLANNERS.get(name)(problem, PlannerParams(b_max=12)).time_to_target_s)
            except ConfigError:  # no cut meets a budget, or the noise leaves eps out of reach
                times.append(math.inf)
        assert math.isfinite(times[0])
        assert all(b >= a * (1 - 1e-12) for a, b in zip(times, times[1:])), (name, times)


# ----------------------------------------------------------------------------- errors
def test_unreachable_budget_names_the_device_and_the_least_leakage():
    rng = np.random.default_rng(0)
    base = synthetic_problem(0, n=3, c=4)
    leak = leakage_table(rng, 4)
    least = float(leak[:, -1].min())
    budget = np.array([40.0, least - 1.0, 40.0])
    with pytest.raises(ConfigError) as err:
        constrain(base, leakage=leak, sigma_grid=GRID, budget=budget, multiplier=lambda j, r: 1.0,
                  rms=np.ones(4), metric="dfil_psnr")
    msg = str(err.value)
    assert err.value.field == "privacy.budget" and "device 1" in msg and f"{least:.4g}" in msg
    assert "privacy.sigma_grid" in msg and "\n" not in msg


def test_noise_that_breaks_the_target_is_a_budget_error():
    rng = np.random.default_rng(0)
    base = synthetic_problem(1, n=3, c=4)
    leak = leakage_table(rng, 4)
    with pytest.raises(ConfigError) as err:
        constrain(base, leakage=leak, sigma_grid=GRID, budget=np.full(3, 5.0 + float(leak[:, -1].max())),
                  multiplier=lambda j, r: 1e6, rms=np.ones(4), metric="dfil_psnr")
    assert err.value.field == "privacy.budget" and "optimizer.target" in str(err.value)


@pytest.mark.parametrize("change, field", [
    (dict(sigma_grid=(0.0, 0.3, 0.1, 1.0, 3.0)), "privacy.sigma_grid"),
    (dict(budget=np.ones(2)), "privacy.budget"),
    (dict(leakage=np.zeros((3, 5))), "privacy.profile"),
    (dict(multiplier=lambda j, r: 0.5), "privacy.noise_cost"),
])
def test_bad_privacy_inputs_are_config_errors(change, field):
    rng = np.random.default_rng(0)
    spec = dict(leakage=leakage_table(rng, 4), sigma_grid=GRID, budget=np.full(3, 25.0),
                multiplier=lambda j, r: 1.0 + r, rms=np.ones(4), metric="dfil_psnr")
    spec.update(change)
    with pytest.raises(ConfigError) as err:
        constrain(synthetic_problem(0, n=3, c=4), **spec)
    assert err.value.field == field


def test_fixed_cut_baseline_names_the_budget_when_its_cut_is_not_private():
    problem, spec = constrained(0)
    blocked = np.flatnonzero(~problem.privacy.allowed.all(axis=0))
    assert len(blocked), "this seeded instance must rule some cut out for some device"
    with pytest.raises(ConfigError, match="privacy.budget"):
        PLANNERS.get("sfl")(problem, PlannerParams(b_max=12, cut=problem.cuts[int(blocked[0])]))
