"""Static plan against a plan re-solved every I rounds, under Rayleigh block fading.

For each seed and channel coherence time (in rounds), both runs use the same fleet, partition,
bound constants (one calibrated warm-up per seed) and first HASFL plan, made from the mean rates.
The ``static`` run keeps that plan; the ``re-optimized`` run re-solves it every I rounds on the
rates observed in the round just finished. The simulated clock uses the realised rates in both.
Printed: the simulated time to the target accuracy and the ratio static / re-optimized
(> 1 means re-optimizing is faster).

    python benchmarks/bench_fading.py                       # seeds 0 1 2, coherence 1 and 20 rounds
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from pathlib import Path

from hasfl_sec.config import load_config
from hasfl_sec.runs.setup import prepare


def time_to_target(overrides: list[str], target: float, max_rounds: int) -> tuple[float, int, int]:
    cfg = load_config(overrides=[*overrides, f"train.rounds={max_rounds}", "train.eval_every=1",
                                 "train.checkpoint_every=0"])
    trainer = prepare(cfg).trainer()
    while trainer.round < max_rounds:
        record = trainer.step()
        if record.test_accuracy >= target:
            distinct = len({(p.batch_sizes, p.cuts) for _, p in trainer.plan_history})
            return record.sim_time_s, record.round, distinct
    return math.inf, trainer.round, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--coherence", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--max-rounds", type=int, default=1500)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args()
    ratios: dict[int, list[float]] = {c: [] for c in args.coherence}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            base = [f"seed={seed}", "plan.strategy=hasfl", "channel.model=rayleigh", *args.overrides]
            cfg = load_config(overrides=base)
            setup = prepare(cfg)
            bound_path = setup.context.bound().save(Path(tmp) / f"bound-{seed}.json")
            base.append(f"optimizer.bound_file={bound_path}")
            for coherence in args.coherence:
                run = [*base, f"channel.coherence_rounds={coherence}"]
                interval = cfg.train.agg_interval
                t_static, r_static, _ = time_to_target([*run, "channel.reoptimize_every=0"], args.target,
                                                       args.max_rounds)
                t_reopt, r_reopt, plans = time_to_target([*run, f"channel.reoptimize_every={interval}"],
                                                         args.target, args.max_rounds)
                ratios[coherence].append(t_static / t_reopt)
                print(f"seed {seed} coherence {coherence}: static {t_static:.4g} s ({r_static} rounds), "
                      f"re-optimized {t_reopt:.4g} s ({r_reopt} rounds, {plans} distinct plans), "
                      f"ratio {t_static / t_reopt:.3f}")
    print(f"\n| coherence (rounds) | time-to-{args.target:.2f} ratio static / re-optimized (median of "
          f"{len(args.seeds)} seeds) | per seed |")
    print("|---|---|---|")
    for c, rs in ratios.items():
        print(f"| {c} | {statistics.median(rs):.3f} | {', '.join(f'{r:.3f}' for r in rs)} |")


if __name__ == "__main__":
    main()
