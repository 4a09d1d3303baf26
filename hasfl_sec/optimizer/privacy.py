"""Privacy-constrained HASFL problems: a leakage budget per device, smashed-data noise per device.

Privacy-constrained HASFL (our extension of HASFL, Lin et al., arXiv 2506.08426) adds to each
device i a budget B_i on a leakage metric (higher = more leakage: the dFIL bound of Maeng et al.,
NeurIPS 2023, its PSNR form, or the SSIM of the strongest audited attack) and makes the std of
the Gaussian noise the device adds to its smashed data a decision variable. Noise lowers leakage
and raises the per-sample gradient variance (:mod:`hasfl_sec.privacy.noise_cost` derives the
term): at cut c and noise r (relative to the cut's smashed-data RMS) device i's variance term
becomes k m(c, r) / b_i, with m(c, 0) = 1 and m non-decreasing in r (to first order
m = 1 + rho_c r^2).

The decision is separable: for a fixed cut, leakage falls and m grows with r, so the least grid
noise that meets the budget is optimal -- any more only costs rounds. :func:`constrain` therefore
fixes, per (device, cut),

    r_i(c) = min { r in grid : leakage(c, r) <= B_i },   m[i, c] = m(c, r_i(c)),

masks the pairs where no grid noise meets B_i (memory cap 0, so no planner can choose them) and
returns an ordinary :class:`~hasfl_sec.optimizer.Problem` with these multipliers. Every planner
then solves the constrained problem exactly as it solves HASFL's; its plans meet every budget by
construction, and the noise per device is read off the chosen cut.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError, check
from ..privacy.profile import check_sigma_grid
from .problem import Problem

__all__ = ["PrivacyTerms", "constrain"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PrivacyTerms:
    """The noise and predicted leakage of every (device, cut) pair of a constrained problem.

    Attributes:
        metric: the leakage metric the budgets are stated in.
        budget: (N,) budget per device.
        relative_sigma: (N, C) least grid noise meeting the budget, as a fraction of the cut's
            smashed-data RMS; NaN where no grid noise does.
        noise_sigma: (N, C) the same noise as an absolute std (activation units, what the noise
            defense adds); NaN where masked.
        leakage: (N, C) predicted leakage at that noise; NaN where masked.
        allowed: (N, C) whether some grid noise meets the budget at that cut.
    """

    metric: str
    budget: np.ndarray
    relative_sigma: np.ndarray
    noise_sigma: np.ndarray
    leakage: np.ndarray
    allowed: np.ndarray

    def at(self, j: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(absolute sigma, relative sigma, leakage) per device at cut columns ``j``."""
        rows = np.arange(len(self.budget))
        j = np.asarray(j, dtype=np.int64)
        return self.noise_sigma[rows, j], self.relative_sigma[rows, j], self.leakage[rows, j]


def _fail_budget(i: int, budget: float, metric: str, cuts: Sequence[int], leakage: np.ndarray,
                 grid: np.ndarray, memory_ok: np.ndarray) -> None:
    """Raise the one-line infeasibility error of device ``i``: the least leakage it can reach at a
    cut it can hold (Problem has already refused devices that hold no cut at all)."""
    usable = np.where(memory_ok[:, None], leakage, np.inf)
    c, s = np.unravel_index(int(np.argmin(usable)), usable.shape)
    least = float(usable[c, s])
    too_big = [cuts[k] for k in np.flatnonzero(~memory_ok & (leakage.min(axis=1) <= budget))]
    memory = f"; cuts {too_big} would meet it but do not fit its memory" if too_big else ""
    hint = (f"device {i}: no cut it can hold keeps {metric} <= {budget:g} with noise up to {grid[-1]:g} x the "
            f"smashed-data RMS; the least it reaches is {least:.4g} (cut {cuts[c]}, noise {grid[s]:g} x RMS){memory}; "
            "raise privacy.budget or extend privacy.sigma_grid to more noise")
    raise ConfigError("privacy.budget", budget, f"a {metric} budget >= {least:.4g} for device {i}", hint)


def constrain(problem: Problem, *, leakage: np.ndarray, sigma_grid: Sequence[float], budget: Sequence[float],
              multiplier: Callable[[int, float], float], rms: Sequence[float], metric: str) -> Problem:
    """The privacy-constrained version of ``problem``.

    Args:
        problem: the unconstrained HASFL problem (its cuts are the leakage profile's columns).
        leakage: (C, S) predicted leakage at each of ``problem.cuts`` and each grid noise; must be
            non-increasing along the grid (a :class:`~hasfl_sec.privacy.LeakageProfile` enforces it).
        sigma_grid: (S,) candidate noise levels, relative to the cut's smashed-data RMS, increasing.
        budget: (N,) leakage budget per device (same units as ``leakage``).
        multiplier: m(column, r), the variance multiplier of relative noise r at cut column
            ``column`` (:meth:`hasfl_sec.privacy.NoiseCost.multiplier`); called once per distinct
            (column, least noise) pair, never for r = 0 (m = 1).
        rms: (C,) smashed-data RMS of each cut (absolute noise = r x RMS).
        metric: name of the leakage metric, for messages and the plan.

    Raises:
        ConfigError: on ``privacy.budget`` when some device meets its budget at no cut it can
            hold, or when the noise the budgets need leaves no plan able to reach the target.
    """
    n, c = problem.num_devices, problem.num_cuts
    leak = np.asarray(leakage, dtype=np.float64)
    grid = np.asarray(sigma_grid, dtype=np.float64).reshape(-1)
    budget_arr = np.asarray(budget, dtype=np.float64).reshape(-1)
    rms_arr = np.asarray(rms, dtype=np.float64).reshape(-1)
    s = len(grid)
    check(leak.shape == (c, s) and not np.isnan(leak).any(), "privacy.profile", leak.shape,
          f"a ({c}, {s}) leakage table: one row per allowed cut, one column per privacy.sigma_grid value")
    check_sigma_grid(grid)
    # compared pairwise, not by np.diff: inf - inf (an unprofiled cut, no guarantee) is NaN
    check(bool(np.all(leak[:, 1:] <= leak[:, :-1])), "privacy.profile", "leakage rising with noise",
          "leakage non-increasing in the noise level (LeakageProfile enforces it)")
    check(budget_arr.shape == (n,) and bool(np.all(np.isfinite(budget_arr))), "privacy.budget", budget_arr.tolist(),
          f"{n} finite budgets, one per device")
    check(rms_arr.shape == (c,) and bool(np.all(np.isfinite(rms_arr) & (rms_arr >= 0))), "privacy.rms",
          rms_arr.tolist(), f"{c} finite numbers >= 0, one per allowed cut")

    meets = leak[None, :, :] <= budget_arr[:, None, None]  # (N, C, S)
    allowed = meets.any(axis=2)
    first = np.argmax(meets, axis=2)  # the least grid noise meeting the budget (where allowed)
    rel = np.where(allowed, grid[first], np.nan)
    leak_at = np.where(allowed, leak[np.arange(c)[None, :], first], np.nan)
    memory_ok = problem.mcap >= 1
    for i in range(n):
        if not (allowed[i] & memory_ok[i]).any():
            _fail_budget(i, float(budget_arr[i]), metric, problem.cuts, leak, grid, memory_ok[i])
    mult = np.ones((n, c))
    cache: dict[tuple[int, float], float] = {}
    for i, j in zip(*np.nonzero(allowed & memory_ok & (np.nan_to_num(rel) > 0))):
        key = (int(j), float(rel[i, j]))
        if key not in cache:
            cache[key] = float(multiplier(*key))
            check(np.isfinite(cache[key]) and cache[key] >= 1.0, "privacy.noise_cost", cache[key],
                  "a finite variance multiplier >= 1")
        mult[i, j] = cache[key]
    terms = PrivacyTerms(metric=metric, budget=budget_arr, relative_sigma=rel, noise_sigma=rel * rms_arr[None, :],
                         leakage=leak_at, allowed=allowed)
    mcap = np.where(allowed, problem.mcap, 0)
    # Build with an epsilon every plan reaches first: the floor check then names the budget, not
    # only optimizer.target, when it is the noise that makes the target unreachable.
    loose = dataclasses.replace(problem, mcap=mcap, variance_mult=mult, privacy=terms, epsilon=1e300)
    floor = loose.variance_drift_floor()
    if not problem.epsilon > floor:
        raise ConfigError(
            "privacy.budget", budget_arr.tolist() if len(set(budget_arr.tolist())) > 1 else float(budget_arr[0]),
            f"budgets whose noise leaves the target reachable (variance + drift floor {floor:.4g} >= "
            f"epsilon {problem.epsilon:.4g})",
            "the cuts the budgets allow (deeper cuts raise the drift term when I > 1) and the noise they need "
            "(it multiplies the variance term) leave optimizer.target out of reach; raise privacy.budget, extend "
            "privacy.sigma_grid, loosen the target, or raise optimizer.b_max")
    log.info("privacy: %s budgets %s; allowed cuts per device %s", metric, np.unique(budget_arr).tolist(),
             [int(a.sum()) for a in allowed])
    return dataclasses.replace(loose, epsilon=problem.epsilon)
