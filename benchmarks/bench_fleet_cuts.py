"""Do heterogeneous devices take different cuts? HASFL's plan on every real-device preset.

For each preset of real device classes (docs/fleets.md) and each seed (the bound constants are
estimated at that seed, the fleet drawn from it), makes the ``hasfl`` plan for the default model and
data and prints, per device class: the cuts its devices take, the mean batch size, the per-round
compute and communication seconds of the class (latency model), and the plan's predicted round
latency and time to target. Nothing is trained beyond the bound's warm-up and calibration.

    python benchmarks/bench_fleet_cuts.py --presets edge-mix phones-mixed iot-boards --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from hasfl_sec.config import load_config
from hasfl_sec.fleet import fleet_classes
from hasfl_sec.runs.setup import prepare
from hasfl_sec.sfl.clock import plan_costs
from hasfl_sec.sfl.latency import round_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["edge-mix", "phones-mixed", "iot-boards"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| preset | seed | device class | devices | cuts (cut×devices) | mean batch | compute/round (s) | "
          "comm./round (s) |")
    print("| --- | ---: | --- | ---: | --- | ---: | ---: | ---: |")
    totals = []
    for preset in args.presets:
        for seed in args.seeds:
            setup = prepare(load_config(overrides=["plan.strategy=hasfl", f"fleet.file={preset}", f"seed={seed}"]))
            plan, fleet = setup.plan, setup.fleet
            lat = round_latency(fleet, plan.batch_sizes, plan_costs(setup.profile, plan))
            st = lat.stages
            classes = np.asarray(fleet_classes(fleet), dtype=object)
            for cls in dict.fromkeys(classes):
                idx = np.flatnonzero(classes == cls)
                cuts = ", ".join(f"{c}×{n}" for c, n in Counter(int(plan.cuts[i]) for i in idx).most_common())
                batch = float(np.mean([plan.batch_sizes[i] for i in idx]))
                compute = float(np.mean(st.client_fwd[idx] + st.client_bwd[idx]))
                comm = float(np.mean(st.uplink[idx] + st.downlink[idx]))
                print(f"| {preset} | {seed} | {cls} | {len(idx)} | {cuts} | {batch:.3g} | {compute:.3g} | {comm:.3g} |")
            totals.append((preset, seed, len(set(plan.cuts)), lat.split_round, plan.predicted.get("time_to_target_s")))
    print("\n| preset | seed | distinct cuts | split round (s) | predicted time to target (s) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for preset, seed, distinct, split, ttt in totals:
        print(f"| {preset} | {seed} | {distinct} | {split:.3g} | {ttt:.3g} |")


if __name__ == "__main__":
    main()
