"""User-facing error types.

Every mistake a user can make in a config, on the command line or in a fleet file is raised as a
:class:`ConfigError`. Its message is one line that names the field, the value that was given and
what would have been valid. The CLI turns it into exit code 2 without a traceback; library users
catch it as a ``ValueError``.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["ConfigError", "HasflError", "check"]


class HasflError(Exception):
    """Base class of every error hasfl-sec raises on purpose."""


class ConfigError(HasflError, ValueError):
    """Bad input: names the field, the value given and what is valid.

    Args:
        field: dotted name of the offending setting (``"plan.cut"``, ``"fleet.devices[3].flops"``).
        value: the value that was given.
        valid: what would have been accepted, as text or as an iterable of valid choices.
        hint: optional extra advice appended to the message.
    """

    def __init__(self, field: str, value: Any, valid: str | Iterable[Any], hint: str = "") -> None:
        if not isinstance(valid, str):
            valid = "one of " + ", ".join(str(v) for v in valid)
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        message = f"{field}: got {shown}; expected {valid}"
        if hint:
            message += f" ({hint})"
        super().__init__(message.replace("\n", " "))
        self.field = field
        self.value = value
        self.valid = valid


def check(condition: bool, field: str, value: Any, valid: str | Iterable[Any], hint: str = "") -> None:
    """Raise :class:`ConfigError` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, value, valid, hint)
