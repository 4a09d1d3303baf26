"""Reports: an eval directory's tables rendered as figures, ``report.html`` and ``report.md``.

* :func:`build_report` -- (re)write the report of an eval directory from its tables
* :func:`collect_runs` -- build an eval directory from plain ``hasfl-sec train`` runs
* :func:`load_eval` -- read an eval directory's ``eval.json`` and tables (:data:`TABLES`)

Example::

    from hasfl_sec.report import build_report, collect_runs
    collect_runs(["runs/hasfl", "runs/sfl"], "reports/compare")   # tables + report
    build_report("reports/compare")                               # rebuild after editing a table
"""

from __future__ import annotations

from .collect import collect_runs, is_run_dir
from .render import build_report
from .tables import TABLES, EvalData, device_classes, is_eval_dir, load_eval, pareto_front, time_to_target

__all__ = ["build_report", "collect_runs", "load_eval", "is_eval_dir", "is_run_dir", "EvalData", "TABLES",
           "device_classes", "pareto_front", "time_to_target"]
