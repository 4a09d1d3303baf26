"""Leakage profiles: how much each cut leaks at each smashed-data noise level.

A :class:`LeakageProfile` holds one leakage value per (cut, noise level) on a grid; higher always
means more leakage. Noise levels are *relative*: r = sigma / RMS_c, the noise std over the RMS of
cut c's smashed data (on the profiled model, over the probe batch, as
:func:`hasfl_sec.metrics.fisher.dfil` defines it). Relative noise makes cuts comparable (their
activation scales differ by an order of magnitude) and is what the planner chooses; the trainer's
noise defense gets the absolute std r x RMS_c.

Two conservative rules make the profile safe to plan with:

* **Monotone in noise.** Leakage cannot grow with more noise (the attacker can always add noise
  itself), so values are made non-increasing along the grid by taking, at each level, the largest
  value measured at that level or any higher one. Measurement noise can only raise values.
* **Between grid points** the value of the next *lower* grid level is used (an upper bound under
  monotonicity); below the first level nothing is known (inf) and above the last the last value
  holds. A (cut, level) never measured takes the value of the nearest lower level at that cut.

Sources (both give the same class):

* :func:`hasfl_sec.planning.privacy.measure_privacy`: the dFIL bound of Maeng et al., NeurIPS 2023
  (``dfil`` = mean per-sample dFIL, ``dfil_psnr`` = its PSNR form 10 log10 dFIL, in dB), a fast
  attack-agnostic predictor computable for any noise level.
* :meth:`LeakageProfile.from_frame`: measured attacks, e.g. an audit's ``leakage.csv`` (the
  strongest attack per cut and noise level, metric ``ssim`` or ``psnr``).

:func:`rank_agreement` reports how well one profile (the predictor) ranks cuts like another
(the measured attacks): Spearman's rho and Kendall's tau across cuts (scipy).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, check
from ..registry import Registry

__all__ = ["LeakageMetric", "LEAKAGE_METRICS", "LeakageProfile", "rank_agreement", "FRAME_COLUMNS", "check_sigma_grid"]

log = logging.getLogger(__name__)

#: Columns :meth:`LeakageProfile.from_frame` reads: ``cut`` and ``value`` are required; ``metric``
#: (rows of other metrics are dropped), ``sigma`` (relative noise; absent = 0, an undefended
#: run) and ``defense`` (without ``sigma``, only undefended rows, ``none``, are accepted) are
#: optional. Every other column (``attack``, ``device``, ``seeds``...) is pooled by the maximum.
FRAME_COLUMNS = ("cut", "value", "metric", "sigma", "defense")


@dataclass(frozen=True)
class LeakageMetric:
    """A leakage metric budgets can be stated in (higher = more leakage).

    Attributes:
        name: registry name (``privacy.metric``).
        unit: for tables and messages.
        from_dfil: maps per-sample dFIL values (reduced over the probe images) to the metric, or
            None for a metric only measured attacks give (``privacy.profile`` must be a file).
    """

    name: str
    unit: str
    from_dfil: Callable[[np.ndarray], np.ndarray] | None = None


def _psnr(dfil: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(dfil)


LEAKAGE_METRICS: Registry[LeakageMetric] = Registry("leakage metric", "privacy.metric")
for _metric, _help in (
    (LeakageMetric("dfil", "dFIL", lambda d: d), "mean per-sample dFIL (Maeng et al. 2023); 1/dFIL bounds an "
                                                 "unbiased attacker's per-pixel MSE"),
    (LeakageMetric("dfil_psnr", "dB", _psnr), "10 log10 dFIL: the PSNR no unbiased attacker's expected MSE beats"),
    (LeakageMetric("ssim", "SSIM"), "SSIM of the strongest audited reconstruction attack (measured profiles only)"),
    (LeakageMetric("psnr", "dB"), "PSNR of the strongest audited reconstruction attack (measured profiles only)"),
):
    LEAKAGE_METRICS.register(_metric.name, help=_help)(_metric)


@dataclass(frozen=True, eq=False)
class LeakageProfile:
    """Leakage per (cut, relative noise level), conservative between grid points (module docstring).

    Attributes:
        metric: the :data:`LEAKAGE_METRICS` name of the values.
        cuts: the profiled cuts, increasing.
        sigmas: the relative noise levels (x the cut's smashed-data RMS), increasing.
        values: (len(cuts), len(sigmas)) leakage, made non-increasing along ``sigmas``; inf = no
            guarantee (dFIL without noise).
        source: where the values come from (``dfil`` or a file path), for the record.
    """

    metric: str
    cuts: tuple[int, ...]
    sigmas: tuple[float, ...]
    values: np.ndarray
    source: str = "dfil"

    def __post_init__(self) -> None:
        LEAKAGE_METRICS.get(self.metric)
        cuts = tuple(int(c) for c in self.cuts)
        check(len(cuts) >= 1 and all(a < b for a, b in zip(cuts, cuts[1:])), "privacy.profile", list(cuts),
              "a non-empty, strictly increasing list of cuts")
        sigmas = check_sigma_grid(self.sigmas, "privacy.sigma_grid")
        values = np.array(self.values, dtype=np.float64)
        check(values.shape == (len(cuts), len(sigmas)) and not np.isnan(values).any(), "privacy.profile",
              values.shape, f"a ({len(cuts)}, {len(sigmas)}) table of leakage values without NaN")
        # Monotone rule: the largest value at this or any higher noise level.
        values = np.maximum.accumulate(values[:, ::-1], axis=1)[:, ::-1].copy()
        values.setflags(write=False)
        object.__setattr__(self, "cuts", cuts)
        object.__setattr__(self, "sigmas", tuple(float(s) for s in sigmas))
        object.__setattr__(self, "values", values)

    def at(self, cut: int, sigma: float) -> float:
        """Leakage of ``cut`` at relative noise ``sigma``: the next lower grid level's value
        (inf below the grid, inf for a cut not profiled)."""
        if cut not in self.cuts:
            return math.inf
        k = int(np.searchsorted(self.sigmas, float(sigma), side="right")) - 1
        return math.inf if k < 0 else float(self.values[self.cuts.index(cut), k])

    def table(self, cuts: Sequence[int], sigmas: Sequence[float]) -> np.ndarray:
        """(len(cuts), len(sigmas)) leakage by :meth:`at` (what the planner constrains with)."""
        missing = [int(c) for c in cuts if int(c) not in self.cuts]
        if missing:
            log.warning("leakage profile (%s) has no values at cuts %s: they are never chosen", self.source, missing)
        return np.array([[self.at(int(c), s) for s in sigmas] for c in cuts], dtype=np.float64)

    def by_cut(self, sigma: float) -> dict[int, float]:
        """Leakage of every profiled cut at relative noise ``sigma`` (for :func:`rank_agreement`)."""
        return {c: self.at(c, sigma) for c in self.cuts}

    def to_frame(self) -> pd.DataFrame:
        """Long form with the columns :meth:`from_frame` reads (``cut, sigma, metric, value``)."""
        rows = [{"cut": c, "sigma": s, "metric": self.metric, "value": float(self.values[i, k])}
                for i, c in enumerate(self.cuts) for k, s in enumerate(self.sigmas)]
        return pd.DataFrame(rows, columns=["cut", "sigma", "metric", "value"])

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, metric: str = "ssim", source: str = "frame") -> "LeakageProfile":
        """A measured profile from attack rows (:data:`FRAME_COLUMNS`; an audit's leakage.csv works).

        Per (cut, sigma) the maximum over every other column is kept: the strongest attack, the
        worst device and seed. Rows without a ``sigma`` column are undefended (sigma 0).
        """
        LEAKAGE_METRICS.get(metric)
        missing = [c for c in ("cut", "value") if c not in frame.columns]
        check(not missing, "privacy.profile", source, f"a table with columns cut and value (missing {missing})")
        rows = frame
        if "metric" in rows.columns:
            rows = rows[rows["metric"] == metric]
        if "sigma" not in rows.columns:
            if "defense" in rows.columns:
                defended = sorted(set(rows["defense"].astype(str)) - {"none"})
                check(not defended, "privacy.profile", source, "rows of undefended runs, or a sigma column",
                      f"rows with defense {defended[:2]} need their relative noise in a sigma column")
            rows = rows.assign(sigma=0.0)
        rows = rows[np.isfinite(pd.to_numeric(rows["value"], errors="coerce"))]
        check(len(rows) > 0, "privacy.profile", source, f"at least one finite {metric} row")
        cut = pd.to_numeric(rows["cut"], errors="coerce")
        sig = pd.to_numeric(rows["sigma"], errors="coerce")
        check(bool(cut.notna().all()) and bool((cut == cut.round()).all()) and bool(sig.notna().all())
              and bool((sig >= 0).all()), "privacy.profile", source, "integer cuts and sigma values >= 0")
        pivot = (pd.DataFrame({"cut": cut.astype(int), "sigma": sig.astype(float),
                               "value": pd.to_numeric(rows["value"]).astype(float)})
                 .groupby(["cut", "sigma"])["value"].max().unstack("sigma").sort_index().sort_index(axis=1))
        # A (cut, sigma) never measured: the nearest lower level's value (inf when none is lower).
        values = pivot.ffill(axis=1).fillna(math.inf).to_numpy()
        return cls(metric, tuple(int(c) for c in pivot.index), tuple(float(s) for s in pivot.columns), values,
                   source=source)

    @classmethod
    def read(cls, path: str | Path, metric: str) -> "LeakageProfile":
        """:meth:`from_frame` of a CSV file (``privacy.profile``)."""
        path = Path(path)
        check(path.is_file(), "privacy.profile", str(path), "dfil, or a CSV of measured leakage (cut, value, ...)")
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ConfigError("privacy.profile", str(path), "a CSV of measured leakage (cut, value, ...)",
                              str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        return cls.from_frame(frame, metric, source=str(path))


def rank_agreement(predicted: Mapping[int, float], measured: Mapping[int, float]) -> dict[str, Any]:
    """How well ``predicted`` ranks cuts like ``measured`` (both cut -> leakage, higher = more).

    Returns the common cuts, Spearman's rho and Kendall's tau (tau-b, ties allowed) across them,
    and their two-sided p-values (NaN with fewer than 3 common cuts or a constant side).
    """
    from scipy.stats import kendalltau, spearmanr

    cuts = sorted(set(predicted) & set(measured))
    out: dict[str, Any] = {"cuts": cuts, "n": len(cuts), "spearman": math.nan, "spearman_p": math.nan,
                           "kendall": math.nan, "kendall_p": math.nan}
    if len(cuts) < 3:
        return out
    p = np.array([predicted[c] for c in cuts], dtype=np.float64)
    m = np.array([measured[c] for c in cuts], dtype=np.float64)
    if np.ptp(p) == 0 or np.ptp(m) == 0 or not (np.isfinite(p).all() and np.isfinite(m).all()):
        return out
    rho, rho_p = spearmanr(p, m)
    tau, tau_p = kendalltau(p, m)
    out.update(spearman=float(rho), spearman_p=float(rho_p), kendall=float(tau), kendall_p=float(tau_p))
    return out


def check_sigma_grid(sigmas: Sequence[float], field: str = "privacy.sigma_grid") -> np.ndarray:
    """The noise grid as an array: non-empty, finite, >= 0 and strictly increasing, or ConfigError."""
    arr = np.asarray(list(sigmas), dtype=np.float64).reshape(-1)
    check(len(arr) >= 1 and bool(np.all(np.isfinite(arr) & (arr >= 0))) and bool(np.all(np.diff(arr) > 0)),
          field, arr.tolist(), "a non-empty, strictly increasing list of noise levels >= 0 (x the smashed-data RMS)")
    return arr
