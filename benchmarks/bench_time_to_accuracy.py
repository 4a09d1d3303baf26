"""Time to accuracy of HASFL against the baseline strategies (the paper's headline comparison).

For each seed, one fleet, one data partition and one set of bound constants (a warm-up, saved and
shared by every strategy) are used; each strategy plans, then trains for real until its test
accuracy reaches the target or its round budget runs out. The time axis is the simulated clock
of the latency model. Printed: per strategy, the simulated time to the target (median over
seeds), the speed-up over conventional SFL, and the accuracy reached within a fixed simulated
time budget; a figure of accuracy against simulated time goes to benchmarks/figures/.

    python benchmarks/bench_time_to_accuracy.py                      # 3 seeds, target 0.90
    python benchmarks/bench_time_to_accuracy.py --seeds 0 --target 0.85 --set optimizer.floor_slack=0.2
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from hasfl_sec.config import load_config  # noqa: E402
from hasfl_sec.planning.warmup import bound_for  # noqa: E402
from hasfl_sec.runs.setup import prepare  # noqa: E402

STRATEGIES = ["hasfl", "sfl", "bs-only", "cut-only", "random"]


def run_strategy(overrides: list[str], target: float, max_rounds: int, eval_every: int) -> pd.DataFrame:
    """Train one strategy's plan until the target accuracy or ``max_rounds``; one row per evaluation."""
    cfg = load_config(overrides=[*overrides, f"train.rounds={max_rounds}", "train.checkpoint_every=0",
                                 f"train.eval_every={eval_every}"])
    setup = prepare(cfg)
    trainer = setup.trainer()
    rows = []
    while trainer.round < max_rounds:
        record = trainer.step()
        if not math.isnan(record.test_accuracy):
            rows.append({"round": record.round, "sim_time_s": record.sim_time_s, "accuracy": record.test_accuracy})
            if record.test_accuracy >= target:
                break
    frame = pd.DataFrame(rows)
    frame.attrs["plan"] = setup.plan
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--max-rounds", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--figure", default=str(Path(__file__).parent / "figures" / "time_to_accuracy.png"))
    args = parser.parse_args()

    results: dict[str, list[pd.DataFrame]] = {s: [] for s in args.strategies}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            base = [f"seed={seed}", *args.overrides]
            cfg = load_config(overrides=[*base, "plan.strategy=fixed"])
            setup = prepare(cfg)
            bound = bound_for(cfg, setup.model, setup.dataset, setup.parts, setup.device)
            bound_path = bound.save(Path(tmp) / f"bound-{seed}.json")
            for strategy in args.strategies:
                frame = run_strategy([*base, f"plan.strategy={strategy}", f"optimizer.bound_file={bound_path}"],
                                     args.target, args.max_rounds, args.eval_every)
                plan = frame.attrs["plan"]
                reached = frame[frame.accuracy >= args.target]
                t = float(reached.sim_time_s.iloc[0]) if len(reached) else math.inf
                print(f"seed {seed} {strategy:9s} b={list(plan.batch_sizes)[:6]}... cuts={list(plan.cuts)[:6]}... "
                      f"time to {args.target:.2f}: {t:.4g} s after {int(frame['round'].iloc[-1])} rounds")
                frame["seed"] = seed
                results[strategy].append(frame)

    def time_to(frame: pd.DataFrame) -> float:
        hit = frame[frame.accuracy >= args.target]
        return float(hit.sim_time_s.iloc[0]) if len(hit) else math.inf

    times = {s: [time_to(f) for f in fs] for s, fs in results.items()}
    sfl = statistics.median(times["sfl"]) if "sfl" in times else math.nan
    budget = sfl  # accuracy within the simulated time conventional SFL needs
    print(f"\n| strategy | simulated time to {args.target:.2f} (median of {len(args.seeds)} seeds) | "
          "speed-up vs sfl | accuracy at the sfl time budget (median) |")
    print("|---|---|---|---|")
    for s, ts in times.items():
        med = statistics.median(ts)
        accs = [float(f[f.sim_time_s <= budget].accuracy.max()) if (f.sim_time_s <= budget).any() else 0.0
                for f in results[s]]
        print(f"| {s} | {med:.4g} s | {sfl / med:.2f}x | {statistics.median(accs):.4f} |")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s, frames in results.items():
        for k, f in enumerate(frames):
            # hasfl drawn thick and underneath: a baseline that finds the same plan overlays it dashed
            ax.plot(f.sim_time_s, f.accuracy, label=s if k == 0 else None, color=f"C{args.strategies.index(s)}",
                    alpha=0.8, lw=3.0 if s == "hasfl" else 1.2, ls="-" if s in ("hasfl", "sfl") else "--",
                    zorder=1 if s == "hasfl" else 2)
    ax.axhline(args.target, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("simulated training time (s, latency model)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"time to accuracy, seeds {args.seeds}")
    ax.legend()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=120, bbox_inches="tight")
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
