"""The project's bad-input suite: every command, refused at the door, keeps the whole promise.

Each case runs ``hasfl-sec`` (the console entry point, in this process) in a working directory
that holds a finished run, fleet and config files, data roots and folders of the user's own.
A case passes only if the command exits with code 2, writes exactly one line to stderr, that line
is ``Error: <field>: got <value>; expected <what is valid>`` with the case's field and value, no
traceback is printed, and not a byte in the working directory changed (no output folder left,
nothing the user had touched). Every case fails before any training, so the suite takes seconds.
The classes are those of docs/design.md section 9.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hasfl_sec.cli.app import main
from hasfl_sec.config import load_config
from hasfl_sec.runs.training import train

TINY = ["train.rounds=2", "fleet.num_devices=2", "data.image_size=8", "train.eval_every=1"]
LONG = "n" * 300


class Custom:
    """An object a weights-only checkpoint may not hold."""


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (the MNIST format): magic with the dtype code and rank, then big-endian dims."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_root(root: Path, train_labels: np.ndarray, images: int = 20) -> None:
    raw = root / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (images, 28, 28)))
        labels = train_labels if prefix == "train" else rng.integers(0, 10, images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


def _huge_png(path: Path, side: int = 30000) -> None:
    """A valid 8x8 PNG whose header claims ``side`` x ``side`` pixels (a decompression bomb's header)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", side, side)  # IHDR width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def _bomb(levels: int = 9) -> str:
    """600 bytes of YAML that expand to 10**levels values through aliases ("billion laughs")."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory every case starts from (copied per case)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    train(load_config(overrides=TINY), out_dir=root / "run")
    train(load_config(overrides=[*TINY, "fleet.num_devices=3"]), out_dir=root / "three")
    # a finished run whose checkpoint is another run's; and the same, unfinished, to resume
    shutil.copytree(root / "run", root / "swapped")
    shutil.copy(root / "three" / "checkpoint.pt", root / "swapped" / "checkpoint.pt")
    shutil.copytree(root / "swapped", root / "swapped-unfinished")
    manifest = json.loads((root / "run" / "manifest.json").read_text())
    (root / "swapped-unfinished" / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    shutil.copytree(root / "run", root / "pickled")
    torch.save({"trainer": Custom()}, root / "pickled" / "checkpoint.pt")
    shutil.rmtree(root / "three")
    # a run killed while it was being started
    (root / "killed").mkdir()
    shutil.copy(root / "run" / "config.yaml", root / "killed" / "config.yaml")
    torch.save({"model": Custom()}, root / "custom.pt")
    torch.save({"weight": torch.zeros(3)}, root / "wrong.pt")
    (root / "notes.txt").write_text("the user's own\n")
    (root / "reports" / "mine").mkdir(parents=True)
    (root / "reports" / "mine" / "draft.md").write_text("the user's own\n")
    (root / "two.yaml").write_text("server_flops: 1e13\ndevices:\n"
                                   + "  - {flops: 1e10, uplink_bps: 1e7, downlink_bps: 2e7, memory_bytes: 4e9}\n" * 2)
    (root / "toaster.yaml").write_text("server_flops: 1e13\ntoast: 3\ndevices: []\n")
    (root / "bomb.yaml").write_text(_bomb())
    (root / "self.yaml").write_text("a: &a [1, *a]\n")
    (root / "deep.yaml").write_text("[" * 20000 + "]" * 20000 + "\n")
    (root / "deep.json").write_text("[" * 20000 + "]" * 20000 + "\n")
    (root / "steps.yaml").write_text("attack_params: {rmle: {steps: abc}}\n")
    for name, text in (("nope", "attack: nope"), ("device", "devices: [7]"),
                       ("param", "attack_params: {fsha: {devices: [0]}}"),
                       ("late", "attack_params: {fsha: {start_round: 99}}"), ("detector", "detectors: [nope]")):
        (root / f"active-{name}.yaml").write_text(f"active: {{{text}}}\n")
    (root / "grid-bomb.yaml").write_text(_bomb())
    (root / "grid-axis.yaml").write_text("axes: {train.nope: [1, 2]}\n")
    (root / "grid.yaml").write_text("axes: {train.lr: [0.05]}\n")
    _mnist_root(root / "mnist-count", np.zeros(19, dtype=np.uint8))
    _mnist_root(root / "mnist-range", np.full(20, 200, dtype=np.uint8))
    _mnist_root(root / "mnist-garbage", np.zeros(20, dtype=np.uint8))
    (root / "mnist-garbage" / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x01garbage")
    for cls in ("a", "b"):
        from PIL import Image

        (root / "faces" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8)).save(root / "faces" / cls / f"{i}.png")
    _huge_png(root / "faces" / "a" / "huge.png")
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (folders too, hidden ones included) with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _run(argv: list[str]) -> tuple[int, str, str]:
    """``hasfl-sec ARGV`` through the console entry point: exit code, stdout, stderr."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # so the command's logging.basicConfig writes to the captured stderr
    runner = CliRunner()
    code = 0
    try:
        with runner.isolation() as (out, err, _):
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:
        root.handlers[:] = saved
    return code, stdout, stderr


@pytest.fixture
def workspace(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)
    monkeypatch.chdir(ws)
    return ws


def _refused(workspace: Path, argv: list[str], field: str, value: str) -> str:
    """Run ``argv`` and check the whole promise; returns the error line."""
    before = _snapshot(workspace)
    code, _stdout, stderr = _run(argv)
    lines = stderr.strip().splitlines()
    assert code == 2, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    line = lines[0]
    assert "Traceback" not in stderr
    assert line.startswith(f"Error: {field}"), line
    assert value in line, line
    assert "expected" in line or "valid" in line, line
    assert _snapshot(workspace) == before, "the working directory changed"
    return line


ONE_ARM = ["--strategies", "sfl", "--baselines", "", "--budgets", "", "--no-defenses", "--no-active",
           "--attacks", "rmle", "--images", "2", "--seeds", "0", "--no-progress",
           *(a for o in TINY for a in ("--set", o))]
#: ONE_ARM with the malicious edge server's arms, their settings from the file named next
ACTIVE = [a for a in ONE_ARM if a != "--no-active"] + ["--eval-config"]
AUDIT = ["run", "--attacks", "rmle", "--images", "2", "--no-progress"]
TRAIN = ["train", "--rounds", "2", "--devices", "2", "--image-size", "8", "--no-progress"]

#: (case id, argv, the field the error names, text of the value it shows)
CASES = [
    # resource limits
    ("train-image-size-huge", ["train", "--image-size", "100000", "--out", "o"], "data.image_size", "100000"),
    ("train-image-size-memory", ["train", "--image-size", "4096", "--out", "o"], "data.image_size", "4096"),
    ("train-image-size-memory-mnist", ["train", "--dataset", "mnist", "--data-root", "mnist-count",
                                       "--image-size", "2048", "--out", "o"], "data.image_size", "2048"),
    ("train-rounds-absurd", ["train", "--rounds", str(10**12), "--out", "o"], "train.rounds", str(10**12)),
    ("train-devices-absurd", ["train", "--devices", str(10**9), "--out", "o"], "fleet.num_devices", str(10**9)),
    ("train-batch-bound-absurd", ["train", "--set", f"optimizer.b_max={10**12}", "--out", "o"],
     "optimizer.b_max", str(10**12)),
    ("train-eval-batch-absurd", ["train", "--set", f"train.eval_batch_size={10**12}", "--out", "o"],
     "train.eval_batch_size", str(10**12)),
    ("train-config-alias-bomb", ["train", "-c", "bomb.yaml", "--out", "o"], "--config", "bomb.yaml"),
    ("train-config-self-alias", ["train", "-c", "self.yaml", "--out", "o"], "--config", "self.yaml"),
    ("train-config-deep-yaml", ["train", "-c", "deep.yaml", "--out", "o"], "--config", "deep.yaml"),
    ("train-config-deep-json", ["train", "-c", "deep.json", "--out", "o"], "--config", "deep.json"),
    ("train-set-deep", ["train", "--set", "train.rounds=" + "[" * 5000 + "]" * 5000, "--out", "o"],
     "train.rounds", "[[["),
    ("train-set-bomb", ["train", "--set", "train.rounds=" + _bomb(8).replace("\n", ", ").join("{}"), "--out", "o"],
     "train.rounds", "a0"),
    ("optimize-config-alias-bomb", ["optimize", "-c", "bomb.yaml"], "--config", "bomb.yaml"),
    ("optimize-image-size-huge", ["optimize", "--image-size", "100000"], "data.image_size", "100000"),
    ("audit-threads-absurd", ["audit", *AUDIT, "--threads", "1000000", "--out", "o"], "--threads", "1000000"),
    ("audit-threads-zero", ["audit", *AUDIT, "--threads", "0", "--out", "o"], "--threads", "0"),
    ("audit-epochs-absurd", ["audit", "--model", "hecnn", "--epochs", str(10**9), "--out", "o"], "--epochs",
     str(10**9)),
    ("eval-threads-absurd", ["eval", *ONE_ARM, "--threads", "1000000", "--out", "o"], "--threads", "1000000"),
    ("eval-workers-absurd", ["eval", *ONE_ARM, "--workers", "100000", "--out", "o"], "--workers", "100000"),
    ("eval-image-size-memory", ["eval", *ONE_ARM, "--set", "data.image_size=4096", "--out", "o"],
     "data.image_size", "4096"),
    ("eval-rounds-absurd", ["eval", *ONE_ARM, "--set", f"train.rounds={10**12}", "--out", "o"], "train.rounds",
     str(10**12)),
    ("eval-settings-alias-bomb", ["eval", *ONE_ARM, "--eval-config", "bomb.yaml", "--out", "o"], "--eval-config",
     "bomb.yaml"),
    ("sweep-grid-alias-bomb", ["sweep", "grid-bomb.yaml", "--out", "o"], "GRID", "grid-bomb.yaml"),
    ("sweep-threads-absurd", ["sweep", "grid.yaml", "--threads", "1000000", "--out", "o"], "--threads",
     "1000000"),
    # outputs that cannot be written
    ("train-out-name-too-long", [*TRAIN, "--out", LONG], "--out", "nnnn"),
    ("train-out-below-file", [*TRAIN, "--out", "notes.txt/run"], "--out", "notes.txt/run"),
    ("audit-out-name-too-long", ["audit", *AUDIT, "--out", LONG], "--out", "nnnn"),
    ("report-out-name-too-long", ["report", "run", "--out", LONG], "--out", "nnnn"),
    ("eval-out-name-too-long", ["eval", *ONE_ARM, "--out", LONG], "--out", "nnnn"),
    ("sweep-out-name-too-long", ["sweep", "grid.yaml", "--out", LONG], "--out", "nnnn"),
    ("eval-out-users-folder", ["eval", *ONE_ARM, "--out", "reports/mine", "--overwrite"], "--out", "reports/mine"),
    ("report-out-is-input", ["report", "run", "--out", "run", "--overwrite"], "--out", "run"),
    # parameters not checked
    ("audit-param-type", ["audit", *AUDIT, "--attack-param", "rmle.steps=abc", "--out", "o"], "--attack-param",
     "abc"),
    ("audit-param-range", ["audit", *AUDIT, "--attack-param", "rmle.steps=-5", "--out", "o"], "--attack-param",
     "-5"),
    ("audit-param-unknown", ["audit", *AUDIT, "--attack-param", "rmle.nope=1", "--out", "o"], "--attack-param",
     "nope"),
    ("audit-param-unknown-attack", ["audit", *AUDIT, "--attack-param", "nope.steps=1", "--out", "o"],
     "--attack-param", "nope"),
    ("audit-param-form", ["audit", *AUDIT, "--attack-param", "steps", "--out", "o"], "--attack-param", "steps"),
    ("audit-unknown-attack", ["audit", "run", "--attacks", "nope", "--out", "o"], "--attacks", "nope"),
    ("audit-images-zero", ["audit", *AUDIT[:3], "--images", "0", "--out", "o"], "--images", "0"),
    # active attacks (a malicious edge server)
    ("active-unknown", ["audit", "--active", "nope", "--out", "o"], "--active", "nope"),
    ("active-on-a-finished-run", ["audit", "run", "--active", "fsha", "--out", "o"], "--active", "fsha"),
    ("active-passive-option", ["audit", "--active", "fsha", "--cuts", "1", "--out", "o"], "--cuts", "1"),
    ("active-param-range", ["audit", "--active", "fsha", "--attack-param", "fsha.lr_pilot=-1", "--out", "o"],
     "--attack-param fsha.lr_pilot", "-1"),
    ("active-param-of-another", ["audit", "--active", "fsha", "--attack-param", "rmle.steps=3", "--out", "o"],
     "--attack-param rmle", "steps"),
    ("active-device-outside-fleet", ["audit", "--active", "fsha", "--attack-param", "fsha.devices=[99]",
                                     "--out", "o"], "--attack-param fsha.devices", "99"),
    ("active-measure-every-zero", ["audit", "--active", "fsha", "--measure-every", "0", "--out", "o"],
     "--measure-every", "0"),
    ("eval-settings-param-type", ["eval", *ONE_ARM, "--eval-config", "steps.yaml", "--out", "o"],
     "eval.attack_params.rmle.steps", "abc"),
    ("train-defense-param-range", ["train", "--set", "defense.use=[noise]", "--set", "defense.noise.sigma=-1",
                                   "--out", "o"], "defense.noise.sigma", "-1"),
    ("train-lr-type", ["train", "--lr", "abc", "--out", "o"], "Invalid value for '--lr'", "abc"),
    ("train-unknown-key", ["train", "--set", "train.nope=1", "--out", "o"], "train.nope", "1"),
    ("train-unknown-strategy", ["train", "--strategy", "nope", "--out", "o"], "plan.strategy", "nope"),
    ("train-unknown-model", ["train", "--model", "nope", "--out", "o"], "model.name", "nope"),
    ("train-unknown-dataset", ["train", "--dataset", "nope", "--out", "o"], "data.dataset", "nope"),
    ("sweep-unknown-axis", ["sweep", "grid-axis.yaml", "--out", "o"], "train.nope", "1"),
    # data that lies
    ("mnist-label-count", [*TRAIN, "--dataset", "mnist", "--data-root", "mnist-count", "--out", "o"],
     "data.data_root", "mnist-count"),
    ("mnist-label-range", [*TRAIN, "--dataset", "mnist", "--data-root", "mnist-range", "--out", "o"],
     "data.data_root", "mnist-range"),
    ("mnist-garbage", [*TRAIN, "--dataset", "mnist", "--data-root", "mnist-garbage", "--out", "o"],
     "data.data_root", "mnist-garbage"),
    ("imagefolder-huge-header", [*TRAIN, "--dataset", "imagefolder", "--data-root", "faces", "--out", "o"],
     "data.data_root", "faces"),
    ("audit-model-huge-header", ["audit", "--model", "hecnn", "--dataset", "imagefolder", "--set",
                                 "data.data_root=faces", "--set", "data.image_size=8", "--out", "o"],
     "data.data_root", "faces"),
    # damaged runs
    ("audit-checkpoint-of-another-run", ["audit", "swapped", "--attacks", "rmle", "--images", "2", "--out", "o"],
     "RUN_DIR", "checkpoint.pt"),
    ("resume-checkpoint-of-another-run", ["train", "--out", "swapped-unfinished", "--resume"], "--resume",
     "checkpoint.pt"),
    ("audit-checkpoint-with-objects", ["audit", "pickled", "--attacks", "rmle", "--images", "2", "--out", "o"],
     "RUN_DIR", "checkpoint.pt"),
    ("audit-bare-checkpoint-with-objects", ["audit", "--model", "hecnn", "--checkpoint", "custom.pt", "--set",
                                            "data.image_size=8", "--out", "o"], "--checkpoint", "custom.pt"),
    ("audit-bare-checkpoint-wrong-model", ["audit", "--model", "hecnn", "--checkpoint", "wrong.pt", "--set",
                                           "data.image_size=8", "--out", "o"], "--checkpoint", "wrong.pt"),
    ("audit-not-a-run", ["audit", "reports/mine", "--out", "o"], "RUN_DIR", "reports/mine"),
    ("report-not-a-run", ["report", "reports/mine", "--out", "o"], "DIR", "reports/mine"),
    # dead ends
    ("train-into-killed-run", [*TRAIN, "--out", "killed"], "--out", "killed"),
    ("resume-finished-run", ["train", "--out", "run", "--resume"], "--resume", "run"),
    ("resume-with-options", ["train", "--out", "run", "--resume", "--rounds", "3"], "--resume", "rounds"),
    ("resume-missing", ["train", "--out", "nothing", "--resume"], "--resume", "nothing"),
    # records that lie
    ("train-devices-against-fleet-file", [*TRAIN[:3], "--devices", "5", "--fleet", "two.yaml", "--out", "o"],
     "fleet.num_devices", "5"),
    ("optimize-devices-against-fleet-file", ["optimize", "--devices", "5", "--fleet", "two.yaml"],
     "fleet.num_devices", "5"),
    ("eval-devices-against-fleet-file", ["eval", *ONE_ARM, "--set", "fleet.file=two.yaml", "--set",
                                         "fleet.num_devices=5", "--out", "o"], "fleet.num_devices", "5"),
    # messages that stop halfway, and fleets
    ("train-unknown-fleet-preset", [*TRAIN, "--fleet", "toaster", "--out", "o"], "fleet.file", "toaster"),
    ("train-fleet-file-unknown-key", [*TRAIN, "--fleet", "toaster.yaml", "--out", "o"], "fleet.toast", "3"),
    ("train-fleet-file-bomb", [*TRAIN, "--fleet", "bomb.yaml", "--out", "o"], "fleet.file", "bomb.yaml"),
    ("eval-unknown-baseline", ["eval", *ONE_ARM[2:], "--baselines", "nope", "--out", "o"], "eval.baselines", "nope"),
    ("eval-unknown-attack", ["eval", *ONE_ARM, "--attacks", "nope", "--out", "o"], "eval.attacks", "nope"),
    ("eval-seeds-repeated", ["eval", *ONE_ARM, "--seeds", "0,0", "--out", "o"], "eval.seeds", "[0, 0]"),
    ("eval-active-unknown-attack", ["eval", *ACTIVE, "active-nope.yaml", "--out", "o"], "eval.active.attack", "nope"),
    ("eval-active-device-outside-fleet", ["eval", *ACTIVE, "active-device.yaml", "--out", "o"],
     "eval.active.devices", "[7]"),
    ("eval-active-devices-as-parameter", ["eval", *ACTIVE, "active-param.yaml", "--out", "o"],
     "eval.active.attack_params.fsha.devices", "[0]"),
    ("eval-active-starts-after-the-run", ["eval", *ACTIVE, "active-late.yaml", "--out", "o"],
     "eval.active.attack_params.fsha.start_round", "99"),
    ("eval-active-unknown-detector", ["eval", *ACTIVE, "active-detector.yaml", "--out", "o"], "eval.active.detectors",
     "nope"),
    ("train-unknown-partition", ["train", "--partition", "nope", "--out", "o"], "data.partition", "nope"),
    ("train-tap-device-absent", [*TRAIN, "--set", "tap.devices=[5]", "--out", "o"], "tap.devices", "[5]"),
    ("list-unknown", ["list", "nope"], "Invalid value for", "nope"),
]


@pytest.mark.parametrize("argv,field,value", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(workspace: Path, argv: list[str], field: str, value: str) -> None:
    _refused(workspace, argv, field, value)


def test_the_suite_has_sixty_cases_across_every_command() -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1][0] for c in CASES} >= {"train", "optimize", "audit", "eval", "sweep", "report", "list"}


def test_unknown_fleet_preset_lists_the_presets(workspace: Path) -> None:
    line = _refused(workspace, [*TRAIN, "--fleet", "toaster", "--out", "o"], "fleet.file", "toaster")
    assert "paper-default" in line and "edge-mix" in line


def test_killed_run_is_refused_with_the_command_that_continues_it(workspace: Path) -> None:
    """The two commands no longer send the user to each other: the one that continues works."""
    line = _refused(workspace, [*TRAIN, "--out", "killed"], "--out", "killed")
    assert "hasfl-sec train --out killed --resume" in line
    code, _, stderr = _run(["train", "--out", "killed", "--resume", "--no-progress"])
    assert code == 0, stderr[-2000:]
    assert json.loads((workspace / "killed" / "manifest.json").read_text())["status"] == "ok"
    # the same config and seed as "run": the same rounds
    assert (workspace / "killed" / "rounds.csv").read_text().splitlines()[1].split(",")[:3] == \
        (workspace / "run" / "rounds.csv").read_text().splitlines()[1].split(",")[:3]


def test_a_fleet_file_count_is_recorded(workspace: Path) -> None:
    """Without --devices, the run's config.yaml records the fleet file's device count, not the default."""
    code, _, stderr = _run(["train", "--rounds", "1", "--image-size", "8", "--fleet", "two.yaml", "--out", "f",
                            "--no-progress"])
    assert code == 0, stderr[-2000:]
    assert load_config(workspace / "f" / "config.yaml").fleet.num_devices == 2


def _immutable(folder: Path) -> bool:
    """Make ``folder`` unwritable even for root (chattr +i), or by permissions for another user."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


@pytest.mark.parametrize("command", ["train", "audit", "report", "eval"])
def test_output_that_cannot_be_written_is_refused_before_any_work(workspace: Path, command: str) -> None:
    ro = workspace / "ro"
    ro.mkdir()
    outs: tuple[str, ...] = ("ro", "ro/sub")
    if not _immutable(ro):  # root without chattr: nothing, not even root, creates a folder below a file
        ro.rmdir()
        ro.write_text("a file\n")
        outs = ("ro/sub",)
    try:
        argv = {"train": TRAIN, "audit": ["audit", *AUDIT], "report": ["report", "run"],
                "eval": ["eval", *ONE_ARM]}[command]
        for out in outs:
            extra = ["--overwrite"] if command != "train" and out == "ro" else []
            _refused(workspace, [*argv, "--out", out, *extra], "--out", out)
    finally:
        subprocess.run(["chattr", "-i", str(ro)], capture_output=True)
        ro.chmod(0o755)
