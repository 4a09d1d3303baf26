"""Leakage against cut depth for He et al. (2019)'s two attacks, set beside their published numbers.

For each dataset and normalisation, the default CNN (``hecnn``: He et al.'s 6-conv + 2-fc CIFAR
network at width 16) is trained centrally and audited at every cut with ``hasfl-sec audit``'s
bare-model path: a simulated device at each cut, the white-box rMLE attack and the black-box
inverse network (auxiliary data = the held-out split, same distribution, disjoint). Prints mean
SSIM and PSNR per cut and the wall time per attack. ``--norm none`` is He et al.'s architecture
(no normalisation layers); ``--norm group`` is our default model (GroupNorm after every conv).

    python benchmarks/bench_he_table.py                                  # digits and lfw, norm none and group
    python benchmarks/bench_he_table.py --datasets lfw --norms none --images 16

LFW uses its native 25x25 size and a 50/50 split (100 held-out images for the inverse network).
"""

from __future__ import annotations

import argparse
import time

import torch

from hasfl_sec.audit.config import AuditConfig
from hasfl_sec.audit.entry import audit_model
from hasfl_sec.config import load_config

#: He et al. 2019, CIFAR-10, same CNN: SSIM at conv11 / ReLU22 / ReLU32 (docs/privacy.md section 2).
HE_CIFAR = {"rmle": {1: 0.9960, 4: 0.6940, 6: 0.1625}, "inverse-network": {1: 0.9992, 4: 0.6802, 6: 0.2196}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["digits", "lfw"])
    parser.add_argument("--norms", nargs="+", default=["none", "group"])
    parser.add_argument("--attacks", nargs="+", default=["rmle", "inverse-network"])
    parser.add_argument("--cuts", nargs="+", type=int, default=list(range(1, 8)))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| data | norm | accuracy | attack | " + " | ".join(f"cut {c}" for c in args.cuts) + " | seconds |")
    print("|---|---|---|---|" + "---|" * (len(args.cuts) + 1))
    for dataset in args.datasets:
        extra = ["data.image_size=null", "data.test_fraction=0.5"] if dataset == "lfw" else []
        for norm in args.norms:
            cfg = load_config(overrides=[f"data.dataset={dataset}", f"model.norm={norm}", "train.agg_interval=1",
                                         *extra])
            audit = AuditConfig(attacks=args.attacks, cuts=args.cuts, images=args.images, batch_size=args.images,
                                seeds=args.seeds, dependence=[], dfil_relative_sigma=None)
            start = time.perf_counter()
            result, _ = audit_model(cfg, audit, epochs=args.epochs)
            f = result.frame
            for attack in args.attacks:
                for metric in ("ssim", "psnr"):
                    vals = f[(f.attack == attack) & (f.metric == metric)].set_index("cut").value
                    secs = f[(f.attack == attack) & (f.metric == "wall_time_s")].value.sum()
                    print(f"| {dataset} | {norm} | {result.meta['test_accuracy']:.3f} | {attack} {metric} | "
                          + " | ".join(f"{vals.get(c, float('nan')):.3f}" if metric == "ssim"
                                       else f"{vals.get(c, float('nan')):.1f}" for c in args.cuts)
                          + f" | {secs:.0f} |", flush=True)
            print(f"<!-- {dataset}/{norm}: {time.perf_counter() - start:.0f} s -->", flush=True)
    print("| He et al. CIFAR-10 | none | - | rmle ssim | " + " | ".join(
        f"{HE_CIFAR['rmle'].get(c, float('nan')):.3f}" for c in args.cuts) + " | - |")
    print("| He et al. CIFAR-10 | none | - | inverse-network ssim | " + " | ".join(
        f"{HE_CIFAR['inverse-network'].get(c, float('nan')):.3f}" for c in args.cuts) + " | - |")


if __name__ == "__main__":
    main()
