"""Simulation overhead of the SFL trainer against plain PyTorch training loops.

All loops train the same network on the same sequence of mini-batches with the same batch sizes
(the devices' seeded samplers). Evaluation is excluded everywhere.

* ``sfl``: the full HASFL round (client parts, uplink, non-common and common server parts,
  cut-layer gradients, device backward, per-round common update, aggregation every I rounds).
* ``plain``: one model, one SGD step per device mini-batch (20 small steps per round) -- the
  plain loop over the same sequence of mini-batches that the issue asks for.
* ``plain-round``: one model, one SGD step per round on all devices' mini-batches concatenated --
  the same arithmetic batching the SFL trainer uses for its common part, so the ratio against it
  isolates the cost of splitting (per-device client/non-common copies, extra autograd calls,
  N+1 optimizers, aggregation).

Trials alternate between the loops so that machine noise hits all alike; the figures are
medians over trials of samples/s(SFL) / samples/s(baseline).

    python benchmarks/bench_overhead.py
    python benchmarks/bench_overhead.py --rounds 20 --trials 3 --model vgg16 --set data.image_size=32
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


def sfl_trial(setup: Setup, rounds: int) -> float:
    tr = setup.trainer()
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
    "sfl": sfl_trial,
    "plain": lambda s, r: _plain(s, r, per_round=False),
    "plain-round": lambda s, r: _plain(s, r, per_round=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--model", default="hecnn")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(overrides=[f"model.name={args.model}", *args.overrides])
    setup = prepare(cfg)
    samples = args.rounds * sum(setup.plan.batch_sizes)
    print(f"model {cfg.model.name} on {cfg.data.dataset} {setup.dataset.input_shape}, "
          f"{setup.fleet.num_devices} devices, cuts {list(setup.plan.cuts)}, batch sizes "
          f"{list(setup.plan.batch_sizes)}, I = {cfg.train.agg_interval}, {args.rounds} rounds x {args.trials} "
          f"trials, torch threads {torch.get_num_threads()}")
    for fn in LOOPS.values():
        fn(setup, 2)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in LOOPS}
    for trial in range(args.trials):
        for name, fn in LOOPS.items():
            rates[name].append(samples / fn(setup, args.rounds))
        print(f"trial {trial + 1}: " + "   ".join(f"{n} {r[-1]:8.1f} samples/s" for n, r in rates.items()))
    print("\n| loop | samples/s (median) | SFL / loop (median of per-trial ratios) |")
    print("|---|---|---|")
    for name, r in rates.items():
        ratio = statistics.median(s / b for s, b in zip(rates["sfl"], r))
        print(f"| {name} | {statistics.median(r):.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
