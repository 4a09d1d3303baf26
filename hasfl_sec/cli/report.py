"""``hasfl-sec report``: render an eval directory, or collect training runs into one and render it
(a thin layer over :mod:`hasfl_sec.report`)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import click

__all__ = ["report"]

_VALID = ("an eval directory (with eval.json), a study directory of hasfl-sec sweep (with study.json) or a run "
          "directory of hasfl-sec train (with manifest.json)")


@click.command()
@click.argument("dirs", nargs=-1, required=True, metavar="DIR [DIR...]", type=click.Path())
@click.option("-o", "--out", help="Output directory for collected runs [reports/report-<time>].")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out directory.")
def report(dirs: tuple[str, ...], out: str | None, overwrite: bool) -> None:
    """Write report.html (self-contained) and report.md from an evaluation's tables.

    DIR is either one eval directory (written by hasfl-sec eval; it holds eval.json) or study
    directory (hasfl-sec sweep; study.json), whose report is rebuilt in place from its CSV tables
    -- edit or add a table and run this again -- or one or more run directories of hasfl-sec
    train, which are collected into a new eval directory (--out) and rendered. Each run becomes a
    plan named after its directory; a run audited with hasfl-sec audit RUN_DIR (into
    RUN_DIR/audit) adds its leakage, reconstruction grids and Pareto front.

    The report has a header with the configuration, then Plans, Training, Leakage per split,
    Reconstructions, Defenses, Pareto front and Notes; sections without data are left out and
    named in one line.

    \b
    Examples:
        hasfl-sec report reports/demo
        hasfl-sec train --strategy hasfl --out runs/hasfl && hasfl-sec audit runs/hasfl
        hasfl-sec train --strategy sfl --out runs/sfl && hasfl-sec audit runs/sfl
        hasfl-sec report runs/hasfl runs/sfl --out reports/hasfl-vs-sfl
        hasfl-sec report runs/hasfl runs/sfl --out reports/hasfl-vs-sfl --overwrite
    """
    from ..errors import ConfigError
    from ..report import build_report, is_eval_dir
    from ..results import RunDir

    evals, runs = [], []
    for d in dirs:
        if is_eval_dir(d) or (Path(d) / "study.json").is_file():
            evals.append(d)
        elif RunDir(d).exists():
            runs.append(d)
        else:
            raise ConfigError("DIR", d, _VALID, "no such directory" if not Path(d).exists() else
                              "it has neither eval.json nor manifest.json")
    if evals and runs:
        raise ConfigError("DIR", evals[0], "either one eval or study directory or run directories, not both",
                          f"{runs[0]} is a run directory")
    if len(evals) > 1:
        raise ConfigError("DIR", evals[1], "one eval directory", "each eval directory is rebuilt on its own")
    if evals:
        if out is not None:
            raise ConfigError("--out", out, "no --out with an eval directory", "its report is rebuilt in place")
        if (Path(evals[0]) / "study.json").is_file():
            from ..report.study import build_study_report

            html_path, md_path = build_study_report(evals[0])
        else:
            html_path, md_path = build_report(evals[0])
    else:
        from ..evaluation.collect import collect_runs  # loads the training stack: only to collect runs

        target = Path(out or f"reports/report-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
        collect_runs(runs, target, overwrite=overwrite)
        html_path, md_path = target / "report.html", target / "report.md"
    click.echo(f"report: {html_path}")
    click.echo(f"markdown: {md_path}")
