"""``hasfl-sec list``: what can be chosen, from the registries."""

from __future__ import annotations

import click

__all__ = ["list_", "LISTS"]


LISTS = ("models", "datasets", "fleets", "device-classes", "link-classes", "server-classes", "strategies",
         "partitions", "heterogeneity", "channels", "attacks", "active-attacks", "metrics",
         "defenses", "detectors", "executions", "backends")


@click.command(name="list")
@click.argument("what", type=click.Choice(LISTS), default="models")
def list_(what: str) -> None:
    """List what can be chosen: models, datasets, fleets (presets), the device, link and server
    classes real-device presets and ``compose:`` fleet files draw from (with their sources),
    strategies, partitions, heterogeneity levels, channels, attacks and active attacks
    (``audit --active``; with their threat models), metrics, defenses (``defense.use``), detectors
    (``audit --detectors``), executions (``train.execution``) and backends (``eval --backend``)."""
    from ..attacks.registry import ACTIVE_ATTACKS, ATTACKS
    from ..data.datasets import DATASETS
    from ..data.partitioning import PARTITIONS
    from ..defenses.registry import DEFENSES, DETECTORS
    from ..evaluation.executors import EXECUTORS
    from ..fleet import DEVICE_CLASSES, FLEETS, HETEROGENEITY, LINK_CLASSES, SERVER_CLASSES
    from ..fleet.channel import CHANNELS
    from ..metrics import METRICS
    from ..models import MODELS
    from ..planning.strategies import STRATEGIES
    from ..sfl.trainer import EXECUTIONS

    registry = {"models": MODELS, "datasets": DATASETS, "fleets": FLEETS, "device-classes": DEVICE_CLASSES,
                "link-classes": LINK_CLASSES, "server-classes": SERVER_CLASSES, "strategies": STRATEGIES,
                "partitions": PARTITIONS, "heterogeneity": HETEROGENEITY, "channels": CHANNELS,
                "attacks": ATTACKS, "active-attacks": ACTIVE_ATTACKS, "metrics": METRICS, "defenses": DEFENSES,
                "detectors": DETECTORS, "executions": EXECUTIONS, "backends": EXECUTORS}[what]
    width = max(len(n) for n in registry.names())
    for name in registry.names():
        click.echo(f"{name:<{width}}  {registry.describe(name)}")
        if what in ("attacks", "active-attacks"):
            click.echo(f"{'':<{width}}  threat model: {registry.get(name).threat_model.describe()}")
