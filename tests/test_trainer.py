"""The HASFL trainer: exact per-round maths, aggregation, learning, determinism and resume."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import small_overrides

from hasfl_sec.config import load_config
from hasfl_sec.defenses.base import Defense
from hasfl_sec.errors import ConfigError
from hasfl_sec.runs.setup import prepare
from hasfl_sec.runs.training import train


def make_trainer(cfg, defenses=()):
    setup = prepare(cfg)
    return setup, setup.trainer(defenses)


def test_one_round_equals_per_device_sgd_with_averaged_common_part(small_config):
    """Client and non-common layers step on their own device's gradient; common layers on the average."""
    setup, tr = make_trainer(small_config)
    lr = small_config.train.lr
    samplers = copy.deepcopy(tr.samplers)
    batches = [s.next(b) for s, b in zip(samplers, tr.batch_sizes)]
    before = [copy.deepcopy(c) for c in tr.copies]
    common = copy.deepcopy(tr.common)

    common_grads = [torch.zeros_like(p) for p in common.parameters()]
    expected_copies = []
    for i, idx in enumerate(batches):
        full = torch.nn.Sequential(*copy.deepcopy(before[i]), *copy.deepcopy(common))
        loss = F.cross_entropy(full(tr.x_train[idx]), tr.y_train[idx])
        grads = torch.autograd.grad(loss, list(full.parameters()))
        n_shared = len(list(before[i].parameters()))
        expected_copies.append([p.detach() - lr * g for p, g in zip(before[i].parameters(), grads[:n_shared])])
        for acc, g in zip(common_grads, grads[n_shared:]):
            acc += g / tr.n

    tr.train_round()
    for i in range(tr.n):
        for p, e in zip(tr.copies[i].parameters(), expected_copies[i]):
            torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-6)
    for p, p0, g in zip(tr.common.parameters(), common.parameters(), common_grads):
        torch.testing.assert_close(p.detach(), p0.detach() - lr * g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weighting", ["uniform", "data"])
def test_aggregation_makes_every_copy_the_weighted_average(weighting):
    cfg = load_config(overrides=small_overrides(**{"train.agg_weighting": weighting}))
    setup, tr = make_trainer(cfg)
    tr.train_round()
    tr.train_round()
    params = [list(c.parameters()) for c in tr.copies]
    # the copies have diverged before aggregation
    assert any(not torch.equal(params[0][k], params[1][k]) for k in range(len(params[0])))
    sizes = torch.tensor([len(p) for p in setup.parts], dtype=torch.float64)
    w = sizes / sizes.sum() if weighting == "data" else torch.full((tr.n,), 1.0 / tr.n, dtype=torch.float64)
    expected = [sum(w[i] * params[i][k].detach().double() for i in range(tr.n)) for k in range(len(params[0]))]
    tr.aggregate()
    for i in range(tr.n):
        for k, p in enumerate(tr.copies[i].parameters()):
            torch.testing.assert_close(p.detach().double(), expected[k], rtol=1e-5, atol=1e-7)


def test_all_copies_identical_after_aggregation_round(small_config):
    setup, tr = make_trainer(small_config)
    for _ in range(small_config.train.agg_interval):
        tr.step()
    ref = list(tr.copies[0].parameters())
    for c in tr.copies[1:]:
        for p, q in zip(c.parameters(), ref):
            assert torch.equal(p, q)


def test_simulated_clock_follows_latency_model(small_config):
    setup, tr = make_trainer(small_config)
    for _ in range(7):
        tr.step()
    lat = setup.latency
    assert tr.sim_time_s == pytest.approx(7 * lat.split_round + 2 * lat.aggregation, rel=1e-12)


def test_heterogeneous_cuts_learn_digits_well_above_chance(tmp_path):
    cfg = load_config(overrides=small_overrides(**{
        "fleet.num_devices": 8, "plan.cut": "[1, 2, 3, 4, 5, 6, 7, 2]", "plan.batch_size": 16,
        "train.rounds": 80, "train.eval_every": 40, "data.partition": "iid", "train.lr": 0.08,
    }))
    result = train(cfg, out_dir=tmp_path / "run")
    assert result.final_accuracy > 0.6  # chance is 0.1
    assert result.rounds["train_loss"].iloc[-5:].mean() < result.rounds["train_loss"].iloc[:5].mean()


def _comparable(run_dir):
    rounds = pd.read_csv(run_dir / "rounds.csv").drop(columns=["wall_time_s"])
    metrics = pd.read_csv(run_dir / "metrics.csv").drop(columns=["run_id"])
    return rounds, metrics


def test_same_seed_same_results(small_config, tmp_path):
    train(small_config, out_dir=tmp_path / "a")
    train(small_config, out_dir=tmp_path / "b")
    ra, ma = _comparable(tmp_path / "a")
    rb, mb = _comparable(tmp_path / "b")
    pd.testing.assert_frame_equal(ra, rb)
    pd.testing.assert_frame_equal(ma, mb)
    other = load_config(overrides=small_overrides(seed=1))
    train(other, out_dir=tmp_path / "c")
    rc, _ = _comparable(tmp_path / "c")
    assert not ra["train_loss"].equals(rc["train_loss"])


class Crash(Defense):
    """Identity defense that fails in the middle of a given round, like a killed process."""

    def __init__(self, at_round: int) -> None:
        self.at_round = at_round

    def transform_smashed(self, smashed, *, round, device):
        if round == self.at_round and device == 2:
            raise KeyboardInterrupt("simulated kill")
        return smashed


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    # dropout draws from the global RNG and the tap keeps records: both must survive the kill
    small_config = load_config(overrides=small_overrides(**{"model.dropout": 0.3, "tap.enabled": "true"}))
    full = train(small_config, out_dir=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(small_config, out_dir=tmp_path / "killed", defenses=[Crash(at_round=7)])
    manifest = (tmp_path / "killed" / "manifest.json").read_text()
    assert '"interrupted"' in manifest
    resumed = train(out_dir=tmp_path / "killed", resume=True)
    assert resumed.trainer.round == small_config.train.rounds
    a, ma = _comparable(tmp_path / "full")
    b, mb = _comparable(tmp_path / "killed")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(ma, mb)
    for p, q in zip(full.trainer.common.parameters(), resumed.trainer.common.parameters()):
        assert torch.equal(p, q)
    assert sorted(full.tap.exchanges) == sorted(resumed.tap.exchanges)
    assert len(full.tap.uploads) == len(resumed.tap.uploads) > 0
    with pytest.raises(ConfigError, match="already finished"):
        train(out_dir=tmp_path / "killed", resume=True)


def test_batch_size_one_everywhere():
    cfg = load_config(overrides=small_overrides(**{"plan.batch_size": 1, "train.rounds": 3}))
    setup, tr = make_trainer(cfg)
    tr.run()
    assert all(torch.isfinite(torch.tensor(r.train_loss)) for r in tr.history)


def test_training_resumes_train_mode_after_an_evaluation():
    """Evaluation puts the common blocks (dropout here) in eval mode; the next round trains again."""
    cfg = load_config(overrides=small_overrides(**{"model.dropout": 0.5, "train.eval_every": 1}))
    setup, tr = make_trainer(cfg)
    tr.step()
    assert not any(m.training for block in tr.common for m in block.modules())  # what evaluation left behind
    tr.train_round()
    assert all(m.training for m in (*tr.common.modules(), *(m for c in tr.copies for m in c.modules())))
