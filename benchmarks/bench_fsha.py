"""Feature-space hijacking in SFL: reconstruction error against rounds, and against defenses.

Two parts, each printing a table of means ± the half-width of their 95% confidence intervals over
seeds (Student t, :func:`hasfl_sec.stats.mean_ci`; ``--part``):

* ``curve`` -- one hijacked device (vanilla split learning, as in Pasquini et al., CCS 2021,
  figure 4) on the bundled digits (or MNIST from ``--data-root``), batch 64: the attacker's
  reconstruction MSE of the device's private batches every ``--measure-every`` rounds, with this
  toolkit's default attacker settings and with the paper's learning rates (1e-5 pilot and decoder,
  1e-4 critic). MSE is reported on [0, 1] pixels and, times 4, on the paper's [-1, 1] pixels.
* ``defenses`` -- a 4-device heterogeneous SFL run (cuts 1-4) with device 0 hijacked, without a
  defense and under each default defense of the evaluation (noise, NoPeek, top-k, quantization)
  and DP-SGD (noise multiplier 1, clipping 1). Final-round MSE and SSIM, and each defense's
  paired difference from the undefended run (same seeds): a difference whose interval excludes 0
  is real.
* ``detectors`` -- the same 4-device run (150 rounds) with SplitGuard and SplitOut on every device,
  against an honest server and against FSHA on device 0 with the default reply scale (0.1) and the
  raw gradient (1.0, the paper's attacker). Per detector: how often it fired on the hijacked
  device, when, the attacker's MSE and SSIM at that round ("what leaked before it was caught"),
  and the false-alarm rate on honest devices. SplitGuard's decision rule was chosen on seeds 0-2;
  run this part on other seeds (``--seeds 10,11,...``).

    python benchmarks/bench_fsha.py --part curve --rounds 1000 --seeds 0,1,2
    python benchmarks/bench_fsha.py --part defenses --rounds 300 --seeds 0,1,2
    python benchmarks/bench_fsha.py --part detectors --rounds 150 --seeds 10,11,12,13,14,15,16,17,18,19
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pandas as pd

from hasfl_sec.report.markdown import markdown_table

ARMS_CURVE = {
    "fsha (defaults)": {},
    "fsha (paper lr)": {"lr_pilot": 1e-5, "lr_critic": 1e-4},
}

DEFENSES = {
    "none": [],
    "noise sigma=1": ["defense.use=[noise]", "defense.noise.sigma=1.0"],
    "nopeek weight=2": ["defense.use=[nopeek]", "defense.nopeek.weight=2.0"],
    "topk ratio=0.1": ["defense.use=[topk]", "defense.topk.ratio=0.1"],
    "quantize bits=2": ["defense.use=[quantize]", "defense.quantize.bits=2"],
    "dpsgd z=1 C=1": ["defense.use=[dpsgd]", "defense.dpsgd.noise_multiplier=1.0", "defense.dpsgd.max_grad_norm=1.0"],
}


DETECTOR_ARMS = {
    "honest server": None,
    "fsha reply x0.1": {"devices": [0]},
    "fsha reply x1": {"devices": [0], "reply_scale": 1.0},
}


def _init() -> None:
    import torch

    torch.set_num_threads(1)


def _run(job: dict[str, Any]) -> list[dict[str, Any]]:
    """One hijacked training; its measurements as rows tagged with the job's arm and seed."""
    import logging

    from hasfl_sec.audit.active import HijackSettings, run_hijack
    from hasfl_sec.config import load_config

    logging.disable(logging.INFO)
    config = load_config(overrides=[*job["overrides"], f"seed={job['seed']}"])
    start = time.perf_counter()
    detectors = job.get("detectors", [])
    settings = HijackSettings(attack=None if job["params"] is None else "fsha", params=job["params"] or {},
                              detectors=detectors, measure_every=job["every"], images=64)
    result = run_hijack(config, settings)
    wall = time.perf_counter() - start
    accuracy = [r.test_accuracy for r in result.rounds if r.test_accuracy == r.test_accuracy]
    tag = {"arm": job["arm"], "seed": job["seed"], "wall_s": wall, "accuracy": accuracy[-1]}
    if detectors:
        final = {r["device"]: r["mse"] for r in result.records}
        return [{**d, **tag, "final_mse": final.get(d["device"])} for d in result.detections]
    return [{**r, **tag} for r in result.records]


def _jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    data = [f"data.dataset={args.dataset}"] + ([f"data.data_root={args.data_root}"] if args.data_root else [])
    common = [*data, f"train.rounds={args.rounds}", f"train.eval_every={args.rounds}", "train.checkpoint_every=0",
              "plan.strategy=fixed"]
    jobs = []
    for seed in args.seeds:
        if args.part == "curve":
            for arm, params in ARMS_CURVE.items():
                jobs.append({"arm": arm, "seed": seed, "every": args.measure_every, "params": params,
                             "overrides": [*common, "fleet.num_devices=1", f"plan.cut={args.cut}",
                                           "plan.batch_size=64"]})
        elif args.part == "detectors":
            for arm, params in DETECTOR_ARMS.items():
                jobs.append({"arm": arm, "seed": seed, "every": args.measure_every, "params": params,
                             "detectors": ["splitguard", "splitout"],
                             "overrides": [*common, "fleet.num_devices=4", "plan.cut=[1,2,3,4]",
                                           "plan.batch_size=32"]})
        else:
            for arm, extra in DEFENSES.items():
                jobs.append({"arm": arm, "seed": seed, "every": args.rounds, "params": {"devices": [0]},
                             "overrides": [*common, "fleet.num_devices=4", "plan.cut=[1,2,3,4]",
                                           "plan.batch_size=32", *extra]})
    return jobs


def _ci(values: pd.Series) -> str:
    from hasfl_sec.stats import mean_ci

    iv = mean_ci(values.tolist())
    return f"{iv.mean:.4f} ± {(iv.high - iv.low) / 2:.4f}"


def _curve_table(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (arm, rnd), part in rows.groupby(["arm", "round"]):
        out.append({"arm": arm, "round": rnd, "mse [0,1]": _ci(part.mse), "mse [-1,1]": _ci(4 * part.mse),
                    "ssim": _ci(part.ssim), "mean-image mse [0,1]": _ci(part.baseline_mse)})
    return pd.DataFrame(out)


def _defense_table(rows: pd.DataFrame) -> pd.DataFrame:
    from hasfl_sec.stats import paired_difference

    base = rows[rows.arm == "none"].set_index("seed")
    out = []
    for arm, part in rows.groupby("arm", sort=False):
        part = part.set_index("seed")
        diff = paired_difference(part.mse.to_dict(), base.mse.to_dict())
        out.append({"defense": arm, "mse": _ci(part.mse), "ssim": _ci(part.ssim),
                    "mse - undefended": "" if arm == "none" else f"{diff.mean:+.4f} ± {(diff.high - diff.low) / 2:.4f}",
                    "accuracy": _ci(part.accuracy), "mean-image mse": _ci(part.baseline_mse),
                    "wall s": f"{part.wall_s.mean():.0f}"})
    return pd.DataFrame(out)


def _detector_table(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (arm, detector), part in rows.groupby(["arm", "detector"], sort=False):
        hijacked, honest = part[part.hijacked], part[~part.hijacked]
        fired = hijacked[hijacked.detected_round.notna()]
        out.append({
            "server": arm, "detector": detector,
            "fired on hijacked": f"{len(fired)}/{len(hijacked)}" if len(hijacked) else "",
            "round of alarm": _ci(fired.detected_round) if len(fired) > 1 else (
                f"{fired.detected_round.mean():.0f}" if len(fired) else ""),
            "mse at alarm": _ci(fired.mse_at_detection.dropna()) if fired.mse_at_detection.notna().sum() > 1 else "",
            "ssim at alarm": _ci(fired.ssim_at_detection.dropna()) if fired.ssim_at_detection.notna().sum() > 1
            else "",
            "false alarms (honest devices)": f"{int(honest.detected_round.notna().sum())}/{len(honest)}",
        })
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["curve", "defenses", "detectors"], default="curve")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--measure-every", type=int, default=100)
    parser.add_argument("--cut", type=int, default=1)
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    jobs = _jobs(args)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_init) as pool:
        rows = pd.DataFrame([r for part in pool.map(_run, jobs) for r in part])
    table = {"curve": _curve_table, "defenses": _defense_table, "detectors": _detector_table}[args.part](rows)
    print(f"# bench_fsha --part {args.part}: {args.dataset}, {args.rounds} rounds, seeds {args.seeds}, "
          f"{len(jobs)} runs on {args.workers} workers, {time.perf_counter() - start:.0f} s")
    print(markdown_table(table))


if __name__ == "__main__":
    main()
