"""Every attack parameter is type- and range-checked where it enters (audit options, eval settings)."""

from __future__ import annotations

import dataclasses

import pytest

from hasfl_sec.attacks.registry import ATTACKS
from hasfl_sec.audit.config import AuditConfig
from hasfl_sec.errors import ConfigError
from hasfl_sec.evaluation.settings import load_settings

FIELDS = [(name, f) for name in ATTACKS.names() for f in dataclasses.fields(ATTACKS.get(name).Params)]


@pytest.mark.parametrize("name,f", FIELDS, ids=[f"{n}.{f.name}" for n, f in FIELDS])
def test_a_wrong_type_and_an_out_of_range_value_name_the_parameter(name: str, f: dataclasses.Field) -> None:
    cls = ATTACKS.get(name)
    assert cls.check_params({f.name: f.default}) == {f.name: f.default}  # the default is valid
    with pytest.raises(ConfigError, match=rf"^--attack-param {name}\.{f.name}: got 'abc'"):
        AuditConfig(attack_params={name: {f.name: "abc"}}).validate("--", "--attack-param ")
    if f.type in ("bool", bool):
        return
    bad = -5 if f.type in ("int", int) else float("nan")
    with pytest.raises(ConfigError, match=rf"^eval\.attack_params\.{name}\.{f.name}: got"):
        load_settings(attack_params={name: {f.name: bad}}).validate()


def test_unknown_parameters_and_attacks_list_what_is_known() -> None:
    with pytest.raises(ConfigError, match="rmle.nope: got 1; expected a known parameter of rmle: steps"):
        AuditConfig(attack_params={"rmle": {"nope": 1}}).validate()
    with pytest.raises(ConfigError, match="attack_params.nope: .*registered attack: .*rmle"):
        AuditConfig(attack_params={"nope": {"steps": 1}}).validate()
    with pytest.raises(ConfigError, match="^--attacks: got 'nope'"):
        AuditConfig(attacks=["nope"]).validate("--")


def test_the_preset_and_explicit_parameters_still_reach_the_attack() -> None:
    audit = AuditConfig(preset="fast", attack_params={"rmle": {"lr": 0.01}}).validate()
    attack = ATTACKS.get("rmle").from_dict(audit.params_for("rmle"))
    assert attack.params.steps == 500 and attack.params.lr == 0.01
