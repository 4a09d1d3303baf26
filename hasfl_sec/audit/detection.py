"""The devices' detectors in a training run, and what leaked before each one fired.

:func:`build_detectors` makes the detectors a run's settings name, one instance per detector
watching every device, and prepares them: SplitOut (:mod:`hasfl_sec.defenses.splitout`) simulates
each device's short honest training first, on the device's own data, with the client part the
trainer starts from and a server part of the same architecture with the device's own fresh
weights. :func:`detection_rows` joins each detector's per-device outcome with the attacker's
reconstruction quality at the round it fired (the headline figure of SplitGuard and SplitOut:
"what leaked before it was caught").
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Sequence

import torch
from torch import nn

from ..defenses.params import check_values
from ..defenses.registry import DETECTORS
from ..seeding import derive_seed, isolated_rng
from ..sfl.trainer import SFLTrainer

__all__ = ["build_detectors", "detection_rows", "fresh_copy"]


def fresh_copy(module: nn.Module, seed: int) -> nn.Module:
    """A copy of ``module`` with every resettable layer re-initialised from ``seed`` (the run's
    random stream is left as it was)."""
    out = copy.deepcopy(module)
    with isolated_rng(seed):
        for m in out.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return out


def build_detectors(names: Sequence[str], params: dict[str, dict[str, Any]], trainer: SFLTrainer | None, *,
                    num_classes: int, parts: Sequence[Any], seed: int) -> list[Any]:
    """The detectors ``names`` with ``params``, watching all of ``trainer``'s devices, fitted
    where they need it on ``trainer`` before its first round (None when ``names`` is empty)."""
    out: list[Any] = []
    if not names:
        return out
    devices = range(trainer.n)
    for name in names:
        cls = DETECTORS.get(name)
        p = cls.Params(**check_values(cls.Params, params.get(name, {}), f"detector.{name}.", name))
        detector = cls(p, num_classes=num_classes, devices=devices, run_seed=seed)
        if hasattr(detector, "fit"):  # a detector that learns from an honest local run first (SplitOut)
            for i in devices:
                idx = torch.as_tensor(parts[i], dtype=torch.long, device=trainer.x_train.device)
                server = fresh_copy(nn.Sequential(*trainer.noncommon[i], *trainer.common), derive_seed(seed, name, i))
                # the device's own loss term (NoPeek) is part of its honest gradients too
                term = functools.partial(trainer.defense.loss_term, round=0, device=i)
                detector.fit(i, trainer.clients[i], server, trainer.x_train[idx], trainer.y_train[idx],
                             trainer.batch_sizes[i], trainer.cfg.lr, loss_term=term)
        out.append(detector)
    return out


def detection_rows(detectors: Sequence[Any], records: Sequence[dict[str, Any]],
                   targets: Sequence[int]) -> list[dict[str, Any]]:
    """Each detector's outcome per device, with whether the device was hijacked and the
    attacker's MSE and SSIM on that device at the round the detector fired (when measured)."""
    at = {(r["round"], r["device"]): r for r in records}
    rows = []
    for detector in detectors:
        for row in detector.report():
            hit = at.get((row["detected_round"], row["device"]), {})
            rows.append({**row, "hijacked": row["device"] in targets,
                         "mse_at_detection": hit.get("mse"), "ssim_at_detection": hit.get("ssim")})
    return rows
