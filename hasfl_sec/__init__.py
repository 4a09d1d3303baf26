"""hasfl-sec: privacy and security analysis of heterogeneity-aware split federated learning.

The public API is importable from the package root; heavy modules (torch) load on first use so
that ``hasfl-sec --help`` stays fast::

    from hasfl_sec import load_config, train
    result = train(load_config(overrides=["train.rounds=20"]))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "config",
    "ExperimentConfig": "config",
    "ConfigError": "errors",
    "train": "runs.training",
    "prepare": "runs.setup",
    "TrainResult": "runs.training",
    "Plan": "sfl.plan",
    "make_plan": "planning.strategies",
    "SFLTrainer": "sfl.trainer",
    "CutLayerTap": "sfl.tap",
    "TapSelector": "sfl.tap",
    "load_dataset": "data",
    "partition": "data",
    "build_model": "models",
    "profile_model": "models",
    "generate_fleet": "fleet",
    "load_fleet": "fleet",
    "round_latency": "sfl.latency",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'hasfl_sec' has no attribute {name!r}")
