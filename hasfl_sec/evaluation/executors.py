"""Executors: where an evaluation's cells run (docs/design.md section 3.1).

``EXECUTORS`` maps a backend name to a function that runs a list of (cell, run folder) tasks and
calls ``done(task, crash)`` as each one ends -- in completion order, so results stream back while
the rest still run. ``crash`` is None when the cell wrote its ``cell.json`` (finished or failed
with a reason); otherwise it says why the process running the cell died.

* ``local`` -- worker processes on this machine. With one worker the cells run in this process, one
  after another. With more, each worker is a *spawned* process (never forked: a forked torch is
  unsafe) that imports the package once and then takes one cell at a time; a worker that dies
  (killed, out of memory) fails exactly the cell it was running, and a fresh worker takes its place.
* ``ray`` -- each cell is a Ray task (``pip install "hasfl-sec[ray]"``) with ``num_cpus`` equal to
  the cell's torch threads, on a local Ray instance or a cluster (``address``). A task computes its
  cell in a temporary folder on whichever node runs it and returns the folder as an archive, so the
  nodes need no shared file system; every node needs the same hasfl-sec (checked: a node with other
  code fails its cells) and the data under the same ``--data-root``.

Every cell runs with its own number of torch threads (:attr:`ExecutorConfig.threads`, 1 by
default) whatever the backend and the number of workers, because the thread count changes the
floating-point summation order: with equal threads, every backend gives the same tables.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import platform
import signal
import socket
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..errors import ConfigError, check, check_threads, cores, memory_total
from ..registry import Registry
from ..results import package_versions
from .cells import Cell, code_version, fail_cell, run_cell

__all__ = ["ExecutorConfig", "EXECUTORS", "default_workers", "session", "Task", "Done"]

logger = logging.getLogger(__name__)

Task = tuple[Cell, Path]
Done = Callable[[Task, Optional[str]], None]

EXECUTORS: Registry[Callable[[list[Task], "ExecutorConfig", Done], None]] = Registry("executor", "--backend")

#: Memory a worker is assumed to need when the number of workers is chosen for the user.
WORKER_MEMORY_BYTES = 2 * 1024**3


def default_workers(threads: int, cells: int) -> int:
    """As many workers as the cores hold at ``threads`` torch threads each, no more than there are
    cells, and no more than the memory holds at 2 GB per worker."""
    workers = max(1, cores() // threads)
    memory = memory_total()
    if memory:
        workers = min(workers, max(1, memory // WORKER_MEMORY_BYTES))
    return max(1, min(workers, cells))


@dataclass
class ExecutorConfig:
    """How an evaluation runs its cells.

    Attributes:
        backend: ``local`` (processes on this machine) or ``ray`` (``hasfl-sec list executors``).
        workers: cells at a time; None: :func:`default_workers` (``local``), or as many as the Ray
            cluster's CPUs allow (``ray``).
        threads: torch CPU threads per cell (results depend on it; see module doc).
        address: the Ray cluster to join (``auto`` or ``host:port``); None starts a local instance.
    """

    backend: str = "local"
    workers: Optional[int] = None
    threads: int = 1
    address: Optional[str] = None

    def validate(self) -> "ExecutorConfig":
        """Check every field; returns self."""
        EXECUTORS.get(self.backend)
        check_threads("--threads", self.threads)
        if self.workers is not None:
            # a local worker is a process of its own: beyond 4 per core they only wait for each other
            most = 1024 if self.backend == "ray" else 4 * cores()
            check(isinstance(self.workers, int) and 1 <= self.workers <= most, "--workers", self.workers,
                  f"an integer from 1 to {most}")
        if self.address is not None:
            check(self.backend == "ray", "--address", self.address, "only with --backend ray")
        if self.backend == "ray":
            _import_ray()
            _check_importable_by_ray()
            _check_reachable(self.address)
        return self


# -- local ----------------------------------------------------------------------------------------

def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when its parent dies, however it dies (even ``kill -9``): an
    orphan would go on writing a cell that a re-run of the evaluation computes again."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux: the parent's finally stops workers
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


def _setup_worker(threads: int, level: int, parent: int) -> None:
    """A spawned worker dies with its parent, logs like the CLI and ignores Ctrl-C (the parent
    stops it)."""
    import torch

    _die_with_parent(parent)
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s [worker %(process)d]: %(message)s")


def _worker_loop(conn: Connection, threads: int, level: int, parent: int) -> None:
    """A worker: take a (cell, folder), compute it, answer its status; stop on None."""
    _setup_worker(threads, level, parent)
    while True:
        task = conn.recv()
        if task is None:
            return
        cell, run_dir = task
        conn.send(run_cell(cell, run_dir).status)


class _Worker:
    """One spawned worker process and the task it is running."""

    def __init__(self, ctx: Any, threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_loop, daemon=True,
                                args=(child, threads, logging.getLogger().getEffectiveLevel(), os.getpid()))
        self.proc.start()
        child.close()
        self.task: Task | None = None

    def give(self, task: Task) -> None:
        """Send ``task``; a worker that died while idle shows as ended at once (its sentinel)."""
        self.task = task
        try:
            self.conn.send(task)
        except OSError:  # the pipe's far end is gone: the loop sees the dead process next
            pass

    def stop(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def _answered(worker: _Worker) -> bool:
    """Whether the worker has answered its task (a closed pipe is a death, not an answer)."""
    try:
        if worker.conn.poll():
            worker.conn.recv()
            return True
    except (EOFError, OSError):  # its end of the pipe is gone: make sure the process is too
        worker.proc.kill()
        worker.proc.join()
    return False


def _death(code: int | None) -> str:
    """Why a worker process ended without an answer, in one line."""
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"its worker process was killed by {name} (out of memory, or stopped from outside)"
    return f"its worker process exited with code {code} before the cell finished"


@EXECUTORS.register("local", help="worker processes on this machine (--workers N; 1: in this process)")
def run_local(tasks: list[Task], config: ExecutorConfig, done: Done) -> None:
    """Run ``tasks`` on this machine (see module doc)."""
    workers = min(config.workers or default_workers(config.threads, len(tasks)), len(tasks))
    if workers * config.threads > cores():
        logger.warning("%d workers x %d threads oversubscribe the %d cores: expect each cell to run slower",
                       workers, config.threads, cores())
    if workers <= 1:
        for task in tasks:
            run_cell(*task)
            done(task, None)
        return
    ctx = multiprocessing.get_context("spawn")
    queue, pool = list(tasks), [_Worker(ctx, config.threads) for _ in range(workers)]
    try:
        for worker in pool:
            if queue:
                worker.give(queue.pop(0))
        while any(w.task is not None for w in pool):
            busy = [w for w in pool if w.task is not None]
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy])
            for i, worker in enumerate(pool):
                if worker.task is None:
                    continue
                task = worker.task
                if _answered(worker):
                    worker.task = None
                    done(task, None)
                elif not worker.proc.is_alive():
                    worker.task = None
                    done(task, _death(worker.proc.exitcode))
                    worker.stop()
                    pool[i] = worker = _Worker(ctx, config.threads)
                else:
                    continue
                if queue:
                    if not worker.proc.is_alive():  # died while idle: its next cell must not be blamed
                        worker.stop()
                        pool[i] = worker = _Worker(ctx, config.threads)
                    worker.give(queue.pop(0))
    finally:
        for worker in pool:
            if worker.task is not None:  # interrupted: do not leave workers computing
                worker.proc.kill()
            worker.stop()


# -- ray ------------------------------------------------------------------------------------------

def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def unpack(blob: bytes, folder: Path) -> None:
    """Extract a folder archived by a Ray task into ``folder`` (replacing it)."""
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        try:
            tar.extractall(folder, filter="data")
        except TypeError:  # pragma: no cover - Python without extraction filters
            tar.extractall(folder)


def _environment() -> dict[str, str]:
    """What a cell's key assumes of the process computing it: the code and the libraries' versions."""
    return {"code": code_version(), **package_versions()}


def ray_cell(cell: Cell, driver: dict[str, str]) -> bytes:
    """A Ray task: compute ``cell`` in a temporary folder of the node that runs it and return the
    folder as an archive. A node whose code or library versions differ from the driver's (which
    the cell's key assumes) fails the cell, saying what differs."""
    import torch

    torch.set_num_threads(cell.threads)
    with tempfile.TemporaryDirectory(prefix="hasfl-cell-") as tmp:
        run_dir = Path(tmp) / cell.name
        here = _environment()
        differ = [f"{k} {here.get(k)} (driver {v})" for k, v in driver.items() if here.get(k) != v]
        if differ:
            fail_cell(cell, run_dir, f"the Ray node {platform.node()} runs " + ", ".join(differ)
                      + "; install the same versions on every node")
        else:
            run_cell(cell, run_dir)
        return _pack(run_dir)


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of an error's text (a Ray task error ends with the original one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def _check_importable_by_ray() -> None:
    """Ray puts the driver's working directory on its workers' import path: a source tree of
    hasfl-sec there (the repository root, with a non-editable install) would shadow the installed
    package in the workers, which then fail every cell. Refuse that at the door."""
    import hasfl_sec

    local = Path.cwd() / "hasfl_sec"
    installed = Path(hasfl_sec.__file__).resolve().parent
    if local.is_dir() and local.resolve() != installed:
        raise ConfigError("--backend", "ray", "a working directory without another copy of the hasfl_sec package",
                          f"Ray workers import from the working directory, where {local} would shadow the "
                          f"installed {installed}; run from another directory")


def _check_reachable(address: str | None) -> None:
    """Refuse at once a ``host:port`` nothing listens on (Ray itself would retry for minutes)."""
    if address is None or address == "auto":
        return
    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("--address", address, "auto, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError("--address", address, "a reachable Ray cluster (auto or host:port)",
                          f"nothing answers there: {exc.strerror or exc}") from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend", "ray", "an installed Ray", 'pip install "hasfl-sec[ray]"') from None
    return ray


def _connect(ray: Any, config: ExecutorConfig, cells: int) -> None:
    """Start a local Ray instance (``num_cpus`` = workers x threads) or join ``config.address``."""
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if config.address is None:
        kwargs["num_cpus"] = (config.workers or default_workers(config.threads, cells)) * config.threads
    try:
        ray.init(address=config.address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError("--address", config.address, "a reachable Ray cluster (auto or host:port)",
                          " ".join(str(exc).split())[:200]) from None


@contextmanager
def session(config: ExecutorConfig, cells: int) -> Iterator[None]:
    """Connect to the backend for a block (Ray: start or join it, and leave it at the end), so that
    an unreachable cluster is refused before any work; a no-op for ``local``."""
    if config.backend != "ray":
        yield
        return
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        _connect(ray, config, cells)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@EXECUTORS.register("ray", help="Ray tasks on a local instance or a cluster (--address)")
def run_ray(tasks: list[Task], config: ExecutorConfig, done: Done) -> None:
    """Run ``tasks`` as Ray tasks (see module doc), in the :func:`session` if one is open."""
    ray = _import_ray()
    with session(config, len(tasks)):
        remote = ray.remote(ray_cell).options(num_cpus=config.threads, max_retries=0)
        driver = _environment()
        pending = {remote.remote(task[0], driver): task for task in tasks}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ready[0])
                try:
                    unpack(ray.get(ready[0]), task[1])
                except ray.exceptions.RayError as exc:  # a task whose worker or node died
                    done(task, f"its Ray task failed: {type(exc).__name__}: {_last_line(exc)}")
                    continue
                except (tarfile.TarError, OSError) as exc:
                    done(task, f"its results could not be unpacked: {_last_line(exc)}")
                    continue
                done(task, None)
        finally:
            for ref in pending:  # interrupted: on a joined cluster, tasks would go on without us
                ray.cancel(ref, force=True)
