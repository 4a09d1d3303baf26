"""``hasfl-sec sweep``: a grid over config axes as the cells of one study (over :mod:`hasfl_sec.evaluation.study`)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .eval import EVAL_DEFAULTS
from .options import build_config, config_options, executor_config, executor_options, exit_on_failed_cells

__all__ = ["sweep"]


@click.command()
@click.argument("grid", type=click.Path(dir_okay=False))
@config_options
@click.option("--name", help="Study name; output goes to reports/<name> [the grid's name, else its file stem].")
@click.option("-o", "--out", help="Output directory [reports/<name>].")
@click.option("--overwrite", is_flag=True, help="Replace the existing study named by --name/--out (only a study's, "
              "once the new one is complete); its finished cells are reused unless --fresh.")
@executor_options
def sweep(grid: str, config_file: str | None, overrides: tuple[str, ...], name: str | None, out: str | None,
          overwrite: bool, workers: int | None, threads: int, backend: str, address: str | None, fresh: bool,
          progress: bool | None, **options: Any) -> None:
    """Run a grid of evaluations (datasets, models, fleets, strategies, budgets, defense settings,
    seeds) as the cells of one study, with one tidy table and one report.

    GRID is a YAML/TOML/JSON file with `axes` (config keys and their lists of values; the points
    are their product), and optionally `name`, `set` (overrides every point shares) and `eval`
    (eval settings every point shares, as in eval --eval-config). The options below set the base
    config every point starts from. Each point is one evaluation in points/<id>/ with its own
    report; all their cells run together on --workers processes or Ray. Run the same sweep again
    into the same output to continue it: finished cells are reused.

    \b
    Example grid (fleets.yaml):
        set: [train.rounds=60]
        axes:
          fleet.heterogeneity: [low, high]
          seed: [0, 1, 2]
        eval: {budgets: [20], defenses: []}
    \b
        hasfl-sec sweep fleets.yaml --workers 2
        hasfl-sec sweep fleets.yaml --backend ray --address auto
    """
    from ..evaluation import EvalFailed
    from ..evaluation.study import load_grid, run_sweep
    from ..fileio import check_folder_name

    loaded = load_grid(grid)
    if name is not None:
        loaded.name = check_folder_name("--name", name)
    executor = executor_config(workers, threads, backend, address)
    given = {k: v for k, v in options.items() if v is not None}
    base = build_config(config_file, overrides, given, defaults=EVAL_DEFAULTS)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        result = run_sweep(base, loaded, out=out, overwrite=overwrite, progress=show, executor=executor, fresh=fresh)
    except EvalFailed as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    finished = int(result.points["finished"].sum()) if not result.points.empty else 0
    reused = f"; {len(result.reused)} cells reused" if result.reused else ""
    click.echo(f"{finished} of {len(result.points)} points finished; summary: {result.out / 'summary.csv'}")
    click.echo(f"report: {result.out / 'report.html'} ({result.wall_time_s:.0f} s{reused})")
    exit_on_failed_cells(result.failed, result.out, lambda row: f"{row.point}/{row.plan}")
