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
