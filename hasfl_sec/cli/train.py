"""``hasfl-sec train``: one SFL run under a plan, written to a run directory."""

from __future__ import annotations

import sys
from typing import Any

import click

from .options import build_config, config_options

__all__ = ["train"]


@click.command()
@config_options
@click.option("-o", "--out", help="Run directory [default: runs/<time>-<hash>].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [on when stderr is a terminal].")
def train(config_file: str | None, overrides: tuple[str, ...], out: str | None, resume: bool,
          progress: bool | None, **options: Any) -> None:
    """Train a model with HASFL split federated learning and write a run directory.

    The run directory holds config.yaml, manifest.json, plan.json, fleet.yaml, profile.csv,
    rounds.csv (loss, accuracy, simulated and wall time per round), metrics.csv (long format)
    and checkpoint.pt. Settings come from the defaults, then --config, then the options
    below, then --set. Every setting is listed in the config.yaml of a run.

    \b
    Examples:
        hasfl-sec train
        hasfl-sec train --rounds 50 --devices 10 --heterogeneity medium --out runs/demo
        hasfl-sec train --strategy hasfl --out runs/hasfl
        hasfl-sec train --strategy fixed --cut 1,2,3,4 --devices 4 --batch-size 8
        hasfl-sec train --out runs/demo --resume
    """
    from ..errors import ConfigError
    from ..runs.training import train as run_train

    given = {k: v for k, v in options.items() if v is not None}
    if resume and (config_file or overrides or given):
        raise ConfigError("--resume", sorted(given) or "--config/--set", "no config options",
                          "a resumed run uses the config.yaml saved in its directory")
    config = None if resume else build_config(config_file, overrides, given)
    show = sys.stderr.isatty() if progress is None else progress
    result = run_train(config, out_dir=out, resume=resume, progress=show)
    click.echo(f"run directory: {result.run_dir}")
    click.echo(f"test accuracy: {result.final_accuracy:.4f} after {len(result.rounds)} rounds")
    click.echo(f"simulated training time: {result.sim_time_s:.4g} s   wall time: {result.wall_time_s:.1f} s")
