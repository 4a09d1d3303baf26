"""``build_study_report(study_dir)``: the report of a sweep (``hasfl-sec sweep``) from its tables.

A study directory holds ``study.json`` (the grid, its axes and the points), ``points.csv`` (one row
per point: its id, its axis values and whether its evaluation finished), ``summary.csv`` (every
point's summary rows, with the point's axis values as leading columns: one tidy table) and, when
some cells failed, ``failed.csv``. Each point's own evaluation, with its full report, is in
``points/<id>/``. The study report shows the points, the combined summary and the failed cells,
and links each point's report; it has no figures of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..fileio import read_structured
from ..locks import lock_folder
from .doc import Block, Document, Items, Section, Table, Text, table
from .html import render_html
from .markdown import render_markdown

__all__ = ["build_study_report", "STUDY_SUMMARY_COLUMNS"]

#: The summary columns the study report shows (after the point and its axes).
STUDY_SUMMARY_COLUMNS = {"plan": "plan", "final_accuracy": "final accuracy", "rounds": "rounds",
                         "measured_time_to_target_s": "measured time to target (s)",
                         "predicted_time_to_target_s": "predicted time to target (s)",
                         "max_leakage": "max leakage", "leakage_metric": "leakage metric",
                         "strongest_attack": "strongest attack"}


def _read(study: Path, name: str) -> pd.DataFrame:
    path = study / f"{name}.csv"
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError("DIR", str(path), "a CSV table written by hasfl-sec sweep", first) from None


def _document(study: Path, meta: dict) -> Document:
    axes = list(meta.get("axes") or {})
    points, summary, failed = _read(study, "points"), _read(study, "summary"), _read(study, "failed")
    lead: list[Block] = [Text(f"{len(points)} point(s) over axes {', '.join(axes) or '(none)'}; "
                              f"created {meta.get('created', '?')}; wall time {meta.get('wall_time_s', 0):.0f} s")]
    sections = []
    if not points.empty:
        shown = points.assign(report=[f"points/{p}/report.html" if ok else "–"
                                      for p, ok in zip(points["point"], points["finished"])])
        sections.append(Section("points", "Points", [table(shown, ["point", *axes, "cells", "failed", "report"],
                                                           "One evaluation per point; its full report is linked")]))
    if not summary.empty:
        if "leakage_metric" not in summary.columns:  # a study written before text tasks: SSIM throughout
            summary = summary.assign(leakage_metric="ssim")
        blocks: list[Block] = [table(summary, {"point": "point", **{a: a for a in axes}, **STUDY_SUMMARY_COLUMNS},
                                     "Summary per point and plan (summary.csv, one tidy table)")]
        sections.append(Section("summary", "Summary", blocks))
    if not failed.empty:
        sections.append(Section("failed", "Failed cells", [
            table(failed, ["point", "plan", "kind", "reason"], "Cells that did not finish"),
            Text("Run the same sweep again into the same output (with --overwrite) to compute just these: "
                 "finished cells are reused.")]))
    notes = [str(n) for n in meta.get("notes") or []]
    settings = meta.get("eval") or {}
    rows = [[str(k), str(v)] for k, v in settings.items()]
    blocks = [Items(notes)] if notes else []
    if rows:
        blocks.append(Table(["eval setting", "value"], rows, [False, False], "Eval settings shared by every point"))
    sections.append(Section("notes", "Notes", blocks or [Text("No notes.")]))
    return Document(f"hasfl-sec study: {meta.get('name') or study.name}", lead, sections)


def build_study_report(study_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``study_dir`` from its tables (each by an atomic
    rename); returns the two paths."""
    study = Path(study_dir)
    with lock_folder(study, "DIR"):
        meta = read_structured(study / "study.json", "DIR")
        if not isinstance(meta, dict):
            raise ConfigError("DIR", str(study / "study.json"), "a JSON object written by hasfl-sec sweep")
        doc = _document(study, meta)
        paths = study / "report.html", study / "report.md"
        texts = render_html(doc, lambda name: study / name), render_markdown(doc)
        for path, text in zip(paths, texts):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
    return paths
