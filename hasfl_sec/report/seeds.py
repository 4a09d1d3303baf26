"""Tables over training seeds for the report: every number a mean with its 95% interval.

The per-seed tables of an eval directory hold one row per seed (column ``seed``); the report shows
each figure as ``mean ± half-width`` of its 95% Student-t interval over seeds
(:mod:`hasfl_sec.stats`, docs/statistics.md), or just the mean when there is one seed. A table
without a ``seed`` column (an older eval directory) is one seed.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

from ..stats import METHOD, summarize
from .doc import Table, fmt, table

__all__ = ["ci_text", "with_ci", "over_seeds", "ci_table", "seed_count", "ci_legend"]


def ci_text(mean: float, low: float, high: float, column: str = "") -> str:
    """``0.912 ± 0.013`` (the interval's half-width), or the mean alone without an interval or when
    every seed gave the same value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if low is None or high is None or math.isnan(float(low)) or math.isnan(float(high)):
        return fmt(float(mean), column)
    half = (float(high) - float(low)) / 2.0
    if half <= 1e-9 * abs(float(mean)):  # every seed gave the same value (up to float rounding)
        return fmt(float(mean), column)
    return f"{fmt(float(mean), column)} ± {fmt(half)}"


def with_ci(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of a table over seeds with each of ``columns`` as :func:`ci_text` of its mean and its
    ``_low``/``_high`` bounds (a column without both bounds is left as it is)."""
    out = frame.copy()
    for c in columns:
        if f"{c}_low" in out.columns and f"{c}_high" in out.columns:
            out[c] = [ci_text(m, lo, hi, c) for m, lo, hi in zip(out[c], out[f"{c}_low"], out[f"{c}_high"])]
    return out


def _with_seed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame if "seed" in frame.columns else frame.assign(seed=0)


def seed_count(frame: pd.DataFrame) -> int:
    """How many distinct training seeds a per-seed table holds (1 without a ``seed`` column)."""
    if frame.empty:
        return 0
    return int(frame["seed"].nunique()) if "seed" in frame.columns else 1


def over_seeds(frame: pd.DataFrame, by: Sequence[str], numbers: Sequence[str],
               text: Sequence[str] = ()) -> pd.DataFrame:
    """Per group of ``by``: each of ``numbers`` as ``mean ± half-width`` text over the group's seeds
    (a seed's several rows are first averaged), each of ``text`` as its value (values that differ
    across seeds joined with ``/``), and ``seeds``: how many seeds the group has."""
    frame = _with_seed(frame)
    numbers = [c for c in numbers if c in frame.columns]
    text = [c for c in text if c in frame.columns]
    keys = [*by, "seed"]
    per_seed = frame.groupby(keys, sort=False, dropna=False).agg(
        {**{c: (lambda s: pd.to_numeric(s, errors="coerce").mean()) for c in numbers},
         **{c: (lambda s: "/".join(dict.fromkeys(str(v) for v in s))) for c in text}}).reset_index()
    out = summarize(per_seed, list(by), numbers, text)
    for c in numbers:
        out[c] = [ci_text(m, lo, hi, c) for m, lo, hi in zip(out[c], out[f"{c}_low"], out[f"{c}_high"])]
    return out


def ci_table(frame: pd.DataFrame, columns: Mapping[str, str], caption: str, numbers: Sequence[str]) -> Table:
    """A :class:`~hasfl_sec.report.doc.Table` of a frame from :func:`over_seeds`, with the ``numbers``
    columns right-aligned like numbers."""
    out = table(frame, columns, caption)
    labels = [columns[c] for c in columns if c in frame.columns]
    shown = {columns[c] for c in numbers if c in columns}
    out.numeric = [n or label in shown for n, label in zip(out.numeric, labels)]
    return out


def ci_legend(seeds: int) -> str:
    """What the ± means, for a table over ``seeds`` seeds."""
    if seeds <= 1:
        return "One training seed: no interval (run with several seeds, --seeds, for confidence intervals)."
    return f"Means over {seeds} training seeds ± the half-width of their {METHOD} confidence interval."
