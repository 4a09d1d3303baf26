"""``hasfl-sec optimize``: each device's batch size and cut, and the predicted time to target."""

from __future__ import annotations

from typing import Any

import click

from .options import build_config, config_options

__all__ = ["optimize"]


@click.command()
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

    from ..errors import ConfigError
    from ..runs.prediction import optimize as run_optimize

    if save_bound and not Path(save_bound).resolve().parent.is_dir():
        raise ConfigError("--save-bound", save_bound, "a file path in an existing directory")
    given = {k: v for k, v in options.items() if v is not None}
    result = run_optimize(build_config(config_file, overrides, given, defaults=("plan.strategy=hasfl",)))
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
