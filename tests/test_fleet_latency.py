"""Fleet generation/loading and the HASFL latency model (docs/hasfl.md sections 2 and 5)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from hasfl_sec.errors import ConfigError
from hasfl_sec.fleet import (
    FLEETS,
    GIB,
    HETEROGENEITY,
    Device,
    Fleet,
    FleetSpec,
    dbm_to_watts,
    fleet_from_dict,
    generate_fleet,
    load_fleet,
    shannon_rate,
)
from hasfl_sec.sfl.latency import CutCosts, elapsed_after, round_latency, stage_latencies, training_latency

REL = 1e-12


# ---------------------------------------------------------------------------------------------
# A 3-device fleet with hand-computed latencies
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fleet3() -> Fleet:
    return Fleet(
        devices=(
            Device(flops=1e9, uplink_bps=1e6, downlink_bps=2e6, memory_bytes=1e9, name="a"),
            Device(flops=2e9, uplink_bps=2e6, downlink_bps=4e6, memory_bytes=2e9, name="b"),
            Device(flops=4e9, uplink_bps=5e6, downlink_bps=1e7, memory_bytes=4e9, name="c"),
        ),
        server_flops=1e10,
        name="three",
    )


# client fwd, client bwd, server fwd, server bwd, smashed bits/sample, client-model bits
COSTS3 = [
    CutCosts(1e6, 2e6, 4e6, 8e6, 8000, 1e6),
    CutCosts(2e6, 4e6, 3e6, 6e6, 4000, 3e6),
    CutCosts(4e6, 8e6, 1e6, 2e6, 2000, 4e6),
]
B3 = [4, 8, 16]

# T^F + T^A per device (b * Phi_c^F / f + b * Psi / r^U)
UP = [4 * 1e6 / 1e9 + 4 * 8000 / 1e6, 8 * 2e6 / 2e9 + 8 * 4000 / 2e6, 16 * 4e6 / 4e9 + 16 * 2000 / 5e6]
# sum_i b * (Phi_s^F + Phi_s^B) / f_s
SERVER = 4 * (4e6 + 8e6) / 1e10 + 8 * (3e6 + 6e6) / 1e10 + 16 * (1e6 + 2e6) / 1e10
# T^G + T^B per device (b * Psi / r^D + b * Phi_c^B / f)
DOWN = [4 * 8000 / 2e6 + 4 * 2e6 / 1e9, 8 * 4000 / 4e6 + 8 * 4e6 / 2e9, 16 * 2000 / 1e7 + 16 * 8e6 / 4e9]
T_S = max(UP) + SERVER + max(DOWN)  # = 0.036 + 0.0168 + 0.0352 = 0.088
T_A = max(1e6 / 1e6, 3e6 / 2e6, 4e6 / 5e6) + max(1e6 / 2e6, 3e6 / 4e6, 4e6 / 1e7)  # = 1.5 + 0.75


def test_round_latency_matches_hand_computation(fleet3):
    assert T_S == pytest.approx(0.088, rel=1e-12)  # the literal arithmetic above, summed by hand
    assert T_A == pytest.approx(2.25, rel=1e-12)
    r = round_latency(fleet3, B3, COSTS3)
    assert r.uplink_barrier == pytest.approx(0.036, rel=REL)
    assert r.server == pytest.approx(0.0168, rel=REL)
    assert r.downlink_barrier == pytest.approx(0.0352, rel=REL)
    assert r.split_round == pytest.approx(T_S, rel=REL)
    assert r.aggregation == pytest.approx(T_A, rel=REL)
    assert r.straggler_up == 0
    assert r.straggler_down == 2


def test_stage_latencies_per_device(fleet3):
    st = stage_latencies(fleet3, B3, COSTS3)
    np.testing.assert_allclose(st.client_fwd, [4e-3, 8e-3, 16e-3], rtol=REL)
    np.testing.assert_allclose(st.uplink, [0.032, 0.016, 0.0064], rtol=REL)
    np.testing.assert_allclose(st.server, [4.8e-3, 7.2e-3, 4.8e-3], rtol=REL)
    np.testing.assert_allclose(st.downlink, [0.016, 0.008, 0.0032], rtol=REL)
    np.testing.assert_allclose(st.client_bwd, [8e-3, 16e-3, 32e-3], rtol=REL)
    np.testing.assert_allclose(st.model_up, [1.0, 1.5, 0.8], rtol=REL)
    np.testing.assert_allclose(st.model_down, [0.5, 0.75, 0.4], rtol=REL)


def test_label_bits_add_to_uplink_only(fleet3):
    base = stage_latencies(fleet3, B3, COSTS3)
    with_labels = stage_latencies(fleet3, B3, COSTS3, label_bits=64)
    np.testing.assert_allclose(with_labels.uplink - base.uplink, [4 * 64 / 1e6, 8 * 64 / 2e6, 16 * 64 / 5e6], rtol=1e-9)
    np.testing.assert_array_equal(with_labels.downlink, base.downlink)


def test_linear_in_batch_size_and_aggregation_independent(fleet3):
    r1 = round_latency(fleet3, B3, COSTS3)
    r2 = round_latency(fleet3, [2 * b for b in B3], COSTS3)
    assert r2.split_round == pytest.approx(2 * r1.split_round, rel=REL)
    assert r2.aggregation == r1.aggregation
    r3 = round_latency(fleet3, [1, 1, 1], COSTS3)
    assert r3.aggregation == r1.aggregation


def test_single_costs_broadcast(fleet3):
    r_all = round_latency(fleet3, B3, [COSTS3[0]] * 3)
    r_one = round_latency(fleet3, B3, COSTS3[0])
    assert r_one.split_round == r_all.split_round and r_one.aggregation == r_all.aggregation


def test_training_latency_and_elapsed():
    assert training_latency(T_S, T_A, 10, 3) == pytest.approx(10 * 0.088 + 3 * 2.25, rel=REL)
    assert training_latency(T_S, T_A, 10, 1) == pytest.approx(10 * 0.088 + 10 * 2.25, rel=REL)
    assert elapsed_after(10, T_S, T_A, 3) == training_latency(T_S, T_A, 10, 3)
    assert elapsed_after(0, T_S, T_A, 3) == 0.0
    assert elapsed_after(2, T_S, T_A, 3) == pytest.approx(2 * 0.088, rel=REL)  # no aggregation yet
    assert elapsed_after(3, T_S, T_A, 3) == pytest.approx(3 * 0.088 + 2.25, rel=REL)  # aggregated at t=3


def test_round_latency_fast_for_1000_devices():
    fleet = generate_fleet(num_devices=1000, seed=3)
    costs = [CutCosts(1e6, 2e6, 1e7, 2e7, 32e3, 1e7)] * 1000
    b = [16] * 1000
    round_latency(fleet, b, costs)
    reps = 50
    start = time.perf_counter()
    for _ in range(reps):
        round_latency(fleet, b, costs)
    assert (time.perf_counter() - start) / reps < 5e-3  # ~0.3 ms measured; generous for slow CI


# ---------------------------------------------------------------------------------------------
# Generated fleets
# ---------------------------------------------------------------------------------------------


def test_generate_fleet_deterministic_per_seed():
    assert generate_fleet(seed=7) == generate_fleet(seed=7)
    assert generate_fleet(seed=7) != generate_fleet(seed=8)
    assert generate_fleet(seed=7).name == "high-20"


def test_homogeneous_fleet_has_identical_devices():
    fleet = generate_fleet(num_devices=6, heterogeneity="none", seed=1)
    first = fleet.devices[0]
    for d in fleet.devices:
        assert (d.flops, d.uplink_bps, d.downlink_bps, d.memory_bytes) == (
            first.flops, first.uplink_bps, first.downlink_bps, first.memory_bytes)
    assert first.flops == pytest.approx(math.sqrt(0.2e4 * 3e4) * math.sqrt(50e6 * 625e6), rel=1e-12)


def test_spread_increases_with_heterogeneity():
    spreads = []
    for level in ("none", "low", "medium", "high"):
        f = generate_fleet(heterogeneity=level, seed=0).flops
        spreads.append(f.max() / f.min())
    assert spreads[0] == 1.0
    assert spreads[0] < spreads[1] < spreads[2] < spreads[3]
    assert HETEROGENEITY.names() == ["high", "low", "medium", "none"]


def test_default_fleet_ranges_and_shannon_rates():
    spec = FleetSpec()
    fleet = generate_fleet(seed=0)
    assert fleet.num_devices == 20
    assert fleet.server_flops == pytest.approx(3e4 * 3.135e9)
    assert np.all(fleet.flops >= 0.2e4 * 50e6) and np.all(fleet.flops <= 3e4 * 625e6)
    assert np.all(fleet.memory_bytes >= 4 * GIB) and np.all(fleet.memory_bytes <= 8 * GIB)
    assert np.all(fleet.uplink_bps > 0) and np.all(fleet.downlink_bps > 0)
    for d in fleet.devices:
        assert 20 <= d.tx_power_dbm <= 33 and 0.1e-6 <= d.channel_gain <= 1e-6
        p = 10 ** ((d.tx_power_dbm - 30) / 10)
        up = 100e6 * math.log2(1 + p * d.channel_gain / (100e6 * 3.98e-21))
        down = 200e6 * math.log2(1 + 10.0 * d.channel_gain / (200e6 * 3.98e-21))  # 40 dBm = 10 W
        assert d.uplink_bps == pytest.approx(up, rel=1e-12)
        assert d.downlink_bps == pytest.approx(down, rel=1e-12)
    assert spec.server_power_dbm == 40.0
    assert dbm_to_watts(30) == pytest.approx(1.0)
    assert shannon_rate(1e6, 1.0, 1e-6, 1e-12) == pytest.approx(1e6 * math.log2(2.0))


def test_fleet_presets():
    assert {"paper-default", "homogeneous", "mild", "medium", "edge-mix", "phones-mixed", "iot-boards"} <= set(
        FLEETS.names())
    for name in FLEETS.names():
        assert FLEETS.describe(name)
        fleet = FLEETS.get(name)(5, 0)
        assert fleet.num_devices == 5
    homo = FLEETS.get("homogeneous")(4, 0)
    assert len(set(homo.flops.tolist())) == 1


def test_arrays_and_frame(fleet3):
    np.testing.assert_array_equal(fleet3.flops, [1e9, 2e9, 4e9])
    np.testing.assert_array_equal(fleet3.uplink_bps, [1e6, 2e6, 5e6])
    np.testing.assert_array_equal(fleet3.downlink_bps, [2e6, 4e6, 1e7])
    np.testing.assert_array_equal(fleet3.memory_bytes, [1e9, 2e9, 4e9])
    frame = fleet3.to_frame()
    assert len(frame) == 3 and list(frame["name"]) == ["a", "b", "c"]
    assert frame["flops"].tolist() == [1e9, 2e9, 4e9]


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    fleet = generate_fleet(num_devices=7, heterogeneity="medium", seed=5)
    path = fleet.save(tmp_path / f"fleet{suffix}")
    assert load_fleet(path) == fleet
    assert fleet_from_dict(fleet.to_dict()) == fleet


def test_load_toml_and_physical_entries(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text(
        'server_flops = 1e13\nuplink_bandwidth_hz = 1e6\nnoise_psd = 1e-12\n'
        '[[devices]]\nflops = 1e9\nuplink_bps = 2e6\ndownlink_bps = 3e6\nmemory_bytes = 1e9\n'
        '[[devices]]\nflops = 2e9\nmemory_bytes = 2e9\ntx_power_dbm = 30.0\nchannel_gain = 1e-6\n'
    )
    fleet = load_fleet(path)
    assert fleet.name == "lab" and fleet.num_devices == 2
    assert fleet.devices[0].uplink_bps == 2e6
    assert fleet.devices[1].uplink_bps == pytest.approx(1e6)  # 1e6 * log2(1 + 1 * 1e-6 / (1e6 * 1e-12))
    # downlink with the default 200 MHz band and 40 dBm server
    assert fleet.devices[1].downlink_bps == pytest.approx(200e6 * math.log2(1 + 10 * 1e-6 / (200e6 * 1e-12)))


def test_yaml_exponent_strings_accepted(tmp_path):
    path = tmp_path / "f.yml"  # PyYAML reads 1e9 (no dot) as a string
    path.write_text("server_flops: 1e10\ndevices:\n  - {flops: 1e9, uplink_bps: 1e6, downlink_bps: 2e6, memory_bytes: 1e9}\n")
    assert load_fleet(path).devices[0].flops == 1e9


# ---------------------------------------------------------------------------------------------
# Bad input: one-line ConfigError naming the field
# ---------------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo, field: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(field + ":"), msg
    assert exc.value.field == field
    return msg


def test_zero_devices():
    with pytest.raises(ConfigError) as exc:
        Fleet(devices=(), server_flops=1e10)
    assert "at least 1 device" in _one_line(exc, "fleet.num_devices")
    with pytest.raises(ConfigError) as exc:
        generate_fleet(num_devices=0)
    _one_line(exc, "fleet.num_devices")
    with pytest.raises(ConfigError) as exc:
        fleet_from_dict({"server_flops": 1e10, "devices": []})
    _one_line(exc, "fleet.num_devices")


@pytest.mark.parametrize("bad", [-1e6, 0.0, float("nan"), float("inf")])
def test_bad_rate(bad):
    with pytest.raises(ConfigError) as exc:
        Device(flops=1e9, uplink_bps=bad, downlink_bps=1e6, memory_bytes=1e9)
    _one_line(exc, "device.uplink_bps")
    good = {"flops": 1e9, "uplink_bps": 1e6, "downlink_bps": 1e6, "memory_bytes": 1e9}
    with pytest.raises(ConfigError) as exc:
        fleet_from_dict({"server_flops": 1e10, "devices": [good, dict(good, downlink_bps=bad)]})
    _one_line(exc, "fleet.devices[1].downlink_bps")
    with pytest.raises(ConfigError) as exc:
        Fleet(devices=(Device(**good),), server_flops=bad)
    _one_line(exc, "fleet.server_flops")


def test_unknown_heterogeneity():
    with pytest.raises(ConfigError) as exc:
        generate_fleet(heterogeneity="extreme")
    msg = _one_line(exc, "fleet.heterogeneity")
    assert "extreme" in msg and "medium" in msg


def test_fleet_file_unknown_key(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("server_flops: 1.0e+10\ndevices:\n  - {flops: 1.0e+9, uplnk_bps: 1.0e+6, downlink_bps: 1.0e+6, "
                    "memory_bytes: 1.0e+9}\n")
    with pytest.raises(ConfigError) as exc:
        load_fleet(path)
    msg = _one_line(exc, "fleet.devices[0].uplnk_bps")
    assert "uplink_bps" in msg  # names the valid keys
    path.write_text("server_flop: 1.0e+10\ndevices: []\n")
    with pytest.raises(ConfigError) as exc:
        load_fleet(path)
    assert "server_flops" in _one_line(exc, "fleet.server_flop")


def test_fleet_file_missing_and_malformed(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_fleet(tmp_path / "nope.yaml")
    assert "nope.yaml" in _one_line(exc, "fleet.file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server_flops: [1, 2\ndevices: {\n")
    with pytest.raises(ConfigError) as exc:
        load_fleet(bad)
    _one_line(exc, "fleet.file")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({"server_flops": 1e10})[:-1])
    with pytest.raises(ConfigError) as exc:
        load_fleet(bad_json)
    _one_line(exc, "fleet.file")


def test_wrong_length_batch_list(fleet3):
    with pytest.raises(ConfigError) as exc:
        round_latency(fleet3, [4, 8], COSTS3)
    assert "3 values" in _one_line(exc, "plan.batch_size")
    with pytest.raises(ConfigError) as exc:
        round_latency(fleet3, B3, COSTS3[:2])
    _one_line(exc, "plan.cut")


@pytest.mark.parametrize("batch", [[4, 0, 16], [4, -2, 16], [4, 8.5, 16], [4, "8", 16]])
def test_bad_batch_size(fleet3, batch):
    with pytest.raises(ConfigError) as exc:
        round_latency(fleet3, batch, COSTS3)
    assert "device 1" in _one_line(exc, "plan.batch_size")


def test_bad_interval_and_costs():
    with pytest.raises(ConfigError) as exc:
        training_latency(1.0, 1.0, 10, 0)
    _one_line(exc, "train.agg_interval")
    with pytest.raises(ConfigError) as exc:
        elapsed_after(3, 1.0, 1.0, 0)
    _one_line(exc, "train.agg_interval")
    with pytest.raises(ConfigError) as exc:
        CutCosts(1.0, 1.0, 1.0, 1.0, float("nan"), 1.0)
    _one_line(exc, "costs.smashed_bits")
