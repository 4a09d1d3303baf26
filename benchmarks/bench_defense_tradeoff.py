"""Defense trade-off table in the ResSFL / He et al. format (issue 5, benchmark 1).

Trains the default config's SFL plan (uniform batch 16, the default cut ``plan.cut``) undefended
and under each defense setting of a sweep, audits each run at that cut with the unaware and the
adaptive attackers, and prints test accuracy, accuracy drop and each attacker's SSIM / MSE per
setting. The target is a setting within 1 point of the undefended accuracy whose strongest
adaptive attack has SSIM < 0.3. It also prints the label-only reference: the SSIM of the
class-mean image, which an edge server that reads the labels reaches without looking at the
smashed data at all.

    python benchmarks/bench_defense_tradeoff.py --threads 2            # the full sweep
    python benchmarks/bench_defense_tradeoff.py --quick --threads 2    # two settings per family

It is ``hasfl-sec eval --strategies sfl --budgets ''`` with a denser defense grid; the run
directories and the report land in ``--out`` (default reports/bench-defenses).
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from hasfl_sec.config import load_config
from hasfl_sec.evaluation import DefenseSweep, EvalSettings, run_eval
from hasfl_sec.evaluation.tables import class_mean_ssim
from hasfl_sec.report.markdown import markdown_table
from hasfl_sec.runs.setup import config_dataset

FULL = [
    DefenseSweep("noise", "sigma", [0.25, 0.5, 1.0, 2.0, 4.0]),
    DefenseSweep("nopeek", "weight", [0.5, 2.0, 8.0]),
    DefenseSweep("dpsgd", "target_epsilon", [2.0, 8.0], {"max_grad_norm": 1.0}),
    DefenseSweep("topk", "ratio", [0.3, 0.1, 0.03]),
    DefenseSweep("quantize", "bits", [4, 2, 1]),
]
QUICK = [DefenseSweep(s.defense, s.param, s.values[:2], s.fixed) for s in FULL]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two settings per defense family")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--out", default="reports/bench-defenses")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    config = load_config(overrides=["train.eval_every=1", *args.overrides])
    settings = EvalSettings(name="bench-defenses", strategies=["sfl"], budgets=[],
                            defenses=QUICK if args.quick else FULL, images=args.images)
    start = time.perf_counter()
    result = run_eval(config, settings, out=args.out, overwrite=True)
    table = result.tables["defenses"]
    cols = ["defense", "setting", "cut", "accuracy", "accuracy_drop", "attack", "ssim", "mse", "epsilon"]
    print(markdown_table(table[cols]))
    # An attacker who knows the defense may still pick an unaware attack: the strongest of all rows.
    strongest = (table.groupby(["defense", "setting"], sort=False)
                 .agg(accuracy_drop=("accuracy_drop", "first"), strongest_ssim=("ssim", "max")).reset_index())
    print()
    print(markdown_table(strongest))
    ok = strongest[(strongest["accuracy_drop"] <= 1.0) & (strongest["strongest_ssim"] < 0.3)]
    print(f"\nsettings within 1 point and strongest adaptive SSIM < 0.3: {len(ok)}")
    print(f"label-only reference (class-mean image of the auxiliary data): SSIM {class_mean_ssim(config_dataset(config), config.seed):.3f}")
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
