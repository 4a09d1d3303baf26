"""Solve time of the HASFL optimizer for N = 10, 100, 1000 devices on the default model and VGG-16.

The problem is built from a measured model profile, a generated fleet (high heterogeneity) and
bound constants; solve time does not depend on how the constants were obtained, so the literal
constants are replaced by fixed, documented values (every block sigma_j^2 = G_j^2 = 10, theta 2.3,
beta 10, lr 0.05, I = 5, C = 4, with the drift scaled so that variance and drift are of similar
size) and epsilon is twice the smallest floor. Each figure is the median of ``--repeats`` solves.

    python benchmarks/bench_solver_cost.py
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from hasfl_sec.fleet import generate_fleet
from hasfl_sec.models import build_model, profile_model
from hasfl_sec.optimizer import PLANNERS, PlannerParams, Problem
from hasfl_sec.planning.bound import BoundConstants

MODELS = {"hecnn (1x16x16)": dict(name="hecnn", in_channels=1, image_size=16),
          "vgg16 (3x32x32)": dict(name="vgg16", in_channels=3, image_size=32)}


def problem_for(profile, n: int, b_max: int) -> Problem:
    fleet = generate_fleet(num_devices=n, heterogeneity="high", seed=0)
    L = len(profile.blocks)
    bound = BoundConstants(sigma2=(10.0,) * L, G2=(10.0,) * L, theta=2.3, beta=10.0, grad_norm0=1.0, lr=0.05,
                           num_devices=n, interval=5, drift_scale=1e-3)
    loose = Problem.from_setup(fleet, profile, bound, epsilon=1e300, b_max=b_max)
    return dataclasses.replace(loose, epsilon=2.0 * loose.variance_drift_floor())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--b-max", type=int, default=64)
    args = parser.parse_args()
    print("| model | cuts | N | solve time (median) | BCD iterations | predicted time to target |")
    print("|---|---|---|---|---|---|")
    for label, spec in MODELS.items():
        model = build_model(spec["name"], in_channels=spec["in_channels"], num_classes=10,
                            image_size=spec["image_size"])
        profile = profile_model(model)
        for n in args.sizes:
            problem = problem_for(profile, n, args.b_max)
            times, sol = [], None
            for _ in range(args.repeats):
                start = time.perf_counter()
                sol = PLANNERS.get("hasfl")(problem, PlannerParams(b_max=args.b_max))
                times.append(time.perf_counter() - start)
            print(f"| {label} | {len(problem.cuts)} | {n} | {statistics.median(times):.3f} s | {sol.iterations} | "
                  f"{sol.time_to_target_s:.4g} s |")


if __name__ == "__main__":
    main()
