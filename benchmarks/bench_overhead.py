"""Simulation overhead of the SFL trainer's two executions against plain PyTorch training loops.

All loops train the same network on the same sequence of mini-batches with the same batch sizes
(the devices' seeded samplers). Evaluation is excluded everywhere.

* ``batched`` / ``per-device``: the full HASFL round (client parts, uplink, non-common and common
  server parts, cut-layer gradients, device backward, per-round common update, aggregation every
  I rounds) under ``train.execution=batched`` (devices sharing a cut and a batch size as one
  vmap) and ``per-device`` (one device at a time, the reference).
* ``plain-round``: one model, one SGD step per round on all devices' mini-batches concatenated:
  the same arithmetic as a round without the split, so its samples/s is what the simulation can
  reach at best.
* ``plain`` (``--loops``): one model, one SGD step per device mini-batch.

For every (N, b) of the grid the loops alternate within each trial so that machine noise hits all
alike; the figures are medians over trials of per-trial ratios of samples/s.

    python benchmarks/bench_overhead.py                                  # N = 20, b = 16 (the default fleet)
    python benchmarks/bench_overhead.py --devices 20,100,400,1000 --batch 4,16 --rounds 10 --trials 3
    python benchmarks/bench_overhead.py --model resnet18 --set data.image_size=32 --devices 20 --batch 4
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from hasfl_sec.config import load_config
from hasfl_sec.runs.setup import Setup, prepare


def sfl_trial(setup: Setup, rounds: int, execution: str) -> float:
    setup.config.train.execution = execution
    tr = setup.trainer()
    assert tr.execution.name == execution, f"{execution} fell back to {tr.execution.name}"
    interval = setup.config.train.agg_interval
    start = time.perf_counter()
    for t in range(1, rounds + 1):
        tr.train_round()
        if t % interval == 0:
            tr.aggregate()
        tr.round = t
    return time.perf_counter() - start


def _plain(setup: Setup, rounds: int, per_round: bool) -> float:
    ref = setup.trainer()  # only for its data tensors and seeded samplers
    model = copy.deepcopy(setup.model).to(setup.device).train()
    opt = torch.optim.SGD(model.parameters(), lr=setup.config.train.lr)
    x, y = ref.x_train, ref.y_train

    def step(idx: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    for _ in range(rounds):
        batches = [s.next(b).to(setup.device) for s, b in zip(ref.samplers, ref.batch_sizes)]
        if per_round:
            step(torch.cat(batches))
        else:
            for idx in batches:
                step(idx)
    return time.perf_counter() - start


LOOPS: dict[str, Callable[[Setup, int], float]] = {
    "batched": lambda s, r: sfl_trial(s, r, "batched"),
    "per-device": lambda s, r: sfl_trial(s, r, "per-device"),
    "plain-round": lambda s, r: _plain(s, r, per_round=True),
    "plain": lambda s, r: _plain(s, r, per_round=False),
}


def measure(setup: Setup, loops: list[str], rounds: int, trials: int) -> dict[str, list[float]]:
    """samples/s of each loop in each trial (loops alternating within a trial)."""
    samples = rounds * sum(setup.plan.batch_sizes)
    for name in loops:
        LOOPS[name](setup, 1)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(trials):
        for name in loops:
            rates[name].append(samples / LOOPS[name](setup, rounds))
    return rates


def ratio(rates: dict[str, list[float]], a: str, b: str) -> str:
    if a not in rates or b not in rates:
        return "-"
    return f"{statistics.median(x / y for x, y in zip(rates[a], rates[b])):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="20", help="comma-separated N values")
    parser.add_argument("--batch", default="16", help="comma-separated b values (every device)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--model", default="hecnn")
    parser.add_argument("--loops", default="batched,per-device,plain-round", help=f"some of {','.join(LOOPS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one: no oversubscription)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loops = args.loops.split(",")
    print(f"model {args.model}, {args.rounds} rounds x {args.trials} alternating trials, torch threads "
          f"{torch.get_num_threads()}, overrides {args.overrides}\n")
    print("| model | N | b | groups | " + " | ".join(f"{n} samples/s" for n in loops)
          + " | batched / plain-round | per-device / plain-round | batched / per-device |")
    print("|---|---|---|---|" + "---|" * (len(loops) + 3))
    for n in (int(v) for v in args.devices.split(",")):
        for b in (int(v) for v in args.batch.split(",")):
            cfg = load_config(overrides=[f"model.name={args.model}", f"fleet.num_devices={n}", f"plan.batch_size={b}",
                                         "data.partition=iid", "data.min_samples_per_device=1", *args.overrides])
            setup = prepare(cfg)
            rates = measure(setup, loops, args.rounds, args.trials)
            setup.config.train.execution = "batched"
            groups = len(setup.trainer().execution.groups)  # vectorized groups of a round
            print(f"| {args.model} | {n} | {b} | {groups} | "
                  + " | ".join(f"{statistics.median(rates[name]):.0f}" for name in loops)
                  + f" | {ratio(rates, 'batched', 'plain-round')} | {ratio(rates, 'per-device', 'plain-round')} "
                  f"| {ratio(rates, 'batched', 'per-device')} |", flush=True)


if __name__ == "__main__":
    main()
