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
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .errors import ConfigError, check

__all__ = ["read_structured", "load_yaml", "MAX_INPUT_BYTES", "MAX_INPUT_VALUES", "work_dir", "publish_dir",
           "check_out", "check_writable", "check_folder_name", "first_free_dir", "free_dirs"]

#: The largest structured input file read (a config, fleet file, grid...): the largest real one,
#: a fleet of ten thousand devices, is about 2 MB.
MAX_INPUT_BYTES = 64 * 1024**2
#: The most values (scalars, lists and mappings) a YAML document may expand to through its
#: aliases: ``&a [x, x, ...]`` nested nine deep is 600 bytes and 10**9 values ("billion laughs").
MAX_INPUT_VALUES = 2_000_000


class _TooLarge(Exception):
    """A YAML document that expands beyond :data:`MAX_INPUT_VALUES` values, or refers to itself."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values ``node`` stands for once every alias is copied out (memoised per node, so
    a document of shared aliases is measured without expanding it)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise _TooLarge("an alias that refers to itself")
    open_.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes, open_) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, sizes, open_) + _expanded_size(v, sizes, open_) for k, v in node.value)
    open_.discard(key)
    if total > MAX_INPUT_VALUES:
        raise _TooLarge(f"more than {MAX_INPUT_VALUES:,} values once its aliases are expanded")
    sizes[key] = total
    return total


def load_yaml(text: str, field: str, value: Any) -> Any:
    """``yaml.safe_load(text)``, refusing (ConfigError naming ``field`` and ``value``) a document
    that expands beyond :data:`MAX_INPUT_VALUES` values through aliases, refers to itself, or is
    nested too deeply to parse: each would otherwise take minutes and gigabytes before any of its
    keys could be checked."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    except _TooLarge as exc:
        raise ConfigError(field, value, "a YAML document of ordinary size", f"it has {exc}") from None
    except RecursionError:
        raise ConfigError(field, value, "a YAML document of ordinary size", "it is nested too deeply") from None
    finally:
        loader.dispose()


def _parse_yaml(text: str) -> Any:
    return load_yaml(text, "", "")


_PARSERS: dict[str, Callable[[str], Any]] = {
    ".yaml": _parse_yaml,
    ".yml": _parse_yaml,
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
        ConfigError: the file is missing, has another suffix, is larger than :data:`MAX_INPUT_BYTES`,
            expands beyond :data:`MAX_INPUT_VALUES` values or does not parse; the message is one
            line with the first line of the parser's complaint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(field, str(path), f"an existing {_SUFFIXES} file")
    parser = _PARSERS.get(path.suffix.lower())
    if parser is None:
        raise ConfigError(field, str(path), f"a file ending in {_SUFFIXES}")
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise ConfigError(field, str(path), f"a file of at most {MAX_INPUT_BYTES // 1024**2} MB",
                          f"it has {size / 1024**2:.0f} MB")
    try:
        return parser(path.read_text(encoding="utf-8"))
    except ConfigError as exc:  # from load_yaml, which does not know the file's name
        raise ConfigError(field, str(path), exc.valid, exc.hint) from None
    except RecursionError:
        raise ConfigError(field, str(path), "a well-formed YAML/TOML/JSON file", "it is nested too deeply") from None
    except (yaml.YAMLError, ValueError) as exc:  # JSON/TOML decode and UnicodeDecodeError are ValueErrors
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ConfigError(field, str(path), "a well-formed YAML/TOML/JSON file", first) from None


#: A work directory holds the id of the process building it, so that another process never
#: deletes a work directory still in use (two evaluations started together, say).
_OWNER = ".owner"


def _running_owner(tmp: Path) -> int | None:
    """The id of the other process on this machine still building ``tmp``, or None (a stale one)."""
    try:
        pid = int((tmp / _OWNER).read_text())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return pid
    return pid


def work_dir(out: Path, field: str = "--out", keep: bool = False) -> Path:
    """A hidden sibling of ``out`` (``.<name>.tmp``) to build ``out`` in: fresh and empty, or with
    ``keep`` one as it was left (an interrupted evaluation continues in it; the caller must hold
    the lock on ``out``, which is what makes it stale -- a recorded pid may have been reused).

    A stale one (its process has ended) is otherwise replaced; one another running process is
    building is refused with a ConfigError naming ``field``, never deleted.
    """
    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    busy = "an output no other process is writing"
    if tmp.exists():
        if keep and tmp.is_dir():  # the caller holds out's lock (hasfl_sec.locks): no one else builds it
            (tmp / _OWNER).write_text(str(os.getpid()))
            return tmp
        pid = _running_owner(tmp)
        if pid is not None:
            raise ConfigError(field, str(out), busy, f"process {pid} is building it in {tmp}")
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
    except FileExistsError:
        raise ConfigError(field, str(out), busy, f"another process has just created {tmp}") from None
    (tmp / _OWNER).write_text(str(os.getpid()))
    return tmp


def publish_dir(tmp: Path, out: Path) -> Path:
    """Move the finished ``tmp`` to ``out``, replacing an existing ``out`` only once ``tmp`` is
    complete (the old one is moved aside first, then removed)."""
    (tmp / _OWNER).unlink(missing_ok=True)
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # pragma: no cover - not POSIX
        return 255


def check_writable(out: Path, field: str = "--out") -> None:
    """Refuse an output folder this process could not create or fill, before any work: a name
    too long for the filesystem (counting the hidden siblings ``.<name>.tmp``/``.lock`` built
    beside it), or a folder (``out`` if it exists, else its nearest existing parent) in which a
    file cannot be created (permissions, a read-only or pseudo filesystem, an immutable folder).
    A probe folder is created and removed at once; nothing else is touched."""
    resolved = Path(os.path.abspath(out))
    # os.path.exists, not Path.exists: the latter raises on a name too long for the filesystem
    existing = next((p for p in (resolved, *resolved.parents) if os.path.exists(p)), Path(resolved.anchor))
    limit = _name_max(existing if existing.is_dir() else existing.parent)
    # the last name also carries the hidden siblings' ".<name>.lock" (6 more bytes)
    for part, most in [*((p, limit) for p in resolved.parts[1:-1]), (resolved.name, limit - 6)]:
        if len(os.fsencode(part)) > most:
            raise ConfigError(field, str(out), f"a path whose folder names have at most {most} bytes",
                              f"{part[:24]}... has {len(os.fsencode(part))}")
    for folder in dict.fromkeys((existing, resolved.parent) if os.path.exists(resolved.parent) else (existing,)):
        if not folder.is_dir():
            continue  # a path below a file: check_out says so
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".hasfl-probe-", dir=folder))
        except OSError as exc:
            raise ConfigError(field, str(out), "a folder this process can write",
                              f"cannot create files in {folder}: {exc.strerror or exc}") from None


def check_out(out: Path, overwrite: bool, inputs: Sequence[Path] = (), field: str = "--out",
              marker: str | None = None) -> None:
    """Refuse an output directory that cannot be written safely.

    Refused: a file, or a path below a file; the working directory, one of its parents or the
    filesystem root (replacing it would delete everything in it); a directory that would replace
    one of ``inputs``; an existing non-empty directory unless ``overwrite``, and with ``overwrite``
    one without the ``marker`` file the command writes (``eval.json``...), so that ``--overwrite``
    never replaces a folder of other reports or of the user's. Only ``out`` itself is ever
    replaced, and only once the new one is complete (:func:`publish_dir`).
    """
    check_writable(out, field)
    resolved = out.resolve()
    below_file = next((p for p in resolved.parents if p.exists() and not p.is_dir()), None)
    if below_file is not None:
        raise ConfigError(field, str(out), "a path in a directory", f"{below_file} is a file")
    if out.exists() and not out.is_dir():
        raise ConfigError(field, str(out), "a directory", "a file has that name")
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path(resolved.anchor):
        raise ConfigError(field, str(out), "a directory below the working directory or elsewhere",
                          "it would replace the working directory or one of its parents")
    for path in inputs:
        if resolved == path.resolve() or resolved in path.resolve().parents:
            raise ConfigError(field, str(out), "a directory apart from the input directories",
                              f"it would replace {path}")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(field, str(out), "a new or empty directory", "pass --overwrite to replace it")
        if marker is not None and not (out / marker).is_file():
            raise ConfigError(field, str(out), f"a new or empty directory, or one with {marker} to replace",
                              f"--overwrite replaces only an output of this command, and {out} has no {marker}")


#: A report or run name: one folder name, not hidden (hidden siblings are work directories).
_FOLDER_NAME = re.compile(r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*")


def check_folder_name(field: str, name: Any) -> str:
    """``name`` if it names exactly one ordinary folder inside its parent, else a ConfigError.

    Refused: the empty name, ``.`` and ``..`` (they resolve to the parent or above), names with a
    path separator (they leave the parent), hidden names (``.x``; work directories are hidden
    siblings, see :func:`work_dir`) and control characters (NUL cannot be in a path).
    """
    valid = "a folder name: not empty, no '/', '\\' or control characters, not starting with '.'"
    check(isinstance(name, str) and _FOLDER_NAME.fullmatch(name) is not None, field, name, valid)
    return name


def free_dirs(parent: Path, stem: str) -> Iterator[Path]:
    """``parent/stem``, ``parent/stem-2``, ``stem-3``, ... : those that do not exist and have no
    stopped evaluation's work directory beside them, in order (checked as each is asked for)."""
    n = 1
    while True:
        out = parent / (stem if n == 1 else f"{stem}-{n}")
        n += 1
        if not out.exists() and not out.with_name(f".{out.name}.tmp").exists():
            yield out


def first_free_dir(parent: Path, stem: str) -> Path:
    """The first of :func:`free_dirs`, so a default output never replaces or blocks on an earlier one."""
    return next(free_dirs(parent, stem))
