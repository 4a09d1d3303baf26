"""Fleets from real device classes: presets, composition files, ranges, determinism, errors."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from hasfl_sec.cli.app import cli
from hasfl_sec.errors import ConfigError
from hasfl_sec.fleet import (
    DEVICE_CLASSES,
    FLEETS,
    LINK_CLASSES,
    SERVER_CLASSES,
    Group,
    apportion,
    compose_fleet,
    fleet_from_dict,
    load_fleet,
)
from hasfl_sec.fleet.compose import MIXED_PRESETS


def _in(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] * (1 - 1e-12) <= value <= bounds[1] * (1 + 1e-12)


@pytest.mark.parametrize("preset", sorted(MIXED_PRESETS))
@pytest.mark.parametrize("n", [1, 7, 20])
def test_every_preset_loads_and_its_devices_lie_in_their_documented_ranges(preset: str, n: int) -> None:
    fleet = FLEETS.get(preset)(n, 3)
    assert fleet.num_devices == n
    assert fleet.server_flops == SERVER_CLASSES.get(MIXED_PRESETS[preset][0]).flops
    for d in fleet.devices:
        device, link = d.group.split("/")
        dc, lc = DEVICE_CLASSES.get(device), LINK_CLASSES.get(link)
        assert _in(d.flops, dc.flops) and _in(d.memory_bytes, dc.memory_bytes), d
        assert _in(d.uplink_bps, lc.uplink_bps) and _in(d.downlink_bps, lc.downlink_bps), d
    if n >= len(MIXED_PRESETS[preset][1]):  # every class of the preset is present
        assert len({d.group for d in fleet.devices}) == len(MIXED_PRESETS[preset][1])


def test_the_same_seed_gives_the_same_fleet_and_another_seed_another() -> None:
    make = FLEETS.get("edge-mix")
    assert make(20, 5) == make(20, 5)
    assert make(20, 5).flops.tolist() != make(20, 6).flops.tolist()


def test_apportionment_is_largest_remainder_with_one_device_per_share() -> None:
    assert apportion([0.2, 0.2, 0.2, 0.15, 0.15, 0.1], 20) == [4, 4, 4, 3, 3, 2]
    assert apportion([0.5, 0.3, 0.2], 3) == [1, 1, 1]
    assert apportion([0.5, 0.3, 0.2], 2) == [1, 1, 0]
    assert sum(apportion([0.25, 0.15, 0.35, 0.25], 7)) == 7


def test_class_figures_are_sane_and_sourced() -> None:
    for registry in (DEVICE_CLASSES, LINK_CLASSES):
        for name in registry.names():
            cls = registry.get(name)
            assert len(cls.source) > 40, name
    # the orders of magnitude the presets rest on
    assert DEVICE_CLASSES.get("mcu").flops[1] < DEVICE_CLASSES.get("phone-low").flops[0]
    assert DEVICE_CLASSES.get("phone-high").flops[1] <= DEVICE_CLASSES.get("jetson").flops[1]
    assert LINK_CLASSES.get("nb-iot").uplink_bps[1] < LINK_CLASSES.get("ble").uplink_bps[0]
    assert LINK_CLASSES.get("lte").uplink_bps[1] <= LINK_CLASSES.get("5g").uplink_bps[1]


def test_a_composed_fleet_file_loads_and_round_trips(tmp_path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump({"name": "lab", "server": "edge-gpu", "seed": 2, "compose": [
        {"device": "phone-mid", "link": "lte", "count": 3}, {"device": "raspberry-pi", "link": "wifi", "count": 2}],
        "devices": [{"flops": 1e10, "uplink_bps": 1e7, "downlink_bps": 2e7, "memory_bytes": 1e9, "name": "own"}]}))
    fleet = load_fleet(path)
    assert [d.group for d in fleet.devices] == ["phone-mid/lte"] * 3 + ["raspberry-pi/wifi"] * 2 + [""]
    assert fleet.devices[-1].name == "own" and fleet.name == "lab"
    drawn = compose_fleet([Group("phone-mid", "lte", 3), Group("raspberry-pi", "wifi", 2)], "edge-gpu", seed=2)
    assert fleet.devices[:5] == drawn.devices and fleet.server_flops == drawn.server_flops
    assert fleet_from_dict(fleet.to_dict()) == fleet  # the drawn devices keep their group


@pytest.mark.parametrize("entry, field", [
    ({"compose": [{"device": "toaster", "link": "lte", "count": 1}], "server": "edge-gpu"}, "fleet.compose[0].device"),
    ({"compose": [{"device": "mcu", "link": "carrier-pigeon", "count": 1}], "server": "edge-gpu"},
     "fleet.compose[0].link"),
    ({"compose": [{"device": "mcu", "link": "ble", "count": 0}], "server": "edge-gpu"}, "fleet.compose[0].count"),
    ({"compose": [{"device": "mcu", "link": "ble", "count": 1, "colour": "red"}], "server": "edge-gpu"},
     "fleet.compose[0].colour"),
    ({"compose": [{"device": "mcu", "link": "ble", "count": 1}], "server": "mainframe"}, "fleet.server"),
    ({"compose": [{"device": "mcu", "link": "ble", "count": 1}]}, "fleet.server"),
    ({"compose": [], "server": "edge-gpu"}, "fleet.compose"),
    ({"server": "edge-gpu", "devices": [{"flops": 1e9, "memory_bytes": 1e9, "uplink_bps": 1e6,
                                         "downlink_bps": 1e6}]}, "fleet.compose"),
])
def test_bad_compositions_name_the_field(entry: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        fleet_from_dict(entry)
    assert err.value.field == field


def test_list_shows_the_presets_and_the_sources() -> None:
    runner = CliRunner()
    fleets = runner.invoke(cli, ["list", "fleets"]).output
    assert all(name in fleets for name in MIXED_PRESETS) and "paper-default" in fleets
    classes = runner.invoke(cli, ["list", "device-classes"]).output
    assert "Cortex-M7" in classes and "Jetson" in classes
    links = runner.invoke(cli, ["list", "link-classes"]).output
    assert "TS 36.306" in links and "Ookla" in links


def _compose_file(tmp_path, **extra) -> str:
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump({"server": "edge-gpu", **extra, "compose": [
        {"device": "phone-mid", "link": "lte", "count": 3}, {"device": "raspberry-pi", "link": "wifi", "count": 2}]}))
    return str(path)


def test_a_composed_file_without_a_seed_is_drawn_at_the_runs_fleet_seed(tmp_path) -> None:
    from hasfl_sec.config import config_from_dict
    from hasfl_sec.runs.setup import make_fleet

    groups = [Group("phone-mid", "lte", 3), Group("raspberry-pi", "wifi", 2)]
    path = _compose_file(tmp_path)
    assert load_fleet(path).devices == compose_fleet(groups, "edge-gpu", seed=0).devices  # outside a run: 0
    assert load_fleet(path, seed=7).devices == compose_fleet(groups, "edge-gpu", seed=7).devices

    def run_fleet(seed: int, fleet_seed: int | None = None, file: str = path):
        return make_fleet(config_from_dict({"seed": seed, "fleet": {"file": file, "seed": fleet_seed}}))

    assert run_fleet(1) != run_fleet(2)  # varies with the run's seed, as a preset does
    assert run_fleet(1, fleet_seed=5) == run_fleet(2, fleet_seed=5)  # fleet.seed fixes it
    pinned = _compose_file(tmp_path, seed=3)  # the file's own seed wins
    assert run_fleet(1, file=pinned) == run_fleet(2, file=pinned) == load_fleet(pinned)


def test_the_docs_page_lists_every_class_with_the_codes_range_and_source() -> None:
    from pathlib import Path

    from hasfl_sec.fleet.classes import _bytes, _rate

    page = (Path(__file__).resolve().parents[1] / "docs" / "fleets.md").read_text()
    for name in DEVICE_CLASSES.names():
        c = DEVICE_CLASSES.get(name)
        row = (f"| `{name}` | {c.flops[0] / 1e9:g} G–{c.flops[1] / 1e9:g} G | {_bytes(c.memory_bytes[0])}–"
               f"{_bytes(c.memory_bytes[1])} | {c.source} |")
        assert row in page, name
    for name in LINK_CLASSES.names():
        c = LINK_CLASSES.get(name)
        row = (f"| `{name}` | {_rate(c.uplink_bps[0])}–{_rate(c.uplink_bps[1])} | {_rate(c.downlink_bps[0])}–"
               f"{_rate(c.downlink_bps[1])} | {c.source} |")
        assert row in page, name
    for name in SERVER_CLASSES.names():
        c = SERVER_CLASSES.get(name)
        assert f"| `{name}` | {c.flops / 1e12:g} T | {c.source} |" in page, name
    for name, (server, parts, _) in MIXED_PRESETS.items():
        assert f"| `{name}` | `{server}` | " + ", ".join(f"{d}/{lk} {s:.0%}" for d, lk, s in parts) in page, name


def test_preset_help_names_its_classes_and_the_listings_give_the_measurements() -> None:
    runner = CliRunner()
    fleets = runner.invoke(cli, ["list", "fleets"]).output
    for name, (server, parts, _) in MIXED_PRESETS.items():
        line = next(ln for ln in fleets.splitlines() if ln.startswith(name + " "))
        assert server in line and all(f"{d}/{lk}" in line for d, lk, _ in parts), line
    classes = runner.invoke(cli, ["list", "device-classes"]).output
    assert "Flower Labs" in classes and "Das et al." in classes  # the measured anchors
    assert "T4" in runner.invoke(cli, ["list", "server-classes"]).output
