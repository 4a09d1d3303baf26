"""``build_report(eval_dir)``: draw the figures and write ``report.html`` and ``report.md``.

Everything is produced in a hidden temporary directory inside the eval directory first; only
when the figures, the HTML and the Markdown all exist are they moved into place (figures first,
the two reports last, each by an atomic rename). A failure leaves the previous report untouched.
The eval directory is locked (:mod:`hasfl_sec.locks`) meanwhile: two rebuilds of one report, or a
rebuild and another command writing the folder, cannot interleave.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..locks import lock_folder
from .doc import Document
from .figures import FIGURES, draw_figures
from .html import render_html
from .markdown import render_markdown
from .sections import build_document
from .tables import EvalData, load_eval

__all__ = ["build_report", "render_document"]

logger = logging.getLogger(__name__)


def _grids(eval_dir: Path) -> list[str]:
    return sorted(p.name for p in (eval_dir / "figures").glob("reconstructions_*.png") if p.is_file())


def render_document(data: EvalData, work_dir: Path) -> tuple[Document, list[str]]:
    """Draw the figures of ``data`` into ``work_dir`` and write ``report.html`` and ``report.md``
    there too; returns the document and the generated figure names."""
    written = draw_figures(data, work_dir)
    doc = build_document(data, written, _grids(data.path))

    def source(name: str) -> Path:
        local = work_dir / Path(name).name
        return local if Path(name).name in written else data.path / name

    (work_dir / "report.html").write_text(render_html(doc, source), encoding="utf-8")
    (work_dir / "report.md").write_text(render_markdown(doc), encoding="utf-8")
    return doc, written


def build_report(eval_dir: str | Path, field_name: str = "DIR") -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` into the eval directory ``eval_dir``
    from its tables, and the generated figures into its ``figures/``; returns the two paths.

    Raises:
        ConfigError: ``eval_dir`` is not an eval directory or one of its tables is malformed
            (one line naming ``field_name`` and the file), or another process is writing it.
            Nothing is written then.
    """
    if not Path(eval_dir).is_dir():  # nothing to lock: load_eval says what is wrong, and no parent is created
        return _build_locked(eval_dir, field_name)
    with lock_folder(eval_dir, field_name):
        return _build_locked(eval_dir, field_name)


def _build_locked(eval_dir: str | Path, field_name: str) -> tuple[Path, Path]:
    """:func:`build_report` once the eval directory is locked."""
    data = load_eval(eval_dir, field_name)
    eval_dir = data.path
    work = eval_dir / ".report.tmp"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    try:
        doc, written = render_document(data, work)
        figures = eval_dir / "figures"
        figures.mkdir(exist_ok=True)
        for name in FIGURES:
            if name in written:
                os.replace(work / name, figures / name)
            elif (figures / name).is_file():  # drawn by an earlier build from data that is gone now
                (figures / name).unlink()
        for name in ("report.md", "report.html"):
            os.replace(work / name, eval_dir / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("report written to %s (%d sections, %d figures)", eval_dir / "report.html", len(doc.sections),
                len(doc.figures()))
    return eval_dir / "report.html", eval_dir / "report.md"
