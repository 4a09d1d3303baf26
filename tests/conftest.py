"""Shared fixtures: small, fast configs on the bundled digits data."""

from __future__ import annotations

import pytest

from hasfl_sec.config import ExperimentConfig, load_config


def small_overrides(**extra: object) -> list[str]:
    """A 4-device, few-round run on digits with heterogeneous fixed cuts."""
    values = {
        "fleet.num_devices": 4,
        "plan.strategy": "fixed",
        "plan.cut": "[1, 2, 3, 4]",
        "plan.batch_size": "[4, 8, 12, 16]",
        "train.rounds": 12,
        "train.agg_interval": 3,
        "train.eval_every": 6,
        "train.checkpoint_every": 4,
        "data.min_samples_per_device": 8,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture
def small_config() -> ExperimentConfig:
    return load_config(overrides=small_overrides())
