"""The default evaluation's headline, with uncertainty: what ``hasfl-sec eval`` (no arguments) answers.

Runs the default evaluation (3 training seeds, every setting at its default, the default number of
workers) into ``--out`` -- or reads one already written with ``--from`` -- and prints, as
Markdown tables for ``benchmarks/RESULTS.md``:

* HASFL's paired speed-up in time to target over each baseline, its accuracy advantage at the
  fixed simulated-time budget and at the end (means over seeds, 95% Student-t intervals, and
  whether each interval excludes no effect);
* the privacy and defense comparisons;
* the per-device-class plan table (batch sizes, cuts, noise, per-round compute and communication,
  worst leakage);
* the Pareto front over seeds;
* the evaluation's wall time on this machine.

    python benchmarks/bench_default_eval.py --out /tmp/default-eval
    python benchmarks/bench_default_eval.py --from reports/example
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def _pm(mean: float, low: float, high: float, digits: str = ".3g") -> str:
    if pd.isna(mean):
        return "–"
    if pd.isna(low):
        return format(mean, digits)
    return f"{format(mean, digits)} ± {format((high - low) / 2, '.2g')}"


def _comparisons(frame: pd.DataFrame) -> str:
    lines = ["| comparison | plan | against | measure | estimate | 95% CI | pairs | excludes no effect |",
             "| --- | --- | --- | --- | ---: | --- | ---: | --- |"]
    for r in frame.itertuples():
        unit = "×" if r.scale == "ratio" else ""
        ci = "–" if pd.isna(r.low) else f"[{r.low:.3g}, {r.high:.3g}]"
        lines.append(f"| {r.comparison} | {r.plan} | {r.reference} | {r.metric} | {r.estimate:.3g}{unit} | {ci} | "
                     f"{r.pairs} | {'yes' if r.significant else 'no'} |")
    return "\n".join(lines)


def _classes(frame: pd.DataFrame) -> str:
    lines = ["| plan | device class | devices | mean batch | cuts (cut×devices) | noise σ | compute/round (s) | "
             "comm./round (s) | worst SSIM |", "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in frame.itertuples():
        lines.append(f"| {r.plan} | {r.device_class} | {r.devices} | {_pm(r.batch, r.batch_low, r.batch_high)} | "
                     f"{r.cuts} | {_pm(r.noise_sigma, r.noise_sigma_low, r.noise_sigma_high)} | "
                     f"{_pm(r.compute_s, r.compute_s_low, r.compute_s_high)} | "
                     f"{_pm(r.comm_s, r.comm_s_low, r.comm_s_high)} | "
                     f"{_pm(r.leakage, r.leakage_low, r.leakage_high)} |")
    return "\n".join(lines)


def _pareto(frame: pd.DataFrame) -> str:
    lines = ["| plan | device class | SSIM | measured time to target (s) | seeds at target | on front |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in frame.sort_values(["device_class", "leakage"]).itertuples():
        time = _pm(r.measured_time_to_target_s, r.measured_time_to_target_s_low, r.measured_time_to_target_s_high)
        lines.append(f"| {r.plan} | {r.device_class} | {_pm(r.leakage, r.leakage_low, r.leakage_high)} | {time} | "
                     f"{r.measured_time_to_target_s_n}/{r.seeds} | {'yes' if r.on_front else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-default-eval"))
    parser.add_argument("--from", dest="source", type=Path, help="read an evaluation already written")
    args = parser.parse_args()
    source = args.source
    if source is None:
        exe = Path(sys.executable).with_name("hasfl-sec")
        start = time.perf_counter()
        subprocess.run([str(exe), "eval", "--out", str(args.out), "--overwrite", "--no-progress"], check=False)
        print(f"wall time of `hasfl-sec eval` (2 cores): {time.perf_counter() - start:.0f} s")
        source = args.out
    meta = json.loads((source / "eval.json").read_text())
    print(f"evaluation {source}: seeds {meta['settings']['seeds']}, fleet {meta['config']['fleet']['file']}, "
          f"model {meta['config']['model']['name']}, time budget {meta.get('time_budget_s', float('nan')):.4g} s, "
          f"eval wall time {meta['wall_time_s']:.0f} s")
    comps = pd.read_csv(source / "comparisons.csv")
    print("\n### Paired comparisons\n")
    print(_comparisons(comps))
    print("\n### Plans per device class\n")
    print(_classes(pd.read_csv(source / "classes.csv")))
    print("\n### Pareto front over seeds\n")
    print(_pareto(pd.read_csv(source / "pareto.csv")))


if __name__ == "__main__":
    main()
