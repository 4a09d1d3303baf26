"""One writer per folder: an exclusive OS-level lock held for as long as a command writes a folder.

Every command that writes a folder -- a run (``hasfl-sec train``), an audit, an evaluation, a
collected report -- holds :func:`lock_folder` on it for its whole lifetime. A second process that
wants to write the same folder is refused at once with a one-line
:class:`~hasfl_sec.errors.ConfigError` naming the holder's process id and command line::

    --out: got 'runs/demo'; expected a folder no other process is writing
    (process 4242 is writing it: hasfl-sec train --out runs/demo)

(one line in practice). How it works:

* The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the hidden sibling file ``<parent>/.<name>.lock``
  -- not a file inside the folder, which may not exist yet and whose contents must stay exactly
  what the command writes. The kernel drops the lock when the process ends, however it ends
  (even ``kill -9``), so a crash never leaves a folder locked.
* The holder writes ``pid <pid>: <command line>`` into the file, which is what the error quotes.
* On release the file is unlinked, then closed. A process that opened the file just before the
  unlink may then lock an inode no path names any more; it therefore checks after locking that
  the path still names the inode it locked, and starts over if not (lock, then verify).
* The lock is re-entrant within one process: locking a folder the process already holds returns
  a nested handle that does nothing, so a library function can lock the folder it writes and a
  caller that locked it first (the CLI, for the command's whole lifetime) does not deadlock. The
  lock is per process, not per thread.
* Without ``fcntl`` (Windows) locking is a no-op that logs a warning once; Linux is the target.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FolderLock", "lock_folder", "lock_file_of", "command_line"]

logger = logging.getLogger(__name__)

#: How long a refused process waits for the holder to write its pid into a just-created lock file.
_READ_HOLDER_S = 1.0
_MAX_COMMAND = 200
_HOLDER = re.compile(r"pid (\d+): (.*)", re.DOTALL)


@dataclass
class _Held:
    """A lock this process holds: the locked file's descriptor, how many handles share it, and
    the folders made to hold the lock file (removed at release if still empty, so a command
    refused after taking its lock leaves no folder behind)."""

    fd: int
    depth: int = 1
    made: tuple[Path, ...] = ()


#: The locks this process holds, by lock-file path (from the folder's resolved path).
_HELD: dict[Path, _Held] = {}
_HELD_GUARD = threading.Lock()
_warned = False


def _forget_after_fork() -> None:
    """A forked child is another process: it holds none of its parent's locks itself."""
    global _HELD_GUARD
    _HELD.clear()
    _HELD_GUARD = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def lock_file_of(folder: str | Path) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` beside it, from its resolved path (so every
    spelling of one folder, through symlinks or ``..``, shares one lock)."""
    resolved = Path(folder).resolve()
    return resolved.parent / f".{resolved.name or 'root'}.lock"


def command_line(argv: list[str] | None = None) -> str:
    """This process's command line as a shell would show it, the program reduced to its base name
    (``hasfl-sec train --out run``), cut to about 200 characters."""
    argv = list(sys.argv if argv is None else argv) or ["python"]
    argv[0] = os.path.basename(argv[0]) or argv[0]
    text = shlex.join(argv)
    return text if len(text) <= _MAX_COMMAND else text[: _MAX_COMMAND - 3] + "..."


def _try_flock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; False if another process holds it."""
    global _warned
    if fcntl is None:  # pragma: no cover - Windows
        if not _warned:
            logger.warning("no fcntl on this platform: output folders are not locked against other writers")
            _warned = True
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    """True if ``path`` still names the inode open as ``fd`` (the holder before us may have unlinked it)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _holder(fd: int) -> tuple[str, str]:
    """The pid and command line the holder of ``fd``'s lock wrote, waiting briefly for a holder
    that has locked the file but not yet written into it; ``("?", "unknown command")`` if none."""
    deadline = time.monotonic() + _READ_HOLDER_S
    while True:
        text = os.pread(fd, 4 * _MAX_COMMAND, 0).decode("utf-8", "replace").strip()
        match = _HOLDER.fullmatch(text)
        if match or time.monotonic() >= deadline:
            return (match.group(1), match.group(2)) if match else ("?", "unknown command")
        time.sleep(0.02)


def _busy(folder: Path, field: str, fd: int) -> ConfigError:
    """The one-line error for ``folder``, whose lock file ``fd`` another process holds."""
    pid, command = _holder(fd)
    return ConfigError(field, str(folder), "a folder no other process is writing",
                       f"process {pid} is writing it: {command}")


def _open(folder: Path, field: str, path: Path) -> int:
    """The lock file's descriptor, creating the file (and the folder's parent) if missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # the parent is a file, or not writable: say so in one line
        raise ConfigError(field, str(folder), "a folder whose parent can hold its lock file",
                          f"cannot create {path}: {exc.strerror or exc}") from None


def _acquire(folder: Path, field: str, path: Path) -> int:
    """Lock ``path`` for this process (lock, then verify the path still names the locked inode);
    returns the descriptor, with ``pid <pid>: <command line>`` written into the file."""
    while True:
        fd = _open(folder, field, path)
        try:
            if not _try_flock(fd):
                raise _busy(folder, field, fd)
            if fcntl is None or _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # unlinked by its holder while we waited for it: lock the file that is there now
    # empty first (a killed holder's line may be there), so a refused process reads either
    # nothing (and waits) or the whole line
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"pid {os.getpid()}: {command_line()}\n".encode())
    return fd


def _missing_folders(folder: Path) -> tuple[Path, ...]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return tuple(missing)


def _remove_empty(folders: tuple[Path, ...]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; one holding an output stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _release(fd: int, path: Path) -> None:
    """Unlink the lock file (only if it is still ours), then close it, which drops the lock."""
    try:
        if _same_file(fd, path):
            os.unlink(path)
    except OSError:  # pragma: no cover - e.g. Windows cannot unlink an open file; the lock still ends
        pass
    os.close(fd)


class FolderLock:
    """An exclusive lock on one folder for this process (see the module docstring).

    Use it as a context manager, or take it at once with :func:`lock_folder`::

        with lock_folder(run_dir, "--out"):
            ...  # write run_dir

    Args:
        folder: the folder to be written; it need not exist yet.
        field: the setting the folder came from, named in the error (``"--out"``, ``"RUN_DIR"``).
    """

    def __init__(self, folder: str | Path, field: str = "--out") -> None:
        self.folder = Path(folder)
        self.field = field
        self.path = lock_file_of(self.folder)
        self._held = False

    @property
    def held(self) -> bool:
        """True between :meth:`acquire` and :meth:`release`."""
        return self._held

    def acquire(self) -> FolderLock:
        """Take the lock (a nested no-op if this process holds it already); returns ``self``.

        Raises:
            ConfigError: another process holds it (the message names its pid and command line),
                or the lock file cannot be created.
        """
        if self._held:
            raise RuntimeError(f"FolderLock({self.folder}) is already acquired through this handle")
        with _HELD_GUARD:
            held = _HELD.get(self.path)
            if held is not None:
                held.depth += 1
            else:
                made = _missing_folders(self.path.parent)
                try:
                    _HELD[self.path] = _Held(_acquire(self.folder, self.field, self.path), made=made)
                except BaseException:
                    _remove_empty(made)
                    raise
        self._held = True
        return self

    def release(self) -> None:
        """Give the lock up; the outermost handle of this process unlinks the lock file and unlocks it."""
        if not self._held:
            return
        self._held = False
        with _HELD_GUARD:
            held = _HELD.get(self.path)
            if held is None:  # forgotten by a fork: this process never held it itself
                return
            held.depth -= 1
            if held.depth == 0:
                del _HELD[self.path]
                _release(held.fd, self.path)
                _remove_empty(held.made)

    def __enter__(self) -> FolderLock:
        return self if self._held else self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"FolderLock({str(self.folder)!r}, field={self.field!r}, held={self._held})"


def lock_folder(folder: str | Path, field: str = "--out") -> FolderLock:
    """Lock ``folder`` for writing now and return the held :class:`FolderLock` (a context manager
    that releases it). Locking a folder this process already holds returns a nested handle.

    Raises:
        ConfigError: another process is writing ``folder``; one line naming ``field``, the folder,
            and the holder's pid and command line.
    """
    return FolderLock(folder, field).acquire()
