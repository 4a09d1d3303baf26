"""User-facing error types.

Every mistake a user can make in a config, on the command line or in a fleet file is raised as a
:class:`ConfigError`. Its message is one line that names the field, the value that was given and
what would have been valid. The CLI turns it into exit code 2 without a traceback; library users
catch it as a ``ValueError``.

The range checks shared by many settings live here too: counts (:data:`MAX_COUNT`), thread counts
and memory, against what this machine holds (:func:`cores`, :func:`memory_available`), so that a
value that would exhaust the machine (``--threads 1000000``, an image size whose resized data set
needs terabytes, a count so large a run would never end) is refused where it enters instead of
failing minutes later in the allocator (docs/design.md section 9).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

__all__ = ["ConfigError", "HasflError", "check", "MAX_COUNT", "check_count", "check_threads", "check_memory",
           "cores", "memory_total", "memory_available", "human_bytes"]


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
        self.hint = hint


def check(condition: bool, field: str, value: Any, valid: str | Iterable[Any], hint: str = "") -> None:
    """Raise :class:`ConfigError` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, value, valid, hint)

#: The largest count (rounds, devices, images, steps, ...) any setting accepts: beyond it a run
#: would not end in a lifetime on any machine, and a typo (an exponent too many) is likelier.
MAX_COUNT = 10**7


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def memory_total() -> int | None:
    """Physical memory in bytes, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def memory_available() -> int | None:
    """Memory a new allocation can get now (``MemAvailable``; physical memory where that is unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return memory_total()


def human_bytes(n: float) -> str:
    """``57480000000000`` -> ``'57.5 TB'`` (powers of 1000, as disk and memory sizes are quoted)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError("unreachable")


def check_threads(field: str, value: object) -> int:
    """``value`` if it is a thread count this machine can start: 1 to 4 x its cores (beyond that
    threads only wait for each other, and torch's pool can exhaust memory at start-up)."""
    limit = 4 * cores()
    check(isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= limit, field, value,
          f"an integer from 1 to {limit} (4 x the {cores()} cores)")
    return value  # type: ignore[return-value]


def check_memory(field: str, value: object, need: float, what: str) -> None:
    """Refuse ``value`` of ``field`` if ``what`` needs more than ``need`` bytes and this machine has
    less available; no check where the platform does not report memory."""
    available = memory_available()
    if available is None:
        return
    check(need <= available, field, value, f"a value whose {what} fit in the {human_bytes(available)} of memory "
          f"available", f"it needs about {human_bytes(need)}")


def check_count(field: str, value: object, low: int = 1) -> None:
    """Refuse an integer count outside ``low..MAX_COUNT``."""
    check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_COUNT, field, value,
          f"an integer from {low} to {MAX_COUNT:,}")
