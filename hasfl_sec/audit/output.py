"""Writing an audit: ``leakage.csv``, ``audit.json``, a figure per metric, and reconstruction grids.

Everything is rendered in a temporary sibling directory first and renamed into place at the end,
so an interrupted audit leaves no half-written output directory behind. While it writes, the
audit holds the folder lock (:mod:`hasfl_sec.locks`) of the audited run when the output lies
inside the run (``RUN_DIR/audit``), else of the output folder (:func:`audit_lock_target`).

Layout::

    OUT/
      leakage.csv                 long format (hasfl_sec.results.LEAKAGE_COLUMNS)
      audit.json                  threat models, parameters, timings, skipped attacks, traces
      leakage_<metric>.png        the metric against cut depth, one line per attack
      reconstructions_<attack>.png  originals (top row) and reconstructions, one row pair per cut
      model.pt                    bare-model audits trained here: the model's state dict (--checkpoint)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..fileio import check_out, publish_dir, work_dir  # noqa: E402
from ..locks import lock_folder  # noqa: E402
from .engine import AuditResult  # noqa: E402

__all__ = ["write_audit", "audit_lock_target", "summary_tables", "reconstruction_grid", "reconstruction_text",
           "FIGURE_METRICS",
           "SUMMARY_GROUPS"]

#: metrics drawn against cut depth when present.
FIGURE_METRICS = ("ssim", "psnr", "mse", "token_accuracy", "secret_recovery", "rouge_l", "label_accuracy", "dcor",
                  "dfil_mse_bound")


def _metric_figure(frame: pd.DataFrame, metric: str, path: Path) -> None:
    rows = frame[frame.metric == metric]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for attack, part in rows.groupby("attack"):
        part = part.groupby("cut", as_index=False).agg(value=("value", "mean"), std=("std", "mean"))
        ax.errorbar(part.cut, part.value, yerr=part["std"], marker="o", capsize=3, label=attack)
    ax.set_xlabel("cut (blocks on the device)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against cut depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reconstruction_grid(samples: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]], attack: str,
                        path: Path) -> None:
    """Originals above reconstructions, one row pair per (device, cut) of ``attack`` in ``samples``."""
    keys = sorted(k for k in samples if k[2] == attack)
    n = max(len(samples[k][0]) for k in keys)
    fig, axes = plt.subplots(2 * len(keys), n, figsize=(1.1 * n, 2.3 * len(keys)), squeeze=False)
    for r, key in enumerate(keys):
        truth, recon = samples[key]
        for row, images, label in ((2 * r, truth, "original"), (2 * r + 1, recon, f"cut {key[1]}")):
            for j in range(n):
                ax = axes[row][j]
                ax.axis("off")
                if j < len(images):
                    img = images[j].clamp(0, 1).numpy()
                    ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            axes[row][0].set_title(f"{label} (device {key[0]})" if row % 2 else label, fontsize=7, loc="left")
    fig.suptitle(f"{attack}: originals and reconstructions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reconstruction_text(samples: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]], attack: str,
                        vocab: list[str] | tuple[str, ...], path: Path) -> None:
    """Text tasks: each original sequence above what ``attack`` recovered, per (device, cut);
    line breaks and tabs shown as the characters they are escaped to, so one sequence is one line."""
    lines = [f"{attack}: originals and recovered sequences"]
    for key in sorted(k for k in samples if k[2] == attack):
        truth, recon = samples[key]
        lines.append(f"\n== device {key[0]}, cut {key[1]}")
        for t, r in zip(truth, recon):
            for label, ids in (("original ", t), ("recovered", r)):
                text = "".join(vocab[int(i)] for i in ids)
                lines.append(f"{label} | {text.encode('unicode_escape').decode('ascii')}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def audit_lock_target(out: str | Path, run_dir: str | Path | None) -> tuple[Path, str]:
    """The folder to lock while an audit writes ``out``, and the option it came from: the audited
    run ``run_dir`` when ``out`` lies inside it (so a ``train --resume`` or a second audit of the
    run is refused), else ``out`` itself: the run is only read then, and other audits may read it too."""
    out = Path(out)
    if run_dir is not None:
        run = Path(run_dir).resolve()
        if run == out.resolve() or run in out.resolve().parents:
            return Path(run_dir), "RUN_DIR"
    return out, "--out"


def write_audit(result: AuditResult, out: str | Path, *, overwrite: bool = False,
                tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write the audit to ``out`` (see the module docstring); returns the directory.

    ``tensors`` are further files saved with ``torch.save`` inside the same atomic write (the
    bare-model audit's ``model.pt``). The folder :func:`audit_lock_target` names is locked while
    writing; a caller that locked it already (the CLI, for the whole audit) keeps its lock.

    Raises:
        ConfigError: ``out`` cannot be written (:func:`~hasfl_sec.fileio.check_out`), or another
            process is writing the locked folder.
    """
    out = Path(out)
    run_dir = result.meta.get("run_dir") if result.meta.get("source") == "run" else None
    with lock_folder(*audit_lock_target(out, run_dir)):
        return _write_locked(result, out, overwrite, tensors)


def _write_locked(result: AuditResult, out: Path, overwrite: bool,
                  tensors: dict[str, dict[str, torch.Tensor]] | None) -> Path:
    """:func:`write_audit` once the audit's folder is locked."""
    check_out(out, overwrite, marker="audit.json")
    tmp = work_dir(out)
    try:
        result.frame.to_csv(tmp / "leakage.csv", index=False)
        (tmp / "audit.json").write_text(json.dumps(result.meta, indent=2, default=str) + "\n")
        for metric in FIGURE_METRICS:
            if (result.frame.metric == metric).any():
                _metric_figure(result.frame, metric, tmp / f"leakage_{metric}.png")
        vocab = result.meta.get("vocab")
        for attack in sorted({k[2] for k in result.samples}):
            if vocab:
                reconstruction_text(result.samples, attack, vocab, tmp / f"reconstructions_{attack}.txt")
            else:
                reconstruction_grid(result.samples, attack, tmp / f"reconstructions_{attack}.png")
        for name, state in (tensors or {}).items():
            torch.save(state, tmp / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, out)
    return out


#: The summary's three tables: reconstructions, label inference, attack-independent figures.
SUMMARY_GROUPS = {
    "reconstruction": ["ssim", "psnr", "mse", "identifiability", "wall_time_s"],
    "text": ["token_accuracy", "rouge_l", "secret_recovery", "secret_token_accuracy", "wall_time_s"],
    "labels": ["label_accuracy", "label_auc", "wall_time_s"],
    "attack-independent": ["dcor", "nhsic", "ksg", "dfil", "dfil_mse_bound", "wall_time_s"],
}


def summary_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per group of :data:`SUMMARY_GROUPS`, one row per (cut, device, attack) with the group's
    metrics as columns (means over images and seeds); empty groups are left out."""
    out = {}
    for group, wanted in SUMMARY_GROUPS.items():
        keys = frame[frame.metric.isin(wanted[:-1])][["cut", "device", "attack"]].drop_duplicates()
        part = frame.merge(keys, on=["cut", "device", "attack"])
        part = part[part.metric.isin(wanted)]
        if part.empty:
            continue
        table = part.pivot_table(index=["cut", "device", "attack"], columns="metric", values="value", aggfunc="mean")
        out[group] = table[[m for m in wanted if m in table.columns]].reset_index()
    return out
