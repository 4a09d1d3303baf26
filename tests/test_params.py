"""Every attack and defense parameter is type- and range-checked where it enters (issue 14).

Each field of every registered attack's and defense's ``Params`` declares what it accepts
(:mod:`hasfl_sec.defenses.params`); a wrong type and a value outside the declared range are each
refused with a one-line :class:`ConfigError` naming the field, the value and the declared range:
on the audit's command line, in an evaluation's settings (before any cell trains) and in the
experiment config's defense sections (used or not).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hasfl_sec.attacks.registry import ACTIVE_ATTACKS, ATTACKS
from hasfl_sec.audit.config import AuditConfig
from hasfl_sec.config import load_config
from hasfl_sec.defenses.params import VALID, Valid, undeclared
from hasfl_sec.defenses.registry import DEFENSES
from hasfl_sec.errors import ConfigError
from hasfl_sec.evaluation.settings import load_settings


def _kinds(params: type, name: str) -> set[Any]:
    hint = typing.get_type_hints(params)[name]
    return set(typing.get_args(hint)) or {hint}


def _bad_values(params: type, f: dataclasses.Field) -> list[tuple[str, Any]]:
    """(what, value) pairs the field must refuse: a wrong type, and values just outside its range."""
    valid: Valid = f.metadata[VALID]
    kinds = _kinds(params, f.name)
    out: list[tuple[str, Any]] = [("type", 5 if str in kinds else "abc")]
    if valid.choices:
        out.append(("range", "nope" if str in kinds else max(valid.choices) + 1))
    elif bool not in kinds:
        integer = int in kinds and float not in kinds
        if math.isfinite(valid.low):
            out.append(("low", int(valid.low) - 1 if integer else valid.low - (0.0 if valid.low_open else 1.0)))
        if math.isfinite(valid.high):
            out.append(("high", int(valid.high) + 1 if integer else valid.high + (0.0 if valid.high_open else 0.5)))
        if not integer:
            out.append(("nan", math.nan))
    return out


def _expected(params: type, f: dataclasses.Field, what: str) -> str:
    """The start of what the message must say is valid: the type, or the declared range."""
    kinds = _kinds(params, f.name)
    if what == "type":
        return "expected a string" if str in kinds else "expected true/false" if bool in kinds else "expected a"
    integer = int in kinds and float not in kinds
    return "expected " + f.metadata[VALID].describe(integer)


def _cases(registry: Any) -> list[tuple[str, dataclasses.Field, str, Any]]:
    return [(name, f, what, value) for name in registry.names() for f in dataclasses.fields(registry.get(name).Params)
            for what, value in _bad_values(registry.get(name).Params, f)]


ATTACK_CASES = _cases(ATTACKS)
DEFENSE_CASES = _cases(DEFENSES)


def _id(case: tuple[str, dataclasses.Field, str, Any]) -> str:
    return f"{case[0]}.{case[1].name}-{case[2]}"


@pytest.mark.parametrize("registry", [ATTACKS, ACTIVE_ATTACKS, DEFENSES], ids=["attacks", "active", "defenses"])
def test_every_field_declares_what_it_accepts(registry: Any) -> None:
    assert {name: undeclared(registry.get(name).Params) for name in registry.names()} == \
        {name: [] for name in registry.names()}
    for name in registry.names():  # the defaults are valid
        params = registry.get(name).Params
        for f in dataclasses.fields(params):
            assert f.default is None or f.metadata[VALID].accepts(f.default), (name, f.name)


@pytest.mark.parametrize("name, f, what, bad", ATTACK_CASES, ids=[_id(c) for c in ATTACK_CASES])
def test_a_bad_attack_parameter_names_field_value_and_range(name: str, f: dataclasses.Field, what: str,
                                                           bad: Any) -> None:
    expected = re.escape(_expected(ATTACKS.get(name).Params, f, what))
    with pytest.raises(ConfigError, match=rf"^--attack-param {name}\.{f.name}: got {re.escape(repr(bad))}; "
                                          rf"{expected}"):
        AuditConfig(attack_params={name: {f.name: bad}}).validate("--", "--attack-param ")
    with pytest.raises(ConfigError, match=rf"^eval\.attack_params\.{name}\.{f.name}: got {re.escape(repr(bad))}; "
                                          rf"{expected}"):
        load_settings(attacks=[name], attack_params={name: {f.name: bad}})


@pytest.mark.parametrize("name, f, what, bad", DEFENSE_CASES, ids=[_id(c) for c in DEFENSE_CASES])
def test_a_bad_defense_parameter_is_refused_with_the_config_used_or_not(name: str, f: dataclasses.Field, what: str,
                                                                       bad: Any) -> None:
    text = ".nan" if isinstance(bad, float) and math.isnan(bad) else str(bad)  # YAML
    expected = re.escape(_expected(DEFENSES.get(name).Params, f, what))
    for use in ([], [f"defense.use=[{name}]"]):
        with pytest.raises(ConfigError, match=rf"^defense\.{name}\.{f.name}: got {re.escape(repr(bad))}; {expected}"):
            load_config(overrides=[*use, f"defense.{name}.{f.name}={text}"])


def test_the_ranges_the_attacks_define() -> None:
    # UnSplit without a probe compares its candidates at their start: allowed, as the attack says
    assert ATTACKS.get("unsplit").check_params({"probe_steps": 0}) == {"probe_steps": 0}
    assert ATTACKS.get("rmle").check_params({"lr": "1e-3"}) == {"lr": 0.001}  # YAML 1.1 reads 1e-3 as text
    with pytest.raises(ConfigError, match=r"^label-norm\.larger_norm_class: got 2; expected one of 0, 1$"):
        ATTACKS.get("label-norm").check_params({"larger_norm_class": 2})
    with pytest.raises(ConfigError, match=r"^inverse-network\.width: got 5000; expected an integer from 1 to 1,024$"):
        ATTACKS.get("inverse-network").check_params({"width": 5000})
    with pytest.raises(ConfigError, match=r"^rmle: got 5; expected a mapping of parameters of rmle$"):
        ATTACKS.get("rmle").check_params(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("audit, message", [
    (AuditConfig(attacks=["rmle", "rmle"]), "--attacks: got ['rmle', 'rmle']; expected each attack at most once"),
    (AuditConfig(attacks=["rmle"], attack_params={"unsplit": {"steps": 3}}),
     "--attack-param unsplit: got {'steps': 3}; expected parameters of an attack being run: rmle (add unsplit to "
     "--attacks"),
    (AuditConfig(attack_params={"rmle": {"adaptive": False}}),
     "--attack-param rmle.adaptive: got False; expected parameters other than adaptive"),
    (AuditConfig(seeds=[0, 0]), "--seeds: got [0, 0]; expected at least one seed, none repeated"),
    (AuditConfig(seeds=[-1]), "--seeds: got [-1]; expected integers in [0, 2^31)"),
    (AuditConfig(images="8"), "--images: got '8'; expected an integer"),  # type: ignore[arg-type]
    (AuditConfig(cuts=[0, 2]), "--cuts: got [0, 2]; expected plan or all, or a non-empty list of cut indices"),
    (AuditConfig(devices="some"), "--devices: got 'some'; expected first or all, or a non-empty list of device ids"),
    (AuditConfig(dependence=["mic"]), "--dependence: got 'mic'; expected one of dcor, hsic, ksg, nhsic"),
    (AuditConfig(dependence_params={"ksg": {"k": 0}}),
     "--dependence-params.ksg.k: got 0; expected an integer from 1 to 10,000,000"),
    (AuditConfig(dependence_params={"ksg": {"neighbours": 3}}),
     "--dependence-params.ksg.neighbours: got 3; expected a known argument of ksg: k, project_to, seed"),
    (AuditConfig(dfil_relative_sigma=0.0), "--dfil-relative-sigma: got 0.0; expected a finite number > 0, or null"),
], ids=["repeated-attack", "not-run", "adaptive", "repeated-seed", "negative-seed", "images-type", "cut-0",
       "devices-word", "dependence-name", "dependence-range", "dependence-arg", "dfil"])
def test_every_audit_setting_is_checked(audit: AuditConfig, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        audit.validate("--", "--attack-param ")


def test_the_preset_and_explicit_parameters_still_reach_the_attack() -> None:
    audit = AuditConfig(preset="fast", attack_params={"rmle": {"lr": 0.01}}).validate()
    attack = ATTACKS.get("rmle").from_dict(audit.params_for("rmle"))
    assert attack.params.steps == 500 and attack.params.lr == 0.01


@pytest.mark.parametrize("text, message", [
    ("attack_params: {rmle: {steps: -5}}", "eval.attack_params.rmle.steps: got -5; expected an integer from 1"),
    ("attack_params: {unsplit: {steps: 3}}",  # refused by the first cell's audit, after it trained, until now
     "eval.attack_params.unsplit: got {'steps': 3}; expected parameters of an attack being run"),
    ("attack_params: {rmle: {adaptive: false}}", "eval.attack_params.rmle.adaptive: got False"),
    ("attack_seeds: [1, 1]", "eval.attack_seeds: got [1, 1]; expected at least one seed, none repeated"),
    ("defenses: [{defense: topk, param: ratio, values: [0.1, 2]}]",
     "eval.defenses.topk.values: got 2; expected a number in (0, 1]"),
    ("defenses: [{defense: dpsgd, param: target_epsilon, values: [8], fixed: {max_grad_norm: 0}}]",
     "eval.defenses.dpsgd.fixed.max_grad_norm: got 0; expected a finite number > 0"),
], ids=["range", "not-run", "adaptive", "seeds", "sweep-value", "sweep-fixed"])
def test_an_eval_settings_file_is_refused_when_loaded(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        load_settings(path)


# the command line -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import hasfl_sec

    out = tmp_path_factory.mktemp("params") / "run"
    hasfl_sec.train(load_config(overrides=["train.rounds=2", "fleet.num_devices=2", "data.image_size=8"]),
                    out_dir=out)
    return out


@pytest.mark.parametrize("args, line", [
    (["--attack-param", "rmle.steps=abc"], "Error: --attack-param rmle.steps: got 'abc'; expected an integer"),
    (["--attack-param", "rmle.steps=-5"],
     "Error: --attack-param rmle.steps: got -5; expected an integer from 1 to 10,000,000"),
    (["--attack-param", "rmle.nope=1"],
     "Error: --attack-param rmle.nope: got 1; expected a known parameter of rmle: steps, lr, tv_weight, init_std, "
     "adaptive"),
    (["--attack-param", "nope.steps=1"], "Error: --attack-param nope: got {'steps': 1}; expected parameters of a "
     "registered attack: gradient-inversion, inverse-network"),
    (["--attacks", "rmle,rmle"], "Error: --attacks: got ['rmle', 'rmle']; expected each attack at most once"),
    (["--seeds", "0,0"], "Error: --seeds: got [0, 0]; expected at least one seed, none repeated"),
    (["--attacks", "inverse-network", "--attack-param", "inverse-network.width=5000"],
     "Error: --attack-param inverse-network.width: got 5000; expected an integer from 1 to 1,024"),
], ids=["type", "range", "unknown-param", "unknown-attack", "repeated-attack", "repeated-seed", "width"])
def test_audit_refuses_bad_parameters_at_the_door(run_dir: Path, tmp_path: Path, args: list[str], line: str) -> None:
    from hasfl_sec.cli.app import cli

    out = tmp_path / "audit"
    # two images and one rMLE step keep the audit short should a bad value ever get through
    quick = [] if "--attacks" in args else ["--attacks", "rmle", "--attack-param", "rmle.steps=1"]
    result = CliRunner().invoke(cli, ["audit", str(run_dir), "--images", "2", "--threads", "1", "--no-progress",
                                      *quick, *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), result.output
    assert not out.exists() and not (run_dir / "audit").exists()
