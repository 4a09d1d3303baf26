"""Typed dataclasses from nested dicts: the type checks and dotted overrides every config uses.

:func:`build_dataclass` builds a dataclass from a nested mapping, checking every value against
the field's type hint (``int``, ``float``, ``str``, ``bool``, ``None``, unions, ``list[...]``,
``dict[str, ...]``, nested dataclasses) and naming the dotted field in every error.
:func:`apply_overrides` applies ``key.path=value`` strings (values parsed as YAML) and
:func:`merge` deep-merges a file's mapping into defaults. The experiment config
(:mod:`hasfl_sec.config`) and the evaluation settings (:mod:`hasfl_sec.evaluation`) both use them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Union

import yaml

from .errors import ConfigError
from .fileio import load_yaml

__all__ = ["build_dataclass", "apply_overrides", "merge", "coerce"]


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping of " + ", ".join(f.name for f in dataclasses.fields(hint))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}.get(
        hint, str(hint)
    )


def coerce(path: str, value: Any, hint: Any) -> Any:
    """``value`` converted to ``hint`` (ints accepted for floats), or ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return coerce(path, value, arg)
            except ConfigError:
                continue
        raise ConfigError(path, value, _type_name(hint))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, value, _type_name(hint))
        (item,) = typing.get_args(hint)
        return [coerce(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, value, _type_name(hint))
        _, item = typing.get_args(hint)
        return {str(k): coerce(f"{path}.{k}", v, item) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; it is a number to a user
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return build_dataclass(hint, value, path)
    raise ConfigError(path, value, _type_name(hint))


def build_dataclass(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """An instance of dataclass ``cls`` from ``values``, every field type-checked; unknown keys and
    wrong types raise :class:`ConfigError` naming ``prefix.key``."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            raise ConfigError(path, value, "a known key: " + ", ".join(names), "unknown config key")
        kwargs[key] = coerce(path, value, hints[key])
    required = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    if required:
        raise ConfigError(f"{prefix}.{required[0]}" if prefix else required[0], None, "a value (this key is required)")
    return cls(**kwargs)


def _parse_value(key: str, text: str) -> Any:
    try:
        return load_yaml(text, key, text)
    except yaml.YAMLError:
        return text


def apply_overrides(values: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to a nested dict (a copy is returned).

    Values are parsed as YAML (``3``, ``0.1``, ``[1, 2]``, ``null``, ``true``); unknown paths are
    refused when the dict is turned into a config.
    """
    result = json.loads(json.dumps(values))
    for item in overrides:
        if "=" not in item:
            raise ConfigError("--set", item, "KEY=VALUE, e.g. train.rounds=50")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError("--set", item, "KEY=VALUE with a dotted key such as train.rounds=50")
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(key, text, "a path into the config such as train.rounds", "unknown config key")
            node = child
        node[parts[-1]] = _parse_value(key, text)
    return result


def merge(base: dict[str, Any], update: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Deep-merge ``update`` into ``base``; unknown top-level keys are kept so validation names them."""
    if not isinstance(update, dict):
        raise ConfigError(prefix or "config", update, "a mapping")
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, f"{prefix}.{key}" if prefix else key)
        else:
            out[key] = value
    return out
