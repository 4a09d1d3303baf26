"""``hasfl-sec eval``: the product's main job, from plans to a report.

:func:`run_eval` optimizes (unconstrained and privacy-constrained), trains each plan and each
defense setting, audits every split the plans picked and writes ``reports/<name>/`` -- the tables
behind the report and the report itself (:mod:`hasfl_sec.report`).

Example::

    from hasfl_sec import load_config
    from hasfl_sec.evaluation import load_settings, run_eval
    result = run_eval(load_config(), load_settings(budgets=[], seeds=[0, 1]), out="reports/demo")
    result.summary

Plain training runs (and their audits) become an eval directory with :func:`collect_runs`::

    from hasfl_sec.evaluation import collect_runs
    collect_runs(["runs/hasfl", "runs/sfl"], "reports/compare")   # tables + report
"""

from .aggregate import headline_text
from .collect import collect_runs, is_run_dir
from .executors import EXECUTORS, ExecutorConfig
from .run import EvalFailed, EvalResult, arm_configs, run_eval
from .settings import Arm, DefenseSweep, EvalSettings, build_arms, default_sweeps, load_settings

__all__ = ["headline_text",
           "run_eval", "EvalResult", "EvalFailed", "ExecutorConfig", "EXECUTORS", "arm_configs", "EvalSettings",
           "DefenseSweep", "Arm", "build_arms", "default_sweeps", "load_settings", "collect_runs", "is_run_dir"]
