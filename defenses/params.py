"""What each field of an attack's or a defense's ``Params`` accepts, declared next to the field.

Every field of a registered ``Params`` dataclass is declared with one helper of this module --
:func:`count`, :func:`positive`, :func:`nonnegative`, :func:`fraction`, :func:`choice`,
:func:`flag` or :func:`rng_seed` -- which puts a :class:`Valid` into the dataclass field's
metadata::

    @dataclass
    class Params:
        steps: int = count(1500)
        lr: float = positive(0.05)
        norm: str = choice("l2", ("l2", "l1"))

One generic checker reads them: :func:`check_values` for the mapping a user gave (unknown names
refused with the known ones listed) and :func:`check_fields` for a built instance. Each value is
type-checked against the field's type hint with :func:`hasfl_sec.typed.coerce` (the experiment
config's own checker) and then range-checked; a mistake is a one-line
:class:`~hasfl_sec.errors.ConfigError` naming the field, the value and what is valid.

The module sits in ``defenses`` because attacks already import defenses (an attack may simulate
one), never the other way round; both use it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Union

from ..errors import MAX_COUNT, check
from ..typed import coerce

__all__ = ["Valid", "VALID", "count", "positive", "nonnegative", "fraction", "choice", "flag", "rng_seed",
           "check_value", "check_values", "check_param", "check_fields", "undeclared", "MAX_SEED"]

#: The dataclass field metadata key a :class:`Valid` is stored under.
VALID = "valid"

#: Seeds are mixed by :func:`hasfl_sec.seeding.derive_seed`, whose results are 63-bit.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Valid:
    """The values a field accepts: an interval (numbers), a set of ``choices``, or any value of
    the field's type (flags). ``note`` is appended to the message (what null or a list means)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    note: str = ""

    def accepts(self, value: Any) -> bool:
        """True if ``value`` (already of the field's type) is valid."""
        if self.choices:
            return any(value == c and type(value) is type(c) for c in self.choices)  # 1 is not True
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True  # flags and free strings: the type check was all
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def describe(self, integer: bool) -> str:
        """``"an integer from 1 to 10,000,000"``, ``"a number in (0, 1]"``, ``"one of l2, l1"``."""
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        finite_low, finite_high = math.isfinite(self.low), math.isfinite(self.high)
        if integer:  # integer intervals are declared closed
            low = f"{int(self.low):,}"
            return f"an integer from {low} to {int(self.high):,}" if finite_high else f"an integer >= {low}"
        if finite_low and finite_high:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"a number in {left}{self.low:g}, {self.high:g}{right}"
        if finite_low:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        return "a finite number"


def _field(default: Any, valid: Valid) -> Any:
    return dataclasses.field(default=default, metadata={VALID: valid})


def count(default: int | None, low: int = 1, high: int = MAX_COUNT, note: str = "") -> Any:
    """An integer field from ``low`` (default 1) to ``high`` (default :data:`MAX_COUNT`)."""
    return _field(default, Valid(low, high, note=note))


def positive(default: float | None, note: str = "") -> Any:
    """A finite number > 0 (learning rates, clipping bounds, epsilons)."""
    return _field(default, Valid(0.0, low_open=True, note=note))


def nonnegative(default: float | None, note: str = "") -> Any:
    """A finite number >= 0 (weights of a loss term, noise levels; 0 switches the term off)."""
    return _field(default, Valid(0.0, note=note))


def fraction(default: float, *, one: bool = False, note: str = "") -> Any:
    """A number in (0, 1), or in (0, 1] with ``one``."""
    return _field(default, Valid(0.0, 1.0, low_open=True, high_open=not one, note=note))


def choice(default: Any, options: Iterable[Any], note: str = "") -> Any:
    """One of ``options`` (strings, or the few integers a field may take)."""
    return _field(default, Valid(choices=tuple(options), note=note))


def flag(default: bool) -> Any:
    """true or false (the type check is the whole check)."""
    return _field(default, Valid())


def rng_seed(default: int = 0) -> Any:
    """A seed: an integer from 0 to 2^63 - 1 (what :func:`~hasfl_sec.seeding.derive_seed` returns)."""
    return _field(default, Valid(0, MAX_SEED))


def _alternatives(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _text(valid: Valid, hint: Any) -> str:
    """What the message says is valid, from the declaration and the type hint."""
    kinds = _alternatives(hint)
    scalars = [k for k in kinds if typing.get_origin(k) is not list and k is not type(None)]
    text = valid.describe(integer=int in scalars and float not in scalars)
    if valid.note:
        return f"{text}, {valid.note}"
    if type(None) in kinds:
        text += ", or null"
    if any(typing.get_origin(k) is list for k in kinds):
        text += ", or a non-empty list of such values"
    return text


def check_value(where: str, value: Any, hint: Any, valid: Valid) -> Any:
    """``value`` converted to type ``hint`` and checked against ``valid``, or a
    :class:`ConfigError` naming ``where``. Null passes where the hint allows it; a list's
    items are checked one by one and the list must not be empty."""
    out = coerce(where, value, hint)
    items = out if isinstance(out, list) else [out]
    check(len(items) >= 1, where, value, _text(valid, hint))
    for item in items:
        check(item is None or valid.accepts(item), where, value, _text(valid, hint))
    return out


def check_values(params: type, values: Mapping[str, Any] | None, prefix: str, owner: str) -> dict[str, Any]:
    """``values`` as valid fields of dataclass ``params``, converted to their types; errors name
    ``<prefix><field>``, and an unknown name lists the fields of ``owner`` (``rmle``)."""
    if values is None:
        return {}
    check(isinstance(values, Mapping), prefix.rstrip(".") or owner, values, f"a mapping of parameters of {owner}")
    fields = {f.name: f for f in dataclasses.fields(params)}
    hints = typing.get_type_hints(params)
    out = {}
    for key, value in values.items():
        where = f"{prefix}{key}"
        check(key in fields, where, value, f"a known parameter of {owner}: " + ", ".join(fields))
        out[key] = check_value(where, value, hints[key], fields[key].metadata.get(VALID, Valid()))
    return out


def check_param(params: type, name: str, value: Any, where: str) -> Any:
    """``value`` checked as field ``name`` of dataclass ``params`` (which must have it); errors name ``where``."""
    f = next(f for f in dataclasses.fields(params) if f.name == name)
    return check_value(where, value, typing.get_type_hints(params)[name], f.metadata.get(VALID, Valid()))


def check_fields(params: Any, prefix: str) -> None:
    """Check every field of the built dataclass instance ``params``; errors name ``<prefix><field>``."""
    hints = typing.get_type_hints(type(params))
    for f in dataclasses.fields(params):
        check_value(f"{prefix}{f.name}", getattr(params, f.name), hints[f.name], f.metadata.get(VALID, Valid()))


def undeclared(params: type) -> list[str]:
    """The fields of ``params`` that declare nothing (or a number without a range, a string
    without choices): every registered attack's and defense's list is empty (tests/test_params.py)."""
    hints = typing.get_type_hints(params)
    out = []
    for f in dataclasses.fields(params):
        valid = f.metadata.get(VALID)
        kinds = _alternatives(hints[f.name])
        numeric = any(k in (int, float) or typing.get_origin(k) is list for k in kinds)
        if valid is None or (str in kinds and not valid.choices) or (
                numeric and not valid.choices and valid == Valid(note=valid.note)):
            out.append(f.name)
    return out
