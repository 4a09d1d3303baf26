"""Where the audit's victims come from: a finished training run, or a bare model.

:func:`audit_run` reads a ``hasfl-sec train`` run directory, restores its trainer from the last
checkpoint, and records a few more rounds of the devices at the plan's cuts (:func:`victims.replay`);
cuts the plan did not use are attacked on the aggregated model through a simulated device.
:func:`audit_model` builds a model, trains it centrally (or loads a state dict), and simulates a
device at each requested cut. Both then call :func:`hasfl_sec.audit.engine.audit_traces`.

The config's ``defense`` section reaches every trace: the replayed trainer applies the run's
defenses (and resumes their state, such as the noise generators, from the checkpoint), and
simulated devices apply a fresh copy of them. The attacker's copy, for adaptive attacks, is built
with another seed label (``"attacker"``), so it never reuses the victims' random draws.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..config import ExperimentConfig
from ..data.datasets import ImageDataset
from ..data.text import TEXT_DATASETS
from ..defenses.base import DefenseStack
from ..defenses.build import build_defenses, describe_defenses
from ..errors import ConfigError
from ..models import SplitModel, build_model
from ..models.central import train_central
from ..models.zoo import check_modality
from ..runs.checkpoints import check_devices, check_state, load_weights, restore_trainer
from ..runs.files import load_run
from ..runs.limits import meta_model
from ..runs.setup import Setup, config_dataset, prepare, resolve_device
from ..runs.training import TrainResult
from ..seeding import derive_seed, torch_generator
from ..sfl.trainer import SFLTrainer
from .config import AuditConfig, AuditEnv
from .engine import AuditResult, audit_traces, check_attacks, trace_rounds_needed
from .victims import Trace, replay, simulate

__all__ = ["audit_run", "audit_trained", "audit_model", "collect_run", "collect_traces", "RunTraces", "resolve_cuts"]

logger = logging.getLogger(__name__)


def resolve_cuts(model: SplitModel, cuts: str | Sequence[int | str], planned: Sequence[int]) -> list[int]:
    """``"plan"`` -> the planned cuts, ``"all"`` -> every legal cut, else each cut validated."""
    if cuts == "plan":
        return sorted(set(planned))
    if cuts == "all":
        return list(model.legal_cuts)
    if isinstance(cuts, str):
        raise ConfigError("--cuts", cuts, "plan, all, or a comma-separated list of cuts")
    return sorted({model.resolve_cut(c, field="--cuts") for c in cuts})


def _build(cfg: ExperimentConfig, dataset: ImageDataset, seed_label: str) -> SplitModel:
    torch.manual_seed(derive_seed(cfg.seed, seed_label))
    m = cfg.model
    return build_model(m.name, in_channels=dataset.in_channels, num_classes=dataset.num_classes,
                       image_size=dataset.image_size, norm=m.norm, width=m.width, dropout=m.dropout)


def _defense(cfg: ExperimentConfig, label: str, seed: int | None = None) -> DefenseStack:
    """The config's defenses as one stack, seeded from ``seed`` (default the run's) and ``label``."""
    return DefenseStack(build_defenses(cfg.defense, seed=cfg.seed if seed is None else seed, label=label))


DefenseSource = Callable[[str, "int | None"], DefenseStack]


def _config_defenses(cfg: ExperimentConfig) -> DefenseSource:
    """Builds the config's defenses (a bare model has no plan, hence no plan noise)."""
    return lambda label, seed=None: _defense(cfg, label, seed)


def _setup_defenses(setup: Setup) -> DefenseSource:
    """Builds what a run applied: its config's defenses and its plan's per-device noise."""
    return lambda label, seed=None: DefenseStack(setup.defenses(label, seed))


def _env(cfg: ExperimentConfig, dataset: ImageDataset, run_id: str, device: torch.device,
         defenses: DefenseSource | None = None, label: str | None = None) -> AuditEnv:
    """The audit environment; defenses default to the config's (a bare model's)."""
    defenses = defenses or _config_defenses(cfg)
    label = label if label is not None else describe_defenses(cfg.defense)
    template = _build(cfg, dataset, "attacker-template")  # an untrained copy: architecture only
    return AuditEnv(
        run_id=run_id, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
        auxiliary=dataset.x_test, auxiliary_labels=dataset.y_test,
        fresh_client=lambda cut: template.client_part(cut),
        client_optimizer={"lr": cfg.train.lr, "momentum": cfg.train.momentum,
                          "weight_decay": cfg.train.weight_decay},
        seed=cfg.seed, device=device, defense=label,
        attacker_defense=lambda seed: defenses("attacker", seed),
        secret_mask=getattr(dataset, "secret_train", None), vocab=getattr(dataset, "vocab", None),
    )


def _simulated(blocks: Sequence[nn.Module], cuts: Sequence[int], dataset: ImageDataset, cfg: ExperimentConfig,
               audit: AuditConfig, trained_rounds: int, device: torch.device, defenses: DefenseSource) -> list[Trace]:
    """A simulated device at each cut, on the same seeded draw of training images, applying the
    config's defenses (a fresh copy per cut, so a cut's noise does not depend on the others)."""
    b = audit.batch_size
    if b < 1:
        raise ConfigError("--batch-size", b, "an integer >= 1")
    n = trace_rounds_needed(b, audit.images, cfg.train.agg_interval) * b
    if n > len(dataset.y_train):
        raise ConfigError("--images", audit.images, f"at most about {len(dataset.y_train) // 2} for this dataset")
    idx = torch.randperm(len(dataset.y_train), generator=torch_generator(cfg.seed, "audit-victims"))[:n]
    x, y = dataset.x_train[idx].to(device), dataset.y_train[idx].to(device)
    return [simulate(blocks, c, x, y, idx, b, cfg.train, trained_rounds=trained_rounds,
                     defense=defenses("simulated-device", None)) for c in cuts]


@dataclass
class RunTraces:
    """What :func:`collect_run` gathered: the victims' traces, the audit environment, and the run."""

    traces: list[Trace]
    env: AuditEnv
    config: ExperimentConfig
    run_dir: Path
    trained_rounds: int


def collect_run(path: str | Path, audit: AuditConfig, *, device: str | None = None) -> RunTraces:
    """The traces :func:`audit_run` attacks: replayed devices at the planned cuts, simulated ones elsewhere."""
    saved = load_run(path)
    cfg = saved.config
    if device is not None:
        cfg.device = device
    check_attacks(audit, cfg.train.share_labels)
    check_devices(saved.checkpoint, saved.fleet.num_devices, saved.path / "checkpoint.pt", "RUN_DIR")
    setup = prepare(cfg, fleet=saved.fleet, plan=saved.plan)
    trainer = setup.trainer()  # with the run's defenses; load_state_dict restores their state
    restore_trainer(trainer, saved.checkpoint, saved.path / "checkpoint.pt", "RUN_DIR")
    return collect_traces(setup, trainer, audit, run_id=saved.run_id, run_dir=saved.path)


def collect_traces(setup: Setup, trainer: SFLTrainer, audit: AuditConfig, *, run_id: str, run_dir: Path
                   ) -> RunTraces:
    """The traces of a run whose ``setup`` and trained ``trainer`` are at hand (the trainer is advanced
    by the replay): replayed devices at the planned cuts, simulated ones at other cuts."""
    cfg = setup.config
    check_attacks(audit, cfg.train.share_labels)
    cuts = resolve_cuts(setup.model, audit.cuts, trainer.cuts)
    if audit.devices == "first":
        devices = [trainer.cuts.index(c) for c in cuts if c in trainer.cuts]
    elif audit.devices == "all":
        devices = [d for d in range(trainer.n) if trainer.cuts[d] in cuts]
    else:
        bad = [d for d in audit.devices if not 0 <= int(d) < trainer.n]
        if bad:
            raise ConfigError("--devices", bad[0], f"device ids 0..{trainer.n - 1}, 'first' or 'all'")
        devices = sorted({int(d) for d in audit.devices})
        cuts = sorted(set(cuts) | {trainer.cuts[d] for d in devices}) if audit.cuts == "plan" else cuts
    defenses = _setup_defenses(setup)
    env = _env(cfg, setup.dataset, run_id, setup.device, defenses, setup.defense_label())
    traces: list[Trace] = []
    unplanned = [c for c in cuts if c not in {trainer.cuts[d] for d in devices}]
    if unplanned and setup.plan.noisy:  # the planner chose noise per (device, cut); elsewhere it has none
        raise ConfigError("--cuts", audit.cuts, "plan, or cuts some device of this privacy-constrained plan uses",
                          f"cut(s) {unplanned} have no planned noise level; profile them on the bare model with "
                          "hasfl-sec audit --model ... --set defense.use=[noise] --set defense.noise.sigma=S")
    if unplanned:  # taken before the replay advances the trainer: the model the run ended with
        blocks = list(trainer.global_model())
        traces += _simulated(blocks, unplanned, setup.dataset, cfg, audit, trainer.round, setup.device, defenses)
    if devices:
        rounds = max(trace_rounds_needed(trainer.batch_sizes[d], audit.images, cfg.train.agg_interval)
                     for d in devices)
        logger.info("audit: replaying %d rounds of devices %s", rounds, devices)
        traces += replay(trainer, devices, rounds)
    traces.sort(key=lambda t: (t.cut, t.device))
    trained = trainer.round if not devices else min(t.trained_rounds for t in traces if t.source == "replay")
    return RunTraces(traces, env, cfg, Path(run_dir), trained)


def audit_run(path: str | Path, audit: AuditConfig, *, progress: bool = False,
              device: str | None = None) -> AuditResult:
    """Audit a finished training run; see the module docstring.

    Reading takes no lock; to keep a ``train --resume`` of the run from writing it meanwhile, hold
    :func:`hasfl_sec.locks.lock_folder` on the run around this call and :func:`~hasfl_sec.audit.output.write_audit`,
    as ``hasfl-sec audit RUN_DIR`` does.
    """
    return _audit(collect_run(path, audit, device=device), audit, progress)


def audit_trained(result: TrainResult, audit: AuditConfig, *, progress: bool = False) -> AuditResult:
    """Audit a run trained in this process (``hasfl-sec eval``): its setup and final trainer are used
    as they are, instead of reading the run directory back and setting the run up again. The
    figures equal those :func:`audit_run` gives for the run's directory (tested).

    The replay advances the trainer, so a result can be audited once: afterwards its ``trainer``
    and ``setup`` are released (set to None) and a second call raises ValueError; audit the run
    directory with :func:`audit_run` as often as needed.
    """
    if result.setup is None or result.trainer is None:
        raise ValueError("audit_trained: this TrainResult has no trainer to audit (it was audited already, or "
                         "does not come from hasfl_sec.runs.training.train); use audit_run(result.run_dir, ...)")
    run = collect_traces(result.setup, result.trainer, audit, run_id=result.run_id, run_dir=result.run_dir)
    result.trainer = result.setup = None
    return _audit(run, audit, progress)


def _audit(run: RunTraces, audit: AuditConfig, progress: bool) -> AuditResult:
    result = audit_traces(run.traces, run.env, audit, progress=progress)
    result.meta.update(source="run", run_dir=str(run.run_dir), model=run.config.model.name,
                       dataset=run.config.data.dataset, trained_rounds=run.trained_rounds)
    return result


def audit_model(cfg: ExperimentConfig, audit: AuditConfig, *, checkpoint: str | Path | None = None,
                epochs: int = 20, progress: bool = False) -> tuple[AuditResult, SplitModel]:
    """Profile a bare model over its cuts: central training (or a state dict), simulated devices."""
    cfg = cfg.validate()
    check_modality(cfg.model.name, cfg.data.dataset, TEXT_DATASETS)
    check_attacks(audit, cfg.train.share_labels)
    if epochs < 0:
        raise ConfigError("--epochs", epochs, "an integer >= 0")
    device = resolve_device(cfg.device)
    d = cfg.data
    what = f"a state dict of {cfg.model.name} for {d.dataset} saved with torch.save(model.state_dict(), path)"
    state = None if checkpoint is None else load_weights(checkpoint, "--checkpoint", what)
    if state is not None and (shape := meta_model(cfg)) is not None:  # refused before the data are read
        check_state(state, shape, "--checkpoint", Path(checkpoint), what)
    dataset = config_dataset(cfg)
    model = _build(cfg, dataset, "model")
    cuts = resolve_cuts(model, "all" if audit.cuts == "plan" else audit.cuts, [])
    if state is not None:
        check_state(state, model, "--checkpoint", Path(checkpoint), what)
        model.load_state_dict(state)
        accuracy, trained = float("nan"), "checkpoint"
    else:
        accuracy = train_central(model, dataset, epochs=epochs, seed=cfg.seed, device=device, progress=progress)
        trained = f"central, {epochs} epochs"
    logger.info("bare model %s on %s (%s), test accuracy %.4f", cfg.model.name, d.dataset, trained, accuracy)
    run_id = f"{cfg.model.name}-{d.dataset}-bare"
    defenses = _config_defenses(cfg)
    env = _env(cfg, dataset, run_id, device, defenses)
    traces = _simulated(list(model.to(device).blocks), cuts, dataset, cfg, audit, 0, device, defenses)
    result = audit_traces(traces, env, audit, progress=progress)
    result.meta.update(source="model", model=cfg.model.name, dataset=d.dataset, training=trained,
                       test_accuracy=accuracy, checkpoint=str(checkpoint) if checkpoint else None)
    return result, model
