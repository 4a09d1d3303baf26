"""Reading structured input files (YAML, JSON, TOML) with one-line errors.

Config files (``--config``) and fleet files (``fleet.file``) share one reader: the parser is
picked by the file's suffix and every problem -- a missing file, an unknown suffix, a parse error
-- becomes a one-line :class:`~hasfl_sec.errors.ConfigError` naming the field and the path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .errors import ConfigError

__all__ = ["read_structured"]

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
