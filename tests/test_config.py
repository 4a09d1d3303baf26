"""Config loading, overrides and validation: every mistake is one line naming field and value."""

from __future__ import annotations

import json

import pytest

from hasfl_sec.config import ExperimentConfig, load_config
from hasfl_sec.errors import ConfigError


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = ExperimentConfig().validate()
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    assert load_config(path).config_hash() == cfg.config_hash()


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"rounds": 7, "lr": 0.1}, "plan": {"cut": [1, 2]}}))
    cfg = load_config(path, ["train.rounds=9", "plan.batch_size=[3, 4]"])
    assert cfg.train.rounds == 9 and cfg.train.lr == 0.1
    assert cfg.plan.cut == [1, 2] and cfg.plan.batch_size == [3, 4]


def test_exponent_notation_is_a_number():
    cfg = load_config(overrides=["train.lr=1e-3", "data.alpha=5e-1"])
    assert cfg.train.lr == 0.001 and cfg.data.alpha == 0.5


def test_toml_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "t"\n[train]\nrounds = 3\n')
    assert load_config(path).train.rounds == 3


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.rounds=abc", "train.rounds"),
        ("train.rounds=0", "train.rounds"),
        ("train.lr=-1", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("train.nonsense=1", "train.nonsense"),
        ("nosection.x=1", "nosection.x"),
        ("plan.batch_size=0", "plan.batch_size"),
        ("plan.batch_size=[4, 0]", "plan.batch_size"),
        ("data.alpha=0", "data.alpha"),
        ("device=tpu", "device"),
        ("train.agg_interval=0", "train.agg_interval"),
        ("fleet.num_devices=0", "fleet.num_devices"),
        ("noequals", "--set"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert message.startswith(field + ":"), message
    assert "\n" not in message


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="--config"):
        load_config(bad)
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "missing.yaml")
