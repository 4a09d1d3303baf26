"""What running an evaluation as cells buys: workers, Ray's overhead, and a projection for a study.

Three parts, each printing a table (``--part``):

* ``workers`` -- wall time of the default ``hasfl-sec eval`` (every setting at its default) with
  1 worker and with 2, run one after the other in this process, and their ratio. Both use one
  torch thread per cell, so they compute the same tables (checked here, wall-time columns aside).
* ``ray`` -- the same small evaluation (``--cells`` cells of a tiny config) on the local pool and
  on a local Ray instance with the same number of workers. Overhead per cell is
  ``(wall x workers - sum of the cells' own compute time) / cells`` for each backend, so it holds
  process start-up, imports, data loading, scheduling, the bound estimate in the driver (the same
  for both) and, for Ray, the archive round trip. Ray's start-up (``ray.init``) is timed apart.
  The backends alternate over ``--trials``; medians are printed.
* ``projection`` -- one cell of a realistic configuration (ResNet-18, 32x32 inputs, 20 devices)
  timed for a few rounds; its per-round cost scaled to ``--study-rounds`` gives a per-cell cost,
  and ``cells x cost / workers`` the wall time of a study on 1, 8 and 64 workers. The assumptions
  are printed with the table.

    python benchmarks/bench_cells.py --part workers
    python benchmarks/bench_cells.py --part ray --cells 16 --workers 2 --trials 3
    python benchmarks/bench_cells.py --part projection --rounds 3
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from hasfl_sec.cli.eval import EVAL_DEFAULTS
from hasfl_sec.config import load_config
from hasfl_sec.evaluation import ExecutorConfig, load_settings, run_eval
from hasfl_sec.evaluation.cells import read_cell

TINY = ["train.rounds=6", "fleet.num_devices=4", "data.image_size=8", "optimizer.pilot_rounds=40",
        "optimizer.target_accuracy=0.4", "optimizer.warmup_rounds=2", "optimizer.probe_size=32", "train.eval_every=1"]


def _compute_seconds(out: Path) -> float:
    """The sum of the cells' own train and audit times (from their records)."""
    total = 0.0
    for folder in sorted((out / "runs").iterdir()):
        record = read_cell(folder)
        total += sum(record.timings.values()) if record is not None else 0.0
    return total


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for path in sorted(out.glob("*.csv")):
        frame = pd.read_csv(path)
        if "metric" in frame.columns:
            frame = frame[frame["metric"] != "wall_time_s"]
        frames[path.stem] = frame.drop(columns=[c for c in frame.columns if c == "wall_time_s"]).reset_index(drop=True)
    return frames


def part_workers(tmp: Path) -> None:
    config, settings = load_config(overrides=list(EVAL_DEFAULTS)), load_settings()
    rows, outs = [], {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        result = run_eval(config, settings, out=tmp / f"w{workers}", executor=ExecutorConfig(workers=workers))
        rows.append({"workers": workers, "cells": len(result.computed), "wall_s": time.perf_counter() - t0,
                     "cells_compute_s": _compute_seconds(result.out)})
        outs[workers] = result.out
    frame = pd.DataFrame(rows)
    frame["speed-up vs 1 worker"] = frame["wall_s"].iloc[0] / frame["wall_s"]
    print(frame.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    a, b = _tables(outs[1]), _tables(outs[2])
    same = sorted(a) == sorted(b) and all(a[k].equals(b[k]) for k in a)
    print(f"identical tables (wall-time columns aside): {same}")


def part_ray(tmp: Path, cells: int, workers: int, trials: int) -> None:
    import ray

    sigmas = [0.5 + 0.25 * i for i in range(max(0, cells - 2))]
    settings = load_settings(budgets=[], attacks=["rmle", "label-direction"], images=2, strategies=["hasfl", "sfl"],
                             attack_params={"rmle": {"steps": 5}},
                             defenses=[{"defense": "noise", "param": "sigma", "values": sigmas}] if sigmas else [])
    config = load_config(overrides=TINY)
    rows = []
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING")
    init_s = time.perf_counter() - t0
    try:
        for trial in range(trials):  # the backends alternate, so machine noise hits both alike
            for backend in ("local", "ray"):
                t0 = time.perf_counter()
                result = run_eval(config, settings, out=tmp / f"{backend}{trial}",
                                  executor=ExecutorConfig(backend=backend, workers=workers))
                wall = time.perf_counter() - t0
                compute = _compute_seconds(result.out)
                n = len(result.computed)
                rows.append({"trial": trial, "backend": backend, "cells": n, "workers": workers, "wall_s": wall,
                             "cells_compute_s": compute, "overhead_per_cell_s": (wall * workers - compute) / n})
    finally:
        ray.shutdown()
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    medians = frame.groupby("backend")[["wall_s", "overhead_per_cell_s"]].median()
    print(medians.to_string(float_format=lambda x: f"{x:.2f}"))
    print(f"ray - local overhead per cell (medians): "
          f"{medians.loc['ray', 'overhead_per_cell_s'] - medians.loc['local', 'overhead_per_cell_s']:+.2f} s")
    print(f"ray.init (local instance, {workers} CPUs): {init_s:.1f} s, once per evaluation")
    print("wall time includes the bound estimate in the driver, the same for both backends")


def part_projection(tmp: Path, rounds: int, study_rounds: int) -> None:
    from hasfl_sec.runs.training import train

    # A fixed plan (b = 16, cut 2 on every device): the bound's warm-up and calibration are not part
    # of a cell (an evaluation estimates them once for all its cells).
    config = load_config(overrides=["model.name=resnet18", "data.image_size=32", "fleet.num_devices=20",
                                    "plan.strategy=fixed", "plan.cut=2", "plan.batch_size=16",
                                    f"train.rounds={rounds}", "train.eval_every=1000000"])
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = train(config, out_dir=tmp / "resnet")
    train_s = time.perf_counter() - t0
    per_round = float(result.rounds["wall_time_s"].iloc[-1]) / rounds
    setup_s = train_s - float(result.rounds["wall_time_s"].iloc[-1])
    cell_s = setup_s + per_round * study_rounds
    cells = 4 * 6 * 5
    print(f"measured: ResNet-18, 32x32, 20 devices, b=16, cut 2, 1 thread: {per_round:.2f} s per round "
          f"({rounds} rounds), {setup_s:.1f} s set-up")
    print(f"one cell of {study_rounds} rounds: {cell_s / 3600:.2f} h (training only; audit and evaluation excluded)")
    rows = []
    for workers in (1, 8, 64):
        waves = math.ceil(cells / workers)
        rows.append({"workers": workers, "cells": cells, "waves": waves, "wall_h": waves * cell_s / 3600,
                     "wall_days": waves * cell_s / 86400})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print("assumes: 4 budgets x 6 defense settings x 5 seeds = 120 cells of equal cost; one thread per cell on "
          "a core like this machine's; no contention for memory bandwidth; a worker per core; the bound estimate "
          "(once per seed) and the audits are not counted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["workers", "ray", "projection"], required=True)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--study-rounds", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.part == "workers":
            part_workers(Path(tmp))
        elif args.part == "ray":
            part_ray(Path(tmp), args.cells, args.workers, args.trials)
        else:
            part_projection(Path(tmp), args.rounds, args.study_rounds)


if __name__ == "__main__":
    main()
