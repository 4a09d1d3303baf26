"""Options shared by the commands that build an experiment config (train, optimize, eval, audit)."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["TRAIN_SHORTCUTS", "CONFIG_OPTIONS", "config_options", "build_config", "list_value", "yaml_value"]


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
