"""Options shared by the commands that build an experiment config (train, optimize, eval, audit) and
by the commands that run cells (eval, sweep)."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["TRAIN_SHORTCUTS", "CONFIG_OPTIONS", "config_options", "build_config", "list_value", "yaml_value",
           "EXECUTOR_OPTIONS", "executor_options", "executor_config", "rerun_command",
           "exit_on_failed_cells"]


# Shortcut options of `train`, each mapped to the config path it overrides.
TRAIN_SHORTCUTS: dict[str, str] = {
    "seed": "seed",
    "device": "device",
    "dataset": "data.dataset",
    "data_root": "data.data_root",
    "image_size": "data.image_size",
    "context": "data.context",
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


def list_value(text: str | None) -> str | None:
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
    click.option("--context", type=int, help="Characters per sequence of a text dataset (pydoc, secrets) [64]."),
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


def build_config(config_file: str | None, overrides: tuple[str, ...], given: dict[str, Any],
                 defaults: tuple[str, ...] = ()) -> Any:
    """The experiment config of a command: ``defaults``, then the config file, then the shortcut
    options given (``--devices 10`` -> ``fleet.num_devices=10``), then ``--set`` overrides."""
    from ..config import load_config

    shortcut = [f"{TRAIN_SHORTCUTS[k]}={list_value(str(v)) if k in ('batch_size', 'cut') else yaml_value(v)}"
                for k, v in given.items()]
    return load_config(config_file, [*shortcut, *overrides], defaults=defaults)


def yaml_value(value: Any) -> str:
    """A shortcut option value as YAML text (strings stay strings, even '1e3'-like names)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


EXECUTOR_OPTIONS = [
    click.option("--workers", type=int, help="Cells computed at a time [as many as the cores hold at --threads "
                 "each, at most one per 2 GB of memory]."),
    click.option("--threads", type=int, default=1, show_default=True, help="Torch CPU threads per cell. Results "
                 "depend on it (summation order), not on --workers or --backend."),
    click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help='Where cells run: worker processes on this machine, or Ray tasks '
                 '(pip install "hasfl-sec[ray]").'),
    click.option("--address", help="Ray cluster to join with --backend ray (auto or host:port) [a local instance]."),
    click.option("--fresh", is_flag=True, help="Compute every cell: reuse none from an interrupted or replaced run "
                 "into the same output."),
    click.option("--progress/--no-progress", default=None, help="Progress bar over the cells [on when stderr is a "
                 "terminal]."),
]


def executor_options(func: Any) -> Any:
    """Add the options of where and how cells run (shared by eval and sweep)."""
    for option in reversed(EXECUTOR_OPTIONS):
        func = option(func)
    return func


def executor_config(workers: int | None, threads: int, backend: str, address: str | None) -> Any:
    """The validated :class:`~hasfl_sec.evaluation.ExecutorConfig` of the options."""
    from ..evaluation import ExecutorConfig

    return ExecutorConfig(backend=backend, workers=workers, threads=threads, address=address).validate()


def exit_on_failed_cells(failed: Any, out: Any, label: Any) -> None:
    """Print each failed cell (``label(row)`` names it) and the command that computes just those,
    and exit with code 1; nothing when ``failed`` (a DataFrame) is empty."""
    import sys

    if failed.empty:
        return
    for row in failed.itertuples():
        click.echo(f"failed: {label(row)}: {row.reason}", err=True)
    click.echo(f"{len(failed)} cell(s) failed; compute just those (the others are reused) with:\n"
               f"  {rerun_command(out)}", err=True)
    sys.exit(1)


def rerun_command(out: Any) -> str:
    """This command again, writing into ``out`` with --overwrite (finished cells are reused)."""
    import shlex
    import sys

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg in ("--name", "--out", "-o"):
            skip = True
            continue
        if arg.startswith(("--name=", "--out=")) or arg in ("--overwrite", "--fresh"):
            continue
        args.append(arg)
    return shlex.join(["hasfl-sec", *args, "--out", str(out), "--overwrite"])


def parse_attack_params(items: tuple[str, ...], option: str = "--attack-param") -> dict[str, dict[str, Any]]:
    """``--attack-param ATTACK.PARAM=VALUE`` items (or ``option``'s) as ``{name: {param: value}}``,
    each value read as YAML."""
    import yaml

    from ..errors import ConfigError
    from ..fileio import load_yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, param = key.rpartition(".")
        if not sep or not dot or not name or not param:
            raise ConfigError(option, item, "NAME.PARAM=VALUE, e.g. rmle.steps=500")
        try:
            out.setdefault(name, {})[param] = load_yaml(value, f"{option} {key}", value)
        except yaml.YAMLError:
            raise ConfigError(option, item, "a YAML value after '='") from None
    return out
