"""Where an evaluation's work happens, and what an earlier run left there (docs/design.md section 3.1).

* :func:`claim_output` locks the output folder (:mod:`hasfl_sec.locks`) and checks it can be
  written, or claims the first free ``reports/default[-N]``;
* :func:`kept_work` gives the hidden work folder ``.<name>.tmp``: an interrupted run's is
  continued, and an error keeps it when cells finished in it;
* :func:`shared_bound` estimates the bound constants once, or reuses an earlier run's when its
  key matches;
* :func:`reuse` finds the finished cells of an earlier run (the work folder's, or with
  ``--overwrite`` the replaced output's) whose key matches.
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from ..config import ExperimentConfig
from ..errors import ConfigError
from ..fileio import check_out, free_dirs, work_dir
from ..locks import lock_folder
from ..planning.bound import BoundConstants
from ..planning.strategies import BOUND_STRATEGIES
from ..runs.setup import prepare
from .cells import CELL_FILE, Cell, CellRecord, read_cell, referenced_files, result_key, torch_threads
from .settings import DEFAULT_NAME

__all__ = ["claim_output", "kept_work", "shared_bound", "reuse"]

logger = logging.getLogger(__name__)


def _claim_default(stack: ExitStack, parent: Path = Path("reports")) -> Path:
    """Lock (on ``stack``) and return the first ``reports/default[-N]`` that no earlier evaluation
    wrote, left behind, or is writing now: a default run never replaces, continues or waits for
    another."""
    for out in free_dirs(parent, DEFAULT_NAME):
        try:
            lock = lock_folder(out, "--name")
        except ConfigError:  # another default evaluation has just claimed it
            continue
        if not out.exists() and not out.with_name(f".{out.name}.tmp").exists():
            stack.enter_context(lock)
            return out
        lock.release()  # it finished or started one in between
    raise AssertionError("unreachable: free_dirs never ends")


def claim_output(stack: ExitStack, out: Path | None, overwrite: bool, field: str, marker: str) -> Path:
    """Lock ``out`` (on ``stack``) and check it can be written, or claim the first free
    ``reports/default[-N]`` when it is None."""
    if out is None:
        return _claim_default(stack)
    stack.enter_context(lock_folder(out, field))
    check_out(out, overwrite, field=field, marker=marker)
    return out


@contextmanager
def kept_work(out: Path, field: str, fresh: bool, kind: str = "eval") -> Iterator[Path]:
    """The work folder of ``out``: an interrupted run's is continued unless ``fresh`` (only one of
    the same ``kind``, ``eval`` or ``sweep``). On an error it is removed if no cell finished in it,
    else kept (and the error raised)."""
    other = {"eval": ("points", "sweep"), "sweep": ("runs", "eval")}[kind]
    stale = out.with_name(f".{out.name}.tmp")
    if not fresh and (stale / other[0]).is_dir():
        raise ConfigError(field, str(out), f"an output whose interrupted run is a {kind}",
                          f"{stale} holds an interrupted {other[1]}: run that again to finish it, or pass --fresh "
                          "to discard it")
    work = work_dir(out, field, keep=not fresh)
    try:
        yield work
    except BaseException:
        records = [read_cell(path.parent) for path in work.glob(f"**/runs/*/{CELL_FILE}")]
        finished = sum(1 for r in records if r is not None and r.ok)
        if finished:
            logger.error("stopped with %d finished cell(s), kept in %s: run the same command again with --out %s "
                         "to continue from them", finished, work, out)
        elif not records:  # nothing worth keeping
            shutil.rmtree(work, ignore_errors=True)
        raise


def shared_bound(configs: dict[str, ExperimentConfig], work: Path, threads: int,
                 earlier: list[Path], label: str = "") -> BoundConstants | None:
    """The bound constants the bound-based planners of one seed share, estimated once on the first
    such arm's config (warm-up and calibration at its seed) with the cells' torch threads and saved
    as ``bound[.label].json``; reused from an ``earlier`` output whose ``bound[.label].key``
    matches. None if no arm needs them."""
    first = next((c for c in configs.values() if c.plan.strategy in BOUND_STRATEGIES), None)
    if first is None:
        return None
    stem = f"bound.{label}" if label else "bound"
    # the bound does not depend on the arm's name, only on what it trains
    key = result_key({**first.to_dict(), "name": ""}, referenced_files(first), threads)
    for folder in earlier:
        try:
            if (folder / f"{stem}.key").read_text().strip() == key:
                bound = BoundConstants.load(folder / f"{stem}.json")
                logger.info("eval: bound constants %s reused from %s", label, folder)
                break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    else:
        logger.info("eval: bound constants %s (warm-up and calibration)", label)
        with torch_threads(threads):
            bound = prepare(first).context.bound()
    bound.save(work / f"{stem}.json")
    (work / f"{stem}.key").write_text(key + "\n")
    return bound


def _link_copy(src: Path, dst: Path) -> None:
    """Copy a finished cell's folder by hard links where the file system allows (its files are
    never modified in place), by copies elsewhere."""
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)


def reuse(cells: list[Cell], runs: Path, sources: list[Path]) -> tuple[dict[str, CellRecord], list[str]]:
    """The finished cells found in ``sources`` (the work folder's ``runs/`` first), copied into
    ``runs`` when they are elsewhere; folders in ``runs`` that belong to no cell of this evaluation
    are removed (their settings changed or their arm is gone)."""
    runs.mkdir(parents=True, exist_ok=True)
    names = {c.name for c in cells}
    for folder in runs.iterdir():
        if folder.name.endswith(".lock"):  # a killed cell's lock file, unless an orphan still holds it
            with lock_folder(folder.with_name(folder.name[1:].removesuffix(".lock")), "--out"):
                pass  # taking and releasing it removes the file; a holder makes this a one-line refusal
        elif folder.name not in names:
            if not folder.name.startswith("."):  # hidden: a temporary file of a killed cell
                logger.warning("eval: %s is not a cell of this evaluation (its arm is gone or renamed): "
                               "removed", folder.name)
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
    records: dict[str, CellRecord] = {}
    for cell in cells:
        for source in sources:
            record = read_cell(source / cell.name, cell.key)
            if record is None or not record.ok:
                continue
            if source != runs:
                shutil.rmtree(runs / cell.name, ignore_errors=True)
                _link_copy(source / cell.name, runs / cell.name)
            records[cell.name] = record
            break
    if records:
        logger.info("eval: %d of %d cells reused (finished earlier with the same key): %s", len(records),
                    len(cells), ", ".join(records))
    return records, list(records)
