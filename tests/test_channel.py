"""Fading channels, the simulated clock at realised rates, and re-planning during training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import small_overrides
from test_trainer import Crash as Kill

from hasfl_sec.config import load_config
from hasfl_sec.errors import ConfigError
from hasfl_sec.fleet import generate_fleet
from hasfl_sec.fleet.channel import make_channel
from hasfl_sec.runs.setup import prepare
from hasfl_sec.runs.training import train
from hasfl_sec.sfl.clock import plan_costs
from hasfl_sec.sfl.latency import round_latency
from hasfl_sec.sfl.plan import Plan


def test_rayleigh_block_fading():
    fleet = generate_fleet(num_devices=6, seed=0)
    ch = make_channel("rayleigh", fleet, seed=3, coherence_rounds=4)
    again = make_channel("rayleigh", fleet, seed=3, coherence_rounds=4)
    assert np.array_equal(ch.fleet_at(1).uplink_bps, ch.fleet_at(4).uplink_bps)  # one block
    assert not np.array_equal(ch.fleet_at(4).uplink_bps, ch.fleet_at(5).uplink_bps)  # next block
    assert np.array_equal(ch.fleet_at(9).downlink_bps, again.fleet_at(9).downlink_bps)  # seeded
    assert np.array_equal(ch.fleet_at(9).flops, fleet.flops)  # only rates fade
    # Jensen: the average rate under fading is below the rate at the mean gain
    mean_up = np.mean([ch.fleet_at(4 * k + 1).uplink_bps for k in range(400)], axis=0)
    assert np.all(mean_up < fleet.uplink_bps) and np.all(mean_up > 0.5 * fleet.uplink_bps)
    static = make_channel("static", fleet, seed=3)
    assert static.fleet_at(7) is fleet
    with pytest.raises(ConfigError, match="channel.model"):
        make_channel("rician", fleet, seed=0)


def test_clock_uses_realised_rates(small_config):
    cfg = load_config(overrides=small_overrides(**{"channel.model": "rayleigh"}))
    setup = prepare(cfg)
    tr = setup.trainer()
    for _ in range(6):
        tr.step()
    expected = 0.0
    for t in range(1, 7):
        lat = round_latency(setup.channel.fleet_at(t), setup.plan.batch_sizes, plan_costs(setup.profile, setup.plan))
        expected += lat.split_round + (lat.aggregation if t % cfg.train.agg_interval == 0 else 0.0)
    assert tr.sim_time_s == pytest.approx(expected, rel=1e-12)
    static = prepare(small_config).trainer()
    for _ in range(6):
        static.step()
    assert static.sim_time_s != pytest.approx(tr.sim_time_s, rel=1e-6)


def test_replan_keeps_the_aggregated_model(small_config):
    setup = prepare(small_config)
    tr = setup.trainer()
    for _ in range(small_config.train.agg_interval):
        tr.step()
    x = setup.dataset.x_test[:8]
    with torch.no_grad():
        before = tr.global_model()(x).clone()
    new = Plan((2, 3, 4, 5), (7, 1, 1, 2), strategy="test")
    tr.replan(new)
    assert tr.l_c == 7 and tr.cuts == [7, 1, 1, 2] and len(tr.common) == 1
    with torch.no_grad():
        torch.testing.assert_close(tr.global_model()(x), before)
    tr.step()
    assert tr.plan_history[-1] == (small_config.train.agg_interval, new)
    with pytest.raises(RuntimeError, match="aggregation"):
        tr.replan(new)


def test_reoptimised_run_resumes_exactly(tmp_path):
    over = small_overrides(**{"channel.model": "rayleigh", "channel.reoptimize_every": 3, "plan.strategy": "hasfl",
                              "plan.cut": 2, "plan.batch_size": 8, "optimizer.target_accuracy": 0.6, "data.partition": "iid",
                              "optimizer.warmup_rounds": 1, "optimizer.probe_size": 16, "optimizer.b_max": 16})
    cfg = load_config(overrides=over)
    bound = prepare(cfg).context.bound()
    cfg = load_config(overrides=[*over, f"optimizer.bound_file={bound.save(tmp_path / 'b.json')}"])
    full = train(cfg, out_dir=tmp_path / "full")
    history = full.trainer.plan_history
    assert [r for r, _ in history] == [0, 3, 6, 9]
    assert len({(p.batch_sizes, p.cuts) for _, p in history}) > 1  # the fading changed the plan

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "killed", defenses=[Kill(at_round=8)])
    resumed = train(out_dir=tmp_path / "killed", resume=True)
    for name, drop in (("rounds.csv", ["wall_time_s"]), ("metrics.csv", ["run_id"])):
        a = pd.read_csv(tmp_path / "full" / name).drop(columns=drop)
        b = pd.read_csv(tmp_path / "killed" / name).drop(columns=drop)
        pd.testing.assert_frame_equal(a, b)
    metrics = pd.read_csv(tmp_path / "full" / "metrics.csv")
    losses = metrics[metrics.metric == "train_loss"]
    # each round's rows carry the cut and batch in effect then: the plan changes show up in the table
    per_round = losses.groupby("round").apply(lambda g: tuple(zip(g.cut, g.batch)), include_groups=False)
    assert per_round.nunique() > 1
    assert (tmp_path / "full" / "plans.json").is_file()
    assert [p for _, p in full.trainer.plan_history] == [p for _, p in resumed.trainer.plan_history]


def test_reoptimize_every_must_follow_aggregation():
    with pytest.raises(ConfigError, match="channel.reoptimize_every"):
        load_config(overrides=["train.agg_interval=5", "channel.reoptimize_every=7"])
