"""A tiny document model shared by the HTML and Markdown writers.

:mod:`~hasfl_sec.report.sections` builds a :class:`Document` once -- headings, paragraphs, tables
whose cells are already formatted text, figures named relative to the eval directory -- and each
writer only decides how those blocks look, so both formats always carry the same content.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import numpy as np
import pandas as pd

__all__ = ["Text", "Heading", "Table", "Figure", "Items", "Block", "Section", "Document", "fmt", "table"]


@dataclass
class Text:
    """A paragraph of plain text."""

    text: str


@dataclass
class Heading:
    """A sub-heading inside a section (level 3)."""

    text: str


@dataclass
class Items:
    """A bulleted list of plain-text items."""

    items: list[str]


@dataclass
class Table:
    """A table of formatted cells; ``numeric[j]`` right-aligns column ``j``."""

    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    caption: str = ""


@dataclass
class Figure:
    """A PNG figure, ``name`` relative to the eval directory (``figures/x.png``)."""

    name: str
    caption: str


Block = Union[Text, Heading, Items, Table, Figure]


@dataclass
class Section:
    """A level-2 section; ``key`` is its anchor id."""

    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    """The whole report: a title, a lead (header blocks) and the sections."""

    title: str
    lead: list[Block]
    sections: list[Section]

    def figures(self) -> list[str]:
        """Names of every figure referenced, in order."""
        blocks = [*self.lead, *(b for s in self.sections for b in s.blocks)]
        return [b.name for b in blocks if isinstance(b, Figure)]


def fmt(value: Any, column: str = "") -> str:
    """A readable cell: NaN/None as an en dash, booleans as yes/no, integers plain, floats with
    four significant digits (scientific only for very large or small magnitudes)."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v == int(v) and abs(v) < 1e6 and column in _INTEGRAL:
            return str(int(v))
        if 1e3 <= abs(v) < 1e6:
            return f"{v:.0f}"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            mantissa, exp = f"{v:.3e}".split("e")
            return f"{float(mantissa):.3g}e{int(exp)}"
        return f"{v:.4g}"
    text = str(value)
    return "–" if text in ("", "nan") else text


#: columns shown without decimals when their values are whole numbers.
_INTEGRAL = {"device", "batch", "cut", "round", "rounds", "n", "predicted_rounds"}


def table(frame: pd.DataFrame, columns: Mapping[str, str] | Sequence[str], caption: str = "") -> Table:
    """A :class:`Table` of ``frame``'s ``columns`` (a list, or a mapping column -> header)."""
    labels = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    cols = [c for c in labels if c in frame.columns]
    rows = [[fmt(v, c) for c, v in zip(cols, rec)] for rec in frame[cols].itertuples(index=False, name=None)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in cols]
    return Table([labels[c] for c in cols], rows, numeric, caption)
