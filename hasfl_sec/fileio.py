"""Reading structured input files (YAML, JSON, TOML) with one-line errors; atomic directories.

Config files (``--config``) and fleet files (``fleet.file``) share one reader: the parser is
picked by the file's suffix and every problem -- a missing file, an unknown suffix, a parse error
-- becomes a one-line :class:`~hasfl_sec.errors.ConfigError` naming the field and the path.

Outputs made of many files (an audit, an evaluation, a collected report) are written into a
hidden sibling (:func:`work_dir`) and moved into place in one step (:func:`publish_dir`), so a
reader never sees a half-written directory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .errors import ConfigError

__all__ = ["read_structured", "work_dir", "publish_dir"]

_PARSERS: dict[str, Callable[[str], Any]] = {
    ".yaml": yaml.safe_load,
    ".yml": yaml.safe_load,
    ".toml": tomllib.loads,
    ".json": json.loads,
}
_SUFFIXES = ".yaml, .yml, .toml or .json"


def read_structured(path: str | Path, field: str) -> Any:
    """The parsed contents of the YAML/JSON/TOML file ``path`` (``None`` for an empty YAML file).

    Args:
        path: the file; its suffix (``.yaml``, ``.yml``, ``.json``, ``.toml``) picks the parser.
        field: the setting the path came from, named in every error (``"--config"``, ``"fleet.file"``).

    Raises:
        ConfigError: the file is missing, has another suffix or does not parse; the message is one
            line with the first line of the parser's complaint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(field, str(path), f"an existing {_SUFFIXES} file")
    parser = _PARSERS.get(path.suffix.lower())
    if parser is None:
        raise ConfigError(field, str(path), f"a file ending in {_SUFFIXES}")
    try:
        return parser(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as exc:  # JSON/TOML decode and UnicodeDecodeError are ValueErrors
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ConfigError(field, str(path), "a well-formed YAML/TOML/JSON file", first) from None


def work_dir(out: Path) -> Path:
    """A fresh, empty hidden sibling of ``out`` (``.<name>.tmp``) to build ``out`` in."""
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    return tmp


def publish_dir(tmp: Path, out: Path) -> Path:
    """Move the finished ``tmp`` to ``out``, replacing an existing ``out`` only once ``tmp`` is
    complete (the old one is moved aside first, then removed)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out
