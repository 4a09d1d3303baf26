"""The ``hasfl-sec`` group and entry point: wires the commands (one module each) together.

User mistakes (a bad config value, an unknown name, a missing data root) print one line naming
the field, the value and what is valid, and exit with code 2 -- no traceback. ``-v`` shows
tracebacks for unexpected errors and debug logging.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from .. import __version__
from ..errors import HasflError
from .audit import audit
from .eval import eval_
from .listing import list_
from .optimize import optimize
from .report import report
from .sweep import sweep
from .train import train

__all__ = ["main", "cli"]


#: The order ``hasfl-sec --help`` lists the commands in: the main job first, then the pipeline.
COMMAND_ORDER = ("eval", "sweep", "train", "optimize", "audit", "report", "list")


class _Group(click.Group):
    """Lists commands in pipeline order (``eval`` first) and turns hasfl-sec's own errors into
    one-line messages with exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(self.commands, key=lambda name: (rank.get(name, len(rank)), name))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HasflError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hasfl-sec")
@click.option("-v", "--verbose", count=True, help="More logging; show tracebacks of unexpected errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Privacy and security analysis of heterogeneity-aware split federated learning (HASFL).

    \b
    The main job: plan, train, attack every split the plans picked, weigh defenses, and write a
    report (bundled digits data, 20 heterogeneous devices, about five minutes on two cores):
        hasfl-sec eval
    Train one run with the built-in defaults:
        hasfl-sec train
    Choose each device's batch size and cut:
        hasfl-sec optimize
    Measure what each device leaks at its cut:
        hasfl-sec audit RUN_DIR
    A grid of evaluations (datasets, models, fleets, seeds, ...) as one study:
        hasfl-sec sweep GRID.yaml
    See what can be chosen:
        hasfl-sec list models
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose, quiet)


for _command in (eval_, sweep, train, optimize, audit, report, list_):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``argv``: the arguments, default ``sys.argv[1:]``); click's
    usage errors become one line too."""
    try:
        # Without standalone mode click *returns* the code of ctx.exit(n) instead of exiting.
        code = cli.main(argv, prog_name="hasfl-sec", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
