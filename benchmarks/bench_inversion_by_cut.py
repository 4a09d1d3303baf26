"""Preliminary leakage-by-cut figures for the two He et al. (2019) attacks (issue 4 in progress).

Trains the default CNN with split federated learning for a few rounds, one device per cut
(cuts 1..7, uniform batch), records the next round with the cut-layer tap, and inverts each
device's smashed data with the white-box rMLE attack and the black-box inverse network (256
auxiliary test images through query access). Prints mean SSIM (Gaussian 11x11, sigma 1.5; images
smaller than 11 px use the largest window that fits) per cut and attack. Replaced by
``hasfl-sec audit`` once the audit lands.

    python benchmarks/bench_inversion_by_cut.py                   # digits, 30 rounds
    python benchmarks/bench_inversion_by_cut.py --set data.dataset=lfw --set data.image_size=null
"""

from __future__ import annotations

import argparse
import copy
import time

from hasfl_sec.api import prepare
from hasfl_sec.attacks import ATTACKS
from hasfl_sec.attacks.base import make_context, observe
from hasfl_sec.config import load_config
from hasfl_sec.metrics import ssim
from hasfl_sec.tap import CutLayerTap, TapSelector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="training rounds before the recorded round")
    parser.add_argument("--attacks", nargs="+", default=["rmle", "inverse-network"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args()
    base = load_config(overrides=args.overrides)
    cuts = list(range(1, 8))
    cfg = load_config(overrides=[*args.overrides, f"fleet.num_devices={len(cuts)}", "plan.strategy=fixed",
                                 f"plan.cut={cuts}", "plan.batch_size=8", f"train.rounds={args.rounds + 1}"])
    setup = prepare(cfg)
    trainer = setup.trainer()
    for _ in range(args.rounds):
        trainer.step()
    clients = [copy.deepcopy(c) for c in trainer.clients]  # the weights in use in the recorded round
    tap = CutLayerTap(TapSelector(rounds={args.rounds + 1}))
    with tap.attached(trainer):
        trainer.step()
    print(f"{base.data.dataset}: {setup.dataset.input_shape}, model {cfg.model.name}, {args.rounds} rounds")
    print("| attack | " + " | ".join(f"cut {c} ({setup.model.block_names[c - 1]})" for c in cuts) + " | seconds |")
    print("|---|" + "---|" * (len(cuts) + 1))
    for name in args.attacks:
        cls = ATTACKS.get(name)
        row, start = [], time.perf_counter()
        for dev, cut in enumerate(cuts):
            ex, truth = tap.exchanges[(args.rounds + 1, dev, 0)], tap.truths[(args.rounds + 1, dev, 0)]
            attack = cls()
            ctx = make_context(attack.threat_model, client=clients[dev], fresh_client=lambda: copy.deepcopy(clients[dev]),
                               input_shape=setup.dataset.input_shape, num_classes=setup.dataset.num_classes, cut=cut,
                               auxiliary=setup.dataset.x_test, seed=cfg.seed)
            attack.fit(ctx)
            rec = attack.reconstruct(observe([ex], [], attack.threat_model), ctx)
            row.append(float(ssim(rec.inputs, truth.inputs).mean()))
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {time.perf_counter() - start:.0f} |")


if __name__ == "__main__":
    main()
