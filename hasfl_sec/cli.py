"""The ``hasfl-sec`` command line: a thin layer over :mod:`hasfl_sec.api`.

User mistakes (a bad config value, an unknown name, a missing data root) print one line naming
the field, the value and what is valid, and exit with code 2 -- no traceback. ``-v`` shows
tracebacks for unexpected errors and debug logging.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from . import __version__
from .errors import HasflError

__all__ = ["main", "cli"]

# Shortcut options of `train`, each mapped to the config path it overrides.
TRAIN_SHORTCUTS: dict[str, str] = {
    "seed": "seed",
    "device": "device",
    "dataset": "data.dataset",
    "data_root": "data.data_root",
    "image_size": "data.image_size",
    "partition": "data.partition",
    "alpha": "data.alpha",
    "model": "model.name",
    "devices": "fleet.num_devices",
    "heterogeneity": "fleet.heterogeneity",
    "fleet": "fleet.file",
    "strategy": "plan.strategy",
    "batch_size": "plan.batch_size",
    "cut": "plan.cut",
    "rounds": "train.rounds",
    "lr": "train.lr",
    "agg_interval": "train.agg_interval",
}


#: The order ``hasfl-sec --help`` lists the commands in: the main job first, then the pipeline.
COMMAND_ORDER = ("eval", "train", "optimize", "audit", "report", "list")


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
    See what can be chosen:
        hasfl-sec list models
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose, quiet)


def _list_value(text: str | None) -> str | None:
    """``8,16,32`` -> ``[8, 16, 32]`` (YAML), a single value unchanged."""
    if text is None or "," not in text:
        return text
    return "[" + ", ".join(part.strip() for part in text.split(",")) + "]"


CONFIG_OPTIONS = [
    click.option("-c", "--config", "config_file", help="YAML, TOML or JSON config file."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override any config value, e.g. --set train.lr=0.1 --set plan.cut=[1,2,3]. Repeatable."),
    click.option("--seed", type=int, help="Master seed; the same seed gives the same results."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where to compute [config: auto]."),
    click.option("--dataset", help="Dataset name (hasfl-sec list datasets) [digits]."),
    click.option("--data-root", type=click.Path(), help="Folder of a local dataset (cifar10, mnist, ...)."),
    click.option("--image-size", type=int, help="Resize images to this size."),
    click.option("--partition", help="iid or dirichlet [dirichlet]."),
    click.option("--alpha", type=float, help="Dirichlet concentration; smaller is more non-IID [0.5]."),
    click.option("--model", help="Model name (hasfl-sec list models) [hecnn]."),
    click.option("--devices", type=int, help="Number of edge devices N [20]."),
    click.option("--heterogeneity", help="Generated fleet: none, low, medium or high [high]."),
    click.option("--fleet", help="Fleet file (YAML/JSON/TOML) or preset name (hasfl-sec list fleets)."),
    click.option("--strategy", help="How the plan is made: hasfl, sfl, bs-only, cut-only, random, fixed, ... "
                                    "(hasfl-sec list strategies)."),
    click.option("--batch-size", help="One batch size for all devices, or a comma list with one per device."),
    click.option("--cut", help="One cut (index or block name), or a comma list (strategy fixed)."),
    click.option("--rounds", type=int, help="Training rounds [150]."),
    click.option("--lr", type=float, help="Learning rate [0.05]."),
    click.option("--agg-interval", type=int, help="Client-side aggregation interval I in rounds [5]."),
]


def config_options(func: Any) -> Any:
    """Add the options that build a config (shared by train and optimize)."""
    for option in reversed(CONFIG_OPTIONS):
        func = option(func)
    return func


def _build_config(config_file: str | None, overrides: tuple[str, ...], given: dict[str, Any],
                  defaults: tuple[str, ...] = ()) -> Any:
    from .config import load_config

    shortcut = [f"{TRAIN_SHORTCUTS[k]}={_list_value(str(v)) if k in ('batch_size', 'cut') else _yaml(v)}"
                for k, v in given.items()]
    return load_config(config_file, [*shortcut, *overrides], defaults=defaults)


@cli.command()
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
    from .runner import train as run_train
    from .errors import ConfigError

    given = {k: v for k, v in options.items() if v is not None}
    if resume and (config_file or overrides or given):
        raise ConfigError("--resume", sorted(given) or "--config/--set", "no config options",
                          "a resumed run uses the config.yaml saved in its directory")
    config = None if resume else _build_config(config_file, overrides, given)
    show = sys.stderr.isatty() if progress is None else progress
    result = run_train(config, out_dir=out, resume=resume, progress=show)
    click.echo(f"run directory: {result.run_dir}")
    click.echo(f"test accuracy: {result.final_accuracy:.4f} after {len(result.rounds)} rounds")
    click.echo(f"simulated training time: {result.sim_time_s:.4g} s   wall time: {result.wall_time_s:.1f} s")


@cli.command()
@config_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A per-device table, or one JSON object.")
@click.option("--save-bound", type=click.Path(dir_okay=False), help="Write the bound constants to this JSON file.")
def optimize(config_file: str | None, overrides: tuple[str, ...], fmt: str, save_bound: str | None,
             **options: Any) -> None:
    """Choose each device's batch size and cut, and predict the time to reach the target.

    The strategy defaults to hasfl (a config file or --strategy can name another, to compare).
    The bound constants come from a short warm-up (optimizer.warmup_rounds) calibrated against
    pilot trainings to reach optimizer.target_accuracy [0.9], or from --set
    optimizer.bound_file=FILE written by --save-bound (no warm-up then). With
    optimizer.target_accuracy=null the literal bound is used and the target is
    optimizer.target_ratio x the squared gradient norm at initialisation, or (1 +
    optimizer.floor_slack) x the smallest floor any plan reaches.

    \b
    Examples:
        hasfl-sec optimize
        hasfl-sec optimize --strategy sfl --format json
        hasfl-sec optimize --save-bound bound.json && hasfl-sec optimize --set optimizer.bound_file=bound.json
        hasfl-sec optimize --strategy hasfl-private --set privacy.budget=18

    A -private strategy plans under per-device leakage budgets (privacy.budget on
    privacy.metric, dfil_psnr dB by default) and adds columns: each device's smashed-data
    noise (absolute std and x the cut's smashed-data RMS), its predicted leakage and budget.
    """
    import json
    from pathlib import Path

    from .errors import ConfigError
    from .optimize import optimize as run_optimize

    if save_bound and not Path(save_bound).resolve().parent.is_dir():
        raise ConfigError("--save-bound", save_bound, "a file path in an existing directory")
    given = {k: v for k, v in options.items() if v is not None}
    result = run_optimize(_build_config(config_file, overrides, given, defaults=("plan.strategy=hasfl",)))
    if save_bound:
        result.bound.save(save_bound)
    plan = result.setup.plan
    noise = _plan_noise(plan)
    if fmt == "json":
        out = result.to_json_dict()
        for i, row in enumerate(out["devices"]):
            row.update({key: values[i] for key, values in noise.items()})
        if noise:
            out["privacy"] = {"metric": plan.privacy.get("metric")}
        click.echo(json.dumps(out))
        return
    frame = result.devices
    for key, values in noise.items():
        frame[key] = values
    table = frame.to_string(index=False, float_format=lambda x: f"{x:.4g}")
    click.echo(table)
    if noise:
        click.echo(f"privacy: Gaussian noise per device on its smashed data; leakage and budget in "
                   f"{plan.privacy.get('metric')} (higher = more leakage)")
    click.echo(f"strategy {result.setup.plan.strategy}: epsilon {result.epsilon:.4g}, predicted rounds "
               f"{result.rounds:.4g}, round latency {result.round_latency_s:.4g} s "
               f"(split {result.split_round_s:.4g} s + aggregation {result.aggregation_s:.4g} s every "
               f"{result.setup.config.train.agg_interval}), time to target {result.time_to_target_s:.4g} s")


def _plan_noise(plan: Any) -> dict[str, list[float]]:
    """Per-device noise columns of a privacy-constrained plan (empty for a plan without noise)."""
    if plan.noise_sigma is None:
        return {}
    p = plan.privacy
    return {"noise_sigma": list(plan.noise_sigma), "relative_sigma": list(p.get("relative_sigma", [])),
            "leakage": list(p.get("leakage", [])), "budget": list(p.get("budget", []))}


def _yaml(value: Any) -> str:
    """A shortcut option value as YAML text (strings stay strings, even '1e3'-like names)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


LISTS = ("models", "datasets", "fleets", "strategies", "partitions", "heterogeneity", "channels", "attacks", "metrics",
         "defenses")


@cli.command(name="list")
@click.argument("what", type=click.Choice(LISTS), default="models")
def list_(what: str) -> None:
    """List what can be chosen: models, datasets, fleets, strategies, partitions, heterogeneity
    levels, channels, attacks (with their threat models), metrics and defenses (``defense.use``)."""
    from .attacks import ATTACKS
    from .channel import CHANNELS
    from .data import DATASETS, PARTITIONS
    from .defenses import DEFENSES
    from .fleet import FLEETS, HETEROGENEITY
    from .metrics import METRICS
    from .models import MODELS
    from .plan import STRATEGIES

    registry = {"models": MODELS, "datasets": DATASETS, "fleets": FLEETS, "strategies": STRATEGIES,
                "partitions": PARTITIONS, "heterogeneity": HETEROGENEITY, "channels": CHANNELS,
                "attacks": ATTACKS, "metrics": METRICS, "defenses": DEFENSES}[what]
    width = max(len(n) for n in registry.names())
    for name in registry.names():
        click.echo(f"{name:<{width}}  {registry.describe(name)}")
        if what == "attacks":
            click.echo(f"{'':<{width}}  threat model: {ATTACKS.get(name).threat_model.describe()}")


from .cli_audit import audit  # noqa: E402  (a command of its own module; registered here)

cli.add_command(audit)

from .cli_eval import eval_  # noqa: E402

cli.add_command(eval_)

from .cli_report import report  # noqa: E402

cli.add_command(report)


def main() -> None:
    """Console-script entry point: click's usage errors become one line too."""
    try:
        # Without standalone mode click *returns* the code of ctx.exit(n) instead of exiting.
        code = cli.main(prog_name="hasfl-sec", standalone_mode=False)
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
