"""``hasfl-sec audit --active ATTACK``: train a run with a malicious edge server and score what it steals.

A thin layer over :func:`hasfl_sec.audit.active.run_hijack` and
:func:`hasfl_sec.audit.active_output.write_hijack`: every option is checked before any work, the
output folder is locked and probed first, and the passive audit's options are refused rather than
silently ignored.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

__all__ = ["run_active", "PASSIVE_OPTIONS"]

#: Options of the passive audit that mean nothing to an active one (parameter name -> option).
PASSIVE_OPTIONS = {"cuts": "--cuts", "victims": "--devices", "attacks": "--attacks", "seeds": "--seeds",
                   "batch_size": "--batch-size", "adaptive": "--adaptive", "preset": "--preset",
                   "checkpoint": "--checkpoint", "epochs": "--epochs"}


def _check_options(ctx: click.Context, name: str, run_dir: str | None, attack_params: dict[str, Any],
                   detectors: list[str]) -> None:
    from ..attacks.registry import ACTIVE_ATTACKS
    from ..errors import ConfigError, check

    check(name in ACTIVE_ATTACKS.names() or name == "none", "--active", name,
          [*ACTIVE_ATTACKS.names(), "none (an honest server, with --detectors)"])
    check(name != "none" or bool(detectors), "--active", name, "an active attack, or none with --detectors")
    if run_dir is not None:
        raise ConfigError("--active", name, "a config to train (--config, --set), not a finished run",
                          f"an active attack changes the training itself, so it is trained anew: hasfl-sec audit "
                          f"--active {name} --config {Path(run_dir) / 'config.yaml'}")
    for param, option in PASSIVE_OPTIONS.items():
        if ctx.get_parameter_source(param) == ParameterSource.COMMANDLINE:
            raise ConfigError(option, ctx.params[param], "no value with --active (an option of the passive audit)")
    for other in attack_params:
        check(other == name and name != "none", f"--attack-param {other}", attack_params[other],
              f"parameters of {name}, the --active attack")


def run_active(ctx: click.Context, name: str, run_dir: str | None, config_file: str | None,
               overrides: tuple[str, ...], given: dict[str, Any], attack_param_items: tuple[str, ...], images: int,
               measure_every: int, detectors: str | None, detector_param_items: tuple[str, ...], out: str | None,
               overwrite: bool, show: bool) -> None:
    """The ``--active`` path of ``hasfl-sec audit`` (see the command's help)."""
    from ..audit.active import HijackSettings, run_hijack
    from ..audit.active_output import write_hijack
    from ..fileio import check_out
    from ..locks import lock_folder
    from .options import build_config, parse_attack_params

    attack_params = parse_attack_params(attack_param_items)
    detector_names = [d.strip() for d in (detectors or "").split(",") if d.strip()]
    _check_options(ctx, name, run_dir, attack_params, detector_names)
    settings = HijackSettings(None if name == "none" else name, attack_params.get(name, {}), detector_names,
                              parse_attack_params(detector_param_items, "--detector-param"), measure_every, images)
    names = ("--", "--attack-param ")
    settings.validate(*names, detector_prefix="--detector-param ")  # before the config: its errors come first
    config = build_config(config_file, overrides, {k: v for k, v in given.items() if v is not None})
    settings.validate(*names, num_devices=config.fleet.num_devices, detector_prefix="--detector-param ",
                      rounds=config.train.rounds)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = Path(out or f"runs/active-{name}-{config.model.name}-{config.data.dataset}-{stamp}")
    with lock_folder(target, "--out"):
        check_out(target, overwrite, marker="active.json")
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.train.rounds, desc=f"{name} training", unit="round")
        try:
            result = run_hijack(config, settings, on_round=(lambda _r: bar.update(1)) if bar else None)
        finally:
            if bar is not None:
                bar.close()
        write_hijack(result, target, overwrite=overwrite, run_id=target.name, config=config.to_dict())
    _summary(result)
    click.echo(f"active audit written to {target}")


def _summary(result: Any) -> None:
    """The last measurement of each hijacked device, and the run's final accuracy."""
    last: dict[int, dict[str, Any]] = {}
    for r in result.records:
        last[r["device"]] = r
    for detector in dict.fromkeys(row["detector"] for row in result.detections):
        rows = [row for row in result.detections if row["detector"] == detector]
        caught = [_alarm(row) for row in rows if row["hijacked"]]
        false = [str(row["device"]) for row in rows if not row["hijacked"] and row["detected_round"] is not None]
        honest = sum(not row["hijacked"] for row in rows)
        hijacked = f"hijacked devices: {'; '.join(caught)}; " if caught else ""
        click.echo(f"{detector}: {hijacked}false alarms on {len(false)} of {honest} honest devices"
                   + (f" ({', '.join(false)})" if false else ""))
    for device, r in sorted(last.items()):
        kind = f", {r['device_class']}" if r.get("device_class") else ""
        click.echo(f"device {device} (cut {r['cut']}{kind}), round {r['round']}: MSE {r['mse']:.4g} (mean-image guess "
                   f"{r['baseline_mse']:.4g}), SSIM {r['ssim']:.3f} (guess {r['baseline_ssim']:.3f}), "
                   f"PSNR {r['psnr']:.2f} dB")
    accuracy = [r.test_accuracy for r in result.rounds if r.test_accuracy == r.test_accuracy]
    if accuracy:
        run = "the attacked run" if result.settings.attack else "the run"
        click.echo(f"test accuracy of {run} at the end: {accuracy[-1]:.4f}")
    click.echo(f"{result.settings.attack or 'server'}: {result.threat_model}")


def _alarm(row: dict[str, Any]) -> str:
    """``device 0 at round 42 (attacker's MSE then 0.05, SSIM 0.3)`` or ``device 0 never``."""
    if row["detected_round"] is None:
        return f"device {row['device']} never"
    leaked = (f" (attacker's MSE then {row['mse_at_detection']:.4g}, SSIM {row['ssim_at_detection']:.3f})"
              if row["mse_at_detection"] is not None else "")
    return f"device {row['device']} at round {row['detected_round']}{leaked}"
