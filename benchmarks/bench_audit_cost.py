"""Wall time of a full ``--cuts all`` audit of the default CNN, with a per-attack breakdown.

Equivalent to ``hasfl-sec audit --model hecnn --dataset digits --cuts all --images 64 --seeds 0``:
the default CNN trained centrally on digits, a simulated device at each of its 7 cuts, every
registered attack with its default parameters, the attack-independent figures (dCor, nHSIC, KSG,
dFIL). Prints the total and each attack's share (``none`` = the attack-independent figures).

    python benchmarks/bench_audit_cost.py
    python benchmarks/bench_audit_cost.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from hasfl_sec.attacks.registry import ATTACKS
from hasfl_sec.audit.config import AuditConfig
from hasfl_sec.audit.entry import audit_model
from hasfl_sec.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--attacks", nargs="+", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cfg = load_config()
    result, _ = audit_model(cfg, AuditConfig(attacks=args.attacks, cuts="all", images=args.images), epochs=args.epochs)
    total = time.perf_counter() - start
    seconds = result.meta["attack_seconds"]
    print(f"audit of hecnn/digits, cuts 1-7, {args.images} images, 1 seed, {args.threads} torch threads: "
          f"{total:.0f} s total ({total / 60:.1f} min); central training and setup {total - sum(seconds.values()):.0f} s")
    print("| attack | seconds | share |")
    print("|---|---|---|")
    for name in [*(args.attacks or ATTACKS.names()), "none"]:
        if name in seconds:
            print(f"| {name} | {seconds[name]:.0f} | {seconds[name] / total:.0%} |")
    for reason in result.skipped:
        print(f"skipped: {reason}")


if __name__ == "__main__":
    main()
