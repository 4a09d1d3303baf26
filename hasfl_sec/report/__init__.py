"""Reports: an eval directory's tables rendered as figures, ``report.html`` and ``report.md``.

A renderer only: it reads the CSV tables and ``eval.json`` that :mod:`hasfl_sec.evaluation` writes
and never imports torch or the training stack.

* :func:`build_report` -- (re)write the report of an eval directory from its tables
* :func:`load_eval` -- read an eval directory's ``eval.json`` and tables (:data:`hasfl_sec.results.EVAL_TABLES`)

Example::

    from hasfl_sec.report import build_report
    build_report("reports/default")        # rebuild after editing a table
"""

from __future__ import annotations

from .render import build_report
from .tables import EvalData, device_classes, is_eval_dir, load_eval, pareto_front, time_to_target

__all__ = ["build_report", "load_eval", "is_eval_dir", "EvalData", "device_classes", "pareto_front",
           "time_to_target"]
