"""Means with confidence intervals over seeds, and paired comparisons of arms that share seeds.

Every figure an evaluation reports is a mean over training seeds with a two-sided 95% confidence
interval from Student's t distribution: mean ± t_{0.975, n-1} · s / √n, with s the sample standard
deviation (ddof 1). With the 3 to 10 seeds an evaluation can afford, a bootstrap interval is too
narrow (it cannot reach beyond the observed values), so t is the honest choice; it assumes the
per-seed values are roughly normal, which is why ratios are compared on the log scale.

A *paired* comparison uses only seeds both arms finished (and, for a time to target, reached the
target): the interval is that of the per-seed differences (:func:`paired_difference`), or of the
per-seed log ratios exponentiated back (:func:`paired_ratio`, a geometric-mean ratio). A difference
is called *significant* when its interval excludes 0 (a ratio's, 1). With one pair there is no
interval and nothing is called significant. Method and pages: docs/statistics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["CONFIDENCE", "METHOD", "Interval", "mean_ci", "paired_difference", "paired_ratio", "summarize"]

#: The confidence level of every interval.
CONFIDENCE = 0.95
#: How every interval is computed (shown in reports).
METHOD = "Student t, 95%"


@dataclass(frozen=True)
class Interval:
    """A mean (or a ratio of geometric means) with its confidence interval over ``n`` values.

    ``low``/``high`` are NaN when ``n < 2`` (no interval); ``mean`` is NaN when ``n == 0``.
    ``null`` is the value of no effect (0 for a difference, 1 for a ratio, NaN for a plain mean).
    """

    mean: float
    low: float
    high: float
    n: int
    null: float = math.nan

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN without an interval)."""
        return (self.high - self.low) / 2.0

    @property
    def significant(self) -> bool:
        """Whether the interval excludes the value of no effect."""
        if self.n < 2 or math.isnan(self.null) or math.isnan(self.low):
            return False
        return self.low > self.null or self.high < self.null


def _t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2.0, df))


def _finite(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def mean_ci(values: Iterable[float], null: float = math.nan) -> Interval:
    """Mean and 95% Student-t interval of the finite ``values`` (NaN and inf are left out: a seed
    that never reached a target has no time to target)."""
    arr = _finite(values)
    n = len(arr)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, null)
    mean = float(arr.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, null)
    half = _t_quantile(n - 1) * float(arr.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, null)


def _pairs(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Values of the seeds both mappings hold with finite values, in seed order."""
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(float(a[s])) and math.isfinite(float(b[s])))
    return (np.asarray([float(a[s]) for s in seeds], dtype=float),
            np.asarray([float(b[s]) for s in seeds], dtype=float))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Interval:
    """Mean of ``a[s] - b[s]`` over the seeds ``s`` both hold, with its interval (null 0)."""
    x, y = _pairs(a, b)
    return mean_ci(x - y, null=0.0)


def paired_ratio(a: Mapping[int, float], b: Mapping[int, float]) -> Interval:
    """Geometric mean of ``a[s] / b[s]`` over the seeds both hold, with its interval (null 1): the
    t interval of the log ratios, exponentiated. Seeds where either value is <= 0 are left out."""
    x, y = _pairs(a, b)
    keep = (x > 0) & (y > 0)
    d = mean_ci(np.log(x[keep]) - np.log(y[keep]), null=0.0)
    return Interval(math.exp(d.mean) if d.n else math.nan, math.exp(d.low) if d.n > 1 else math.nan,
                    math.exp(d.high) if d.n > 1 else math.nan, d.n, 1.0)


def summarize(frame: pd.DataFrame, by: Sequence[str], columns: Sequence[str],
              text: Sequence[str] = ()) -> pd.DataFrame:
    """Per group of ``by``: for each column ``c`` of ``columns``, its mean ``c``, interval ``c_low``
    / ``c_high`` and count ``c_n`` of finite values over the group's rows (one row per seed), plus
    ``seeds``: the number of rows. Each column of ``text`` (e.g. a cut: a label, not a quantity to
    average) keeps its value when it is the same in every row and is joined with ``/`` otherwise."""
    rows = []
    for key, group in frame.groupby(list(by), sort=False, dropna=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["seeds"] = len(group)
        for c in [*columns, *text]:
            if c not in text:
                ci = mean_ci(pd.to_numeric(group[c], errors="coerce"))
                row.update({c: ci.mean, f"{c}_low": ci.low, f"{c}_high": ci.high, f"{c}_n": ci.n})
            else:
                values = list(dict.fromkeys(str(v) for v in group[c]))
                row[c] = "/".join(values)
        rows.append(row)
    return pd.DataFrame(rows)
