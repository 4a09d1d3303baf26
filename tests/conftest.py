"""Shared fixtures: small, fast configs on the bundled digits data."""

from __future__ import annotations

import pytest
import torch

from hasfl_sec.config import ExperimentConfig, load_config

# The models under test are tiny: one intra-op thread is as fast, and on a shared 2-core machine
# an oversubscribed thread pool made single convolutions up to 250x slower.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests, restored after it (a CLI test may have set more).
    On a loaded machine OpenMP's spinning workers turn seconds of small-tensor work into minutes.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def train_small(defenses, rounds: int = 4):
    """A trainer of the small config with extra ``defenses``, after ``rounds`` rounds."""
    from hasfl_sec.runs.setup import prepare

    trainer = prepare(load_config(overrides=small_overrides(**{"train.rounds": rounds}))).trainer(defenses)
    for _ in range(rounds):
        trainer.step()
    return trainer


@pytest.fixture
def small_config() -> ExperimentConfig:
    return load_config(overrides=small_overrides())
