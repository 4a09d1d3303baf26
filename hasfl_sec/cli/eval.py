"""``hasfl-sec eval``: the main job (a thin layer over :mod:`hasfl_sec.evaluation`)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .options import build_config, config_options, executor_config, executor_options, exit_on_failed_cells

__all__ = ["eval_"]

#: The evaluation's own config defaults: evaluate every round, so time-to-target is measured
#: at the round it happens rather than at the next scheduled evaluation; 100 rounds, so three seeds
#: of every arm fit the ten-minute budget (the default plans reach the 0.9 target well before, see
#: benchmarks/RESULTS.md; ``--set train.rounds=N`` for more).
#: The fleet is ``edge-mix`` (docs/fleets.md): boards, phones, Jetsons and laptops from documented
#: hardware and network figures, on which the default model is a plausible workload.
EVAL_DEFAULTS = ("train.eval_every=1", "train.rounds=100", "fleet.file=edge-mix")


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def _numbers(field: str, text: str | None, kind: type, valid: str) -> list | None:
    """``text`` as a comma-separated list of ``kind`` (None when not given), or a one-line error."""
    from ..errors import ConfigError

    if text is None:
        return None
    try:
        return [kind(p) for p in _split(text) or []]
    except ValueError:
        raise ConfigError(field, text, valid) from None


def _ints(field: str, text: str | None) -> list[int] | None:
    return _numbers(field, text, int, "a comma-separated list of integers")


def _floats(field: str, text: str | None) -> list[float] | None:
    return _numbers(field, text, float, "a comma-separated list of numbers (or an empty string for none)")


@click.command(name="eval")
@config_options
@click.option("--eval-config", type=click.Path(dir_okay=False), help="YAML/TOML/JSON file of eval settings "
              "(name, seeds, strategies, baselines, budgets, defenses, attacks, images, attack_params, ...).")
@click.option("--name", help="Report name; output goes to reports/<name> [the first free of reports/default, "
              "reports/default-2, ...].")
@click.option("-o", "--out", help="Output directory [reports/<name>].")
@click.option("--overwrite", is_flag=True, help="Replace the existing output directory named by --name/--out "
              "(only that one, once the new report is complete).")
@click.option("--seeds", help="Training seeds, comma-separated; every arm runs at each [0,1,2].")
@click.option("--fleet-per-seed", is_flag=True, default=None,
              help="Draw the fleet again for every seed [one fleet, from fleet.seed or the config's seed].")
@click.option("--full", is_flag=True, help="The full grid: every defense at two strengths and DP-SGD, budgets "
              "30,20,12, audited baselines, full attack settings (about an hour on two cores).")
@click.option("--strategies", help="Audited unconstrained planners, comma-separated [hasfl,sfl].")
@click.option("--baselines", help="Planners trained for the speed comparison, comma-separated; '' for none "
              "[bs-only,cut-only,random].")
@click.option("--budgets", help="Leakage budgets of privacy-constrained plans (unit: privacy.metric), "
              "comma-separated; '' for none [30,20,12].")
@click.option("--no-defenses", is_flag=True, help="Skip the defense sweep.")
@click.option("--no-active", is_flag=True, help="Skip the malicious edge server's arms (FSHA on the hasfl plan and "
              "the honest-server arm of the detectors; eval settings 'active:' tune them).")
@click.option("--attacks", help="Attacks of every audit, comma-separated [rmle,inverse-network,label-direction].")
@click.option("--images", type=int, help="Victim images per audited device [16].")
@click.option("--attack-seeds", help="Attack seeds of every audit, comma-separated [0].")
@executor_options
def eval_(config_file: str | None, overrides: tuple[str, ...], eval_config: str | None, name: str | None,
          out: str | None, overwrite: bool, seeds: str | None, fleet_per_seed: bool | None, full: bool,
          strategies: str | None, baselines: str | None, budgets: str | None, no_defenses: bool, no_active: bool,
          attacks: str | None, images: int | None, attack_seeds: str | None, workers: int | None, threads: int,
          backend: str, address: str | None, fresh: bool, progress: bool | None, **options: Any) -> None:
    """Plan, train, attack and report: the whole question in one command.

    With no arguments, on the bundled digits data and the edge-mix fleet of 20 real device classes
    (phones, boards, Jetsons, laptops over Wi-Fi, LTE and 5G; docs/fleets.md), at three training
    seeds: estimate the convergence bound per seed; make the HASFL plan, the SFL baseline's, the
    paper's other baselines (bs-only, cut-only, random) and privacy-constrained plans for each
    --budgets value; train each; train the SFL plan again under each defense setting (noise,
    NoPeek, top-k, quantization; --full adds DP-SGD and strong settings); audit every split each
    audited plan picked with each attack (adaptive attackers against defenses); train the HASFL
    plan again with a malicious edge server hijacking one device per cut and device class (FSHA),
    every device running SplitGuard and SplitOut, and once more with an honest server for the
    detectors' false alarms (--full: under every defense setting too); and write
    reports/<name>/ with report.html, report.md, the CSV tables behind them (every figure a mean
    over seeds with a 95% interval; comparisons paired over seeds), the figures and every run
    directory.
    Without --name or --out each run gets a new folder (reports/default, then reports/default-2,
    ...): an earlier report is replaced only when asked for by name with --overwrite.

    Each arm is a cell that trains, audits and writes runs/<arm>/; cells run in parallel worker
    processes (--workers) or as Ray tasks (--backend ray). An interrupted evaluation continues when
    run again into the same output (--name/--out): finished cells are reused, only the others run.
    A cell that fails is reported with its reason and the others complete; the command then exits
    with code 1. Eight to nine minutes on two cores.

    \b
    Examples:
        hasfl-sec eval
        hasfl-sec eval --budgets 20,15 --name private
        hasfl-sec eval --model vgg16 --dataset cifar10 --data-root ~/data --image-size 32
        hasfl-sec eval --eval-config eval.yaml --set train.rounds=300 --overwrite
        hasfl-sec eval --name big --workers 8 --backend ray --address auto
        hasfl-sec report reports/default          # re-render from the tables
    """
    from ..data.text import TEXT_DATASETS
    from ..evaluation import EvalFailed, headline_text, load_settings, run_eval
    from ..fileio import check_folder_name

    if name is not None:
        check_folder_name("--name", name)
    executor = executor_config(workers, threads, backend, address)
    given = {k: v for k, v in options.items() if v is not None}
    config = build_config(config_file, overrides, given, defaults=EVAL_DEFAULTS)
    settings = load_settings(eval_config, full=full, text=config.data.dataset in TEXT_DATASETS, name=name,
                             strategies=_split(strategies),
                             baselines=_split(baselines), budgets=_floats("--budgets", budgets),
                             defenses=[] if no_defenses else None, attacks=_split(attacks), images=images,
                             seeds=_ints("--seeds", seeds), attack_seeds=_ints("--attack-seeds", attack_seeds),
                             fleet_per_seed=fleet_per_seed,
                             active={"attack": None, "honest": False} if no_active else None)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        result = run_eval(config, settings, out=out, overwrite=overwrite, progress=show, executor=executor,
                          fresh=fresh)
    except EvalFailed as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    click.echo(headline_text(result.summary, result.tables["comparisons"]))
    reused = f"; {len(result.reused)} of {len(result.reused) + len(result.computed)} cells reused" \
        if result.reused else ""
    click.echo(f"report: {result.out / 'report.html'} ({result.wall_time_s:.0f} s{reused})")
    exit_on_failed_cells(result.failed, result.out, lambda row: row.plan)

