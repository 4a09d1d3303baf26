"""One writer per folder (:mod:`hasfl_sec.locks`), with real processes: a second writer is refused
at once naming the holder, a killed holder frees the folder, a process may lock a folder it holds,
and ``train``, ``audit`` and ``report --out`` refuse a folder another command is writing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from conftest import small_overrides

from hasfl_sec.errors import ConfigError
from hasfl_sec.locks import FolderLock, command_line, lock_file_of, lock_folder

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_EVAL = ROOT / "reports" / "example"

#: Holds the lock of argv[1] until it is killed; says "locked" once it holds it.
HOLDER = """
import sys, time
from hasfl_sec.locks import lock_folder
lock = lock_folder(sys.argv[1], "--out")
print("locked", flush=True)
time.sleep(600)
"""

#: Tries to lock argv[1] once: prints "ok" or the error's message.
PROBE = """
import sys
from hasfl_sec.errors import ConfigError
from hasfl_sec.locks import lock_folder
try:
    with lock_folder(sys.argv[1], "--out"):
        print("ok")
except ConfigError as exc:
    print(exc)
"""

#: argv[3] rounds of: take the lock (retrying when refused), and inside it create a marker file
#: exclusively -- which fails if another process is inside at the same time -- and remove it.
STRESS = """
import os, sys, time
from hasfl_sec.errors import ConfigError
from hasfl_sec.locks import lock_folder
folder, inside, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
done = 0
while done < rounds:
    try:
        lock = lock_folder(folder)
    except ConfigError:
        time.sleep(0.001)
        continue
    with lock:
        os.close(os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.unlink(inside)
    done += 1
"""


SCRIPTS = {"holder": HOLDER, "probe": PROBE, "stress": STRESS}


def _python(tmp_path: Path, name: str, *args: str) -> list[str]:
    """A command running the script ``name`` from a file (so its command line reads ``<name>.py ARGS``)."""
    path = tmp_path / f"{name}.py"
    path.write_text(SCRIPTS[name])
    return [sys.executable, str(path), *args]


def _probe(tmp_path: Path, folder: Path) -> str:
    done = subprocess.run(_python(tmp_path, "probe", str(folder)), capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@contextmanager
def _holder(tmp_path: Path, folder: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding ``folder``'s lock, killed on exit."""
    proc = subprocess.Popen(_python(tmp_path, "holder", str(folder)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked", proc.stderr.read()
        yield proc
    finally:
        proc.kill()
        proc.wait()


# the lock itself -----------------------------------------------------------------------------------
def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    folder = tmp_path / "out"
    with _holder(tmp_path, folder) as holder:
        with pytest.raises(ConfigError) as info:
            lock_folder(folder, "--out")
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"--out: got {str(folder)!r}; expected a folder no other process is writing")
        assert f"process {holder.pid} is writing it: holder.py {folder}" in message
    # and the other way round: a process of its own is refused while this one holds it
    with lock_folder(folder):
        answer = _probe(tmp_path, folder)
        assert f"process {os.getpid()} is writing it" in answer
    assert _probe(tmp_path, folder) == "ok"
    assert not folder.exists()  # locking neither creates nor touches the folder


def test_a_killed_holder_frees_the_folder(tmp_path):
    folder = tmp_path / "run"
    with _holder(tmp_path, folder) as holder:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert lock_file_of(folder).is_file()  # left behind by the killed process, but unlocked
        with lock_folder(folder) as lock:
            assert lock.held
            assert lock_file_of(folder).read_text().startswith(f"pid {os.getpid()}: ")
    assert not lock_file_of(folder).exists()


def test_a_process_may_lock_a_folder_it_holds(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "a.txt").write_text("kept")
    with lock_folder(folder, "--out") as outer:
        # another spelling of the same folder is the same lock: a nested handle, no deadlock
        with lock_folder(tmp_path / "x" / ".." / "run", "RUN_DIR") as inner:
            assert inner.held and outer.held
        assert lock_file_of(folder).is_file()
        assert f"process {os.getpid()}" in _probe(tmp_path, folder)  # still held after the inner release
    assert not lock_file_of(folder).exists()  # released and removed
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")] == []
    assert [p.name for p in folder.iterdir()] == ["a.txt"]
    assert _probe(tmp_path, folder) == "ok"


def test_a_folder_lock_is_a_context_manager_taken_on_entry(tmp_path):
    lock = FolderLock(tmp_path / "out")
    assert not lock.held and not lock.path.exists()
    with lock:
        assert lock.held and lock.path == tmp_path / ".out.lock"
    assert not lock.held and not lock.path.exists()
    lock.release()  # releasing twice is harmless


def test_the_lock_file_names_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^RUN_DIR: got .*; expected a folder whose parent can hold its lock file"):
        lock_folder(tmp_path / "file" / "run", "RUN_DIR")
    assert command_line(["/usr/bin/hasfl-sec", "train", "--out", "my run"]) == "hasfl-sec train --out 'my run'"
    long = command_line(["hasfl-sec", "train", *["--set", "train.rounds=5"] * 40])
    assert len(long) == 200 and long.endswith("...")


def test_many_processes_are_never_inside_together(tmp_path):
    """Lock, unlink on release, lock-then-verify: four processes taking turns 400 times each never overlap."""
    folder, inside = tmp_path / "shared", tmp_path / "inside"
    procs = [subprocess.Popen(_python(tmp_path, "stress", str(folder), str(inside), "400"), cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert not lock_file_of(folder).exists() and not inside.exists()


def test_rebuilding_a_report_someone_else_writes_is_refused(tmp_path):
    eval_dir = tmp_path / "eval"
    shutil.copytree(EXAMPLE_EVAL, eval_dir)
    before = (eval_dir / "report.html").read_bytes()
    from hasfl_sec.report import build_report

    with _holder(tmp_path, eval_dir) as holder:
        with pytest.raises(ConfigError, match=rf"^DIR: .*process {holder.pid} is writing it"):
            build_report(eval_dir)
    assert (eval_dir / "report.html").read_bytes() == before


# the commands --------------------------------------------------------------------------------------
TINY_TRAIN = ["--devices", "3", "--rounds", "2", "--set", "plan.candidate_cuts=[1,2]", "--no-progress"]


def _cli(*args: str) -> list[str]:
    """The installed console script (so the holder's command line reads ``hasfl-sec ...``)."""
    script = Path(sys.executable).with_name("hasfl-sec")
    assert script.is_file(), f"no hasfl-sec console script beside {sys.executable}: install the package"
    return [str(script), "-q", *args]


@contextmanager
def _stopped_writer(cmd: list[str], folder: Path, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """Start ``cmd``, wait until it holds ``folder``'s lock, and stop it there (SIGSTOP) so it keeps
    holding the lock while the body runs; it is continued afterwards and must finish with exit 0."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock, deadline = lock_file_of(folder), time.monotonic() + 240
    try:
        while not (lock.is_file() and lock.read_text().startswith(f"pid {proc.pid}: ")):
            assert proc.poll() is None, f"{cmd} ended before locking {folder}: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"{cmd} did not lock {folder}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            yield proc
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_refused(cmd: list[str], holder: subprocess.Popen[str], field: str, cwd: Path) -> None:
    """``cmd`` exits with 2 at once and one line on stderr naming the holder's pid and command."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"Error: {field}: got "), lines[0]
    assert f"process {holder.pid} is writing it: hasfl-sec -q " in lines[0], lines[0]


@pytest.mark.slow
def test_two_trains_into_one_folder(tmp_path):
    run = tmp_path / "run"
    with _stopped_writer(_cli("train", *TINY_TRAIN, "--seed", "0", "--out", str(run)), run, tmp_path) as first:
        _assert_refused(_cli("train", *TINY_TRAIN, "--seed", "1", "--out", str(run)), first, "--out", tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    manifest = yaml.safe_load((run / "manifest.json").read_text())
    assert config["seed"] == manifest["seed"] == 0 and manifest["status"] == "ok"
    assert not lock_file_of(run).exists() and not any(p.name.endswith(".lock") for p in run.iterdir())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 4-device run of 3 rounds."""
    from hasfl_sec.config import load_config
    from hasfl_sec.runs.training import train

    out = tmp_path_factory.mktemp("locks") / "run"
    train(load_config(overrides=small_overrides(**{"train.rounds": 3, "train.eval_every": 3,
                                                   "train.checkpoint_every": 0})), out_dir=out)
    return out


@pytest.mark.slow
def test_two_audits_of_one_run_and_a_resume_meanwhile(finished_run, tmp_path):
    audit = ["audit", str(finished_run), "--attacks", "rmle", "--images", "4", "--attack-param", "rmle.steps=5",
             "--no-progress"]
    with _stopped_writer(_cli(*audit), finished_run, tmp_path) as first:
        _assert_refused(_cli(*audit), first, "RUN_DIR", tmp_path)
        _assert_refused(_cli("train", "--out", str(finished_run), "--resume"), first, "--out", tmp_path)
    assert (finished_run / "audit" / "leakage.csv").is_file()
    assert not lock_file_of(finished_run).exists()


@pytest.mark.slow
def test_two_reports_into_one_folder(finished_run, tmp_path):
    out = tmp_path / "rep"
    report = ["report", str(finished_run), "--out", str(out)]
    with _stopped_writer(_cli(*report), out, tmp_path) as first:
        _assert_refused(_cli(*report), first, "--out", tmp_path)
    assert (out / "report.html").is_file() and not lock_file_of(out).exists()
