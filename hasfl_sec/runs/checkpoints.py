"""Reading checkpoints safely: one-line errors for files that are not ours, damaged or another run's.

Every checkpoint is loaded with ``torch.load(..., weights_only=True)``: a file holding Python
objects other than tensors and plain containers is refused, because unpickling it could run any
code. :func:`load_weights` says so in full, with what to do, instead of relaying the first line of
torch's message. :func:`restore_trainer` checks a run's checkpoint against the run before it is
loaded (a checkpoint copied from a run with another device count would otherwise load two of
three devices silently, or fail deep in the model with a traceback), and :func:`check_state`
compares a model's state dict key by key and shape by shape (docs/design.md section 9).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ConfigError
from ..sfl.trainer import SFLTrainer

__all__ = ["load_weights", "check_devices", "restore_trainer", "check_state"]

_OBJECTS = ("it holds Python objects besides tensors, numbers, strings and plain containers, and such a file is not "
            "loaded (torch.load with weights_only=True) because unpickling it can run any code; if you trust it, "
            "load it yourself and save only its tensors, e.g. torch.save(model.state_dict(), path)")


def _detail(exc: BaseException) -> str:
    """The informative part of an exception's text on one line (torch's state-dict errors put a
    heading line first and the mismatch on the next)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text if len(text) <= 300 else text[:297] + "..."


def load_weights(path: str | Path, field: str, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or a one-line ConfigError naming
    ``field`` and the file: missing, holding arbitrary objects, or not a torch file at all."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(field, str(path), what, "no such file")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        hint = _OBJECTS if "weights only" in str(exc).lower() else f"not a file torch.save wrote ({_detail(exc)})"
        raise ConfigError(field, str(path), what, hint) from None
    except Exception as exc:  # a truncated zip, random bytes, ...: say what, not a traceback
        raise ConfigError(field, str(path), what, f"not readable by torch.load ({type(exc).__name__}: "
                          f"{_detail(exc)})") from None


def check_devices(state: Any, devices: int, path: Path, field: str) -> None:
    """Refuse a run's checkpoint ``state`` unless it holds the states of exactly ``devices``
    devices (cheap: called before the run's data are read)."""
    what = "a checkpoint written by this run"
    trainer_state = state.get("trainer") if isinstance(state, Mapping) else None
    if not isinstance(trainer_state, Mapping):
        raise ConfigError(field, str(path), what, "it holds no trainer state")
    for key in ("copies", "samplers"):
        held = trainer_state.get(key)
        if not isinstance(held, (list, tuple)) or len(held) != devices:
            count = len(held) if isinstance(held, (list, tuple)) else "no"
            raise ConfigError(field, str(path), what, f"it holds {count} devices' {key}; this run has {devices} "
                              "devices (was it copied from another run?)")


def restore_trainer(trainer: SFLTrainer, state: Any, path: Path, field: str) -> None:
    """Load a run's checkpoint ``state`` (read from ``path``) into ``trainer``, refusing in one line
    a checkpoint that is not a trainer's, or is another run's (other device count, model, cuts)."""
    what = "a checkpoint written by this run"
    check_devices(state, len(trainer.copies), path, field)
    try:
        trainer.load_state_dict(dict(state["trainer"]))
    except ConfigError:
        raise
    except Exception as exc:  # a model or plan of another run: name the mismatch
        raise ConfigError(field, str(path), what, f"it does not fit this run ({_detail(exc)})") from None


def check_state(state: Any, model: torch.nn.Module, field: str, path: Path, what: str) -> None:
    """Refuse ``state`` unless it has exactly ``model``'s state-dict keys with the same shapes
    (``model`` may live on the meta device: only shapes are compared)."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(field, str(path), what, "it is not a state dict (a mapping of names to tensors)")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        shown = "; ".join(part for part in (
            f"{len(missing)} missing, e.g. {', '.join(missing[:3])}" if missing else "",
            f"{len(unexpected)} unexpected, e.g. {', '.join(unexpected[:3])}" if unexpected else "") if part)
        raise ConfigError(field, str(path), what, f"its keys differ: {shown}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ConfigError(field, str(path), what, f"{key} has shape {list(state[key].shape)}, the model's "
                              f"{list(tensor.shape)}")
