"""``hasfl-sec audit``: what each device leaks at its cut (a thin layer over :mod:`hasfl_sec.audit.entry`)."""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["audit"]


def _int_list(field: str, text: str) -> list[int]:
    from ..errors import ConfigError

    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(field, text, "a comma-separated list of integers") from None


def _choice_or_list(field: str, text: str | None, words: tuple[str, ...]) -> Any:
    if text is None or text in words:
        return text
    return _int_list(field, text)


@click.command()
@click.argument("run_dir", required=False, type=click.Path())
@click.option("--model", help="Audit a bare model instead of a run (hasfl-sec list models) [hecnn].")
@click.option("--dataset", help="Dataset of the bare model (hasfl-sec list datasets) [digits].")
@click.option("-c", "--config", "config_file", help="Config file for the bare model (YAML/TOML/JSON).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override for the bare model.")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Bare model: a state dict to attack instead of training centrally.")
@click.option("--epochs", type=int, default=20, show_default=True, help="Bare model: central training epochs.")
@click.option("--cuts", help="plan (the cuts the run used), all, or a list like 1,3,5 [run: plan; model: all].")
@click.option("--devices", "victims", default="first", show_default=True,
              help="Victims at the planned cuts: first (one device per cut), all, or ids like 0,4.")
@click.option("--attacks", default="all", show_default=True,
              help="Comma list of attacks (hasfl-sec list attacks), or all.")
@click.option("--images", type=int, default=64, show_default=True, help="Victim images per device and cut.")
@click.option("--seeds", default="0", show_default=True, help="Attack seeds, comma-separated; metrics pool them.")
@click.option("--batch-size", type=int, default=16, show_default=True,
              help="Batch size of simulated devices (cuts outside the plan, bare models).")
@click.option("--attack-param", "attack_params", multiple=True, metavar="ATTACK.PARAM=VALUE",
              help="Override an attack parameter, e.g. rmle.steps=500. Repeatable.")
@click.option("--adaptive", default="auto", show_default=True,
              help="Against a defense: run attacks that can adapt both unaware and adaptive (auto; rows "
                   "ATTACK and ATTACK+adaptive), only unaware (off), or only adaptive (only).")
@click.option("--preset", default="full", show_default=True,
              help="Attack parameters: the defaults (full) or fewer optimisation/training steps (fast); "
                   "--attack-param overrides either.")
@click.option("--active", help="Train the config's run with an active attack as the edge server instead "
                                "(hasfl-sec list active-attacks), e.g. fsha, or none; parameters with --attack-param.")
@click.option("--measure-every", type=int, default=10, show_default=True,
              help="--active: score the attacker's reconstructions every this many rounds.")
@click.option("--detectors", help="--active: comma list of detectors the devices run (hasfl-sec list detectors), "
                                  "e.g. splitguard,splitout; with --active none, against an honest server.")
@click.option("--detector-param", "detector_params", multiple=True, metavar="DETECTOR.PARAM=VALUE",
              help="--active: a detector's parameter, e.g. splitguard.p_fake=0.2. Repeatable.")
@click.option("--seed", type=int, help="Bare model: master seed.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where to compute.")
@click.option("--threads", type=int, help="Torch CPU threads [torch's default]; 1 is often fastest for the small "
                                          "default models on a busy machine.")
@click.option("-o", "--out", help="Output directory [RUN_DIR/audit, or runs/audit-<model>-<dataset>-<time>].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [on when stderr is a terminal].")
def audit(run_dir: str | None, model: str | None, dataset: str | None, config_file: str | None,
          overrides: tuple[str, ...], checkpoint: str | None, epochs: int, cuts: str | None, victims: str,
          attacks: str, images: int, seeds: str, batch_size: int, attack_params: tuple[str, ...],
          adaptive: str, preset: str, active: str | None, measure_every: int, detectors: str | None,
          detector_params: tuple[str, ...], seed: int | None, device: str | None,
          threads: int | None, out: str | None, overwrite: bool, progress: bool | None) -> None:
    """Attack what each device sends across its cut, and measure the leakage per split point.

    With RUN_DIR (a run of hasfl-sec train) the run continues from its checkpoint for a few
    rounds with the cut-layer tap on, and the devices at the cuts its plan used are attacked;
    other cuts (--cuts all) are attacked on the run's aggregated model through a simulated
    device. Without RUN_DIR a bare model is profiled over its cuts: trained centrally (or loaded
    with --checkpoint) and attacked through a simulated device at every cut; --set defense.use=...
    gives it a defense.

    A run's defense (its config's defense section) is applied to everything the attacks see.
    Against a defense, attacks that can adapt also run as ATTACK+adaptive: knowing the defense
    and its parameters (not the victims' random draws), e.g. an inverse network trained on
    defended smashed data (--adaptive).

    With --active ATTACK (fsha: feature-space hijacking) the edge server is malicious: the
    config's run is trained with the attack altering the gradients it returns, and the attacker's
    reconstructions of the hijacked devices' private batches are scored every --measure-every
    rounds (metrics.csv, hijack_mse.png, active.json). With --detectors the devices run SplitGuard
    and/or SplitOut against it; each detector's round of detection per device and the attacker's
    reconstruction quality at that round go to detections.csv (--active none: an honest server,
    for the detectors' false alarms). An attacked training is another training, so a finished run
    cannot be attacked this way: give its --config instead.

    Every attack sees only what its threat model grants (hasfl-sec list attacks). The output
    directory holds leakage.csv (mean, std and count over images and seeds per device, cut,
    attack and metric), audit.json, a figure of each metric against cut depth and grids of
    originals against reconstructions.

    \b
    Examples:
        hasfl-sec train --out runs/demo && hasfl-sec audit runs/demo
        hasfl-sec audit runs/demo --cuts all --attacks rmle,inverse-network --images 32
        hasfl-sec audit --model hecnn --dataset lfw --cuts all --seeds 0,1,2
        hasfl-sec audit runs/demo --attack-param rmle.steps=500 --out runs/demo/audit-fast
        hasfl-sec audit --model hecnn --dataset digits --set defense.use=[noise] --set defense.noise.sigma=0.3
        hasfl-sec audit --active fsha --set train.rounds=200 --attack-param fsha.devices=[0]
        hasfl-sec audit --active fsha --detectors splitguard,splitout --set train.rounds=200
    """
    from ..audit.config import AuditConfig
    from ..audit.entry import audit_model, audit_run
    from ..audit.output import audit_lock_target, summary_tables, write_audit
    from ..errors import ConfigError, check_count, check_threads
    from ..fileio import check_out
    from ..locks import lock_folder
    from .options import build_config, parse_attack_params

    bare = run_dir is None
    if threads is not None:
        import torch

        torch.set_num_threads(check_threads("--threads", threads))
    check_count("--epochs", epochs, low=0)
    if active is not None:
        from .active import run_active

        run_active(click.get_current_context(), active, run_dir, config_file, overrides,
                   {"model": model, "dataset": dataset, "seed": seed, "device": device}, attack_params, images,
                   measure_every, detectors, detector_params, out, overwrite,
                   show=sys.stderr.isatty() if progress is None else progress)
        return
    if click.get_current_context().get_parameter_source("measure_every") == click.core.ParameterSource.COMMANDLINE:
        raise ConfigError("--measure-every", measure_every, "no value without --active (it paces an active attack)")
    for option, value in (("--detectors", detectors), ("--detector-param", detector_params)):
        if value:
            raise ConfigError(option, value[0] if isinstance(value, tuple) else value,
                              "no value without --active (detectors watch a training run)")
    if not bare and (model or dataset or config_file or overrides or checkpoint or seed is not None):
        raise ConfigError("RUN_DIR", run_dir, "either a run directory or --model/--dataset/--config, not both",
                          "a run is audited with its own config")
    names = None if attacks == "all" else [a.strip() for a in attacks.split(",") if a.strip()]
    cfg_audit = AuditConfig(
        attacks=names, cuts=_choice_or_list("--cuts", cuts, ("plan", "all")) or ("all" if bare else "plan"),
        devices=_choice_or_list("--devices", victims, ("first", "all")), images=images,
        seeds=_int_list("--seeds", seeds), batch_size=batch_size, attack_params=parse_attack_params(attack_params),
        adaptive=adaptive, preset=preset,
    ).validate("--", "--attack-param ")
    show = sys.stderr.isatty() if progress is None else progress
    if bare:
        given = {k: v for k, v in {"model": model, "dataset": dataset, "seed": seed, "device": device}.items()
                 if v is not None}
        config = build_config(config_file, overrides, given)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = Path(out or f"runs/audit-{config.model.name}-{config.data.dataset}-{stamp}")
    else:
        target = Path(out or Path(run_dir) / "audit")
    # held for the whole audit, from the output check on: a second audit of the run (or a
    # train --resume of it) is refused at once, not after minutes of attacks
    with lock_folder(*audit_lock_target(target, run_dir)):
        check_out(target, overwrite, marker="audit.json")
        if bare:
            result, trained = audit_model(config, cfg_audit, checkpoint=checkpoint, epochs=epochs, progress=show)
        else:
            result = audit_run(run_dir, cfg_audit, progress=show, device=device)
        saved = {"model.pt": trained.state_dict()} if bare and checkpoint is None else None
        write_audit(result, target, overwrite=overwrite, tensors=saved)
    for group, table in summary_tables(result.frame).items():
        click.echo(f"{group} (means over images and seeds; wall_time_s in seconds):")
        click.echo(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        click.echo("")
    for name, threat in result.meta["attacks"].items():
        click.echo(f"{name}: {threat}")
    for reason in result.skipped:
        click.echo(f"skipped: {reason}")
    click.echo(f"audit written to {target}")
