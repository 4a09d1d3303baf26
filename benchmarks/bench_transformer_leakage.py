"""Leakage against cut depth on the transformers, beside the CNN (issue 16's measurements).

Text: gpt-char trained centrally (Adam) on ``pydoc-secrets``; at every cut, each text attack
(``text-inversion`` white-box, ``text-inverter`` with query access and auxiliary text,
``text-unsplit`` architecture only) recovers the characters of sequences holding planted secrets;
token accuracy, ROUGE-L and exact secret recovery are averaged per seed and reported as means with
95% t intervals over seeds.

Images: vit-tiny and hecnn trained centrally on the same data (digits by default); at every cut
the image attacks (rMLE, inverse network, UnSplit) are scored by SSIM, mean with 95% t interval
over seeds, the two models side by side.

Gradient inversion of the client update runs on whole aggregation periods, so it is measured on
its own, at the small batches HASFL gives the transformers' devices (``--batch``):

    python benchmarks/bench_transformer_leakage.py text --seeds 0 1 2
    python benchmarks/bench_transformer_leakage.py images --seeds 0 1 2 --dataset digits
    python benchmarks/bench_transformer_leakage.py text --attacks text-gradient-inversion --batch 2 --images 10
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from hasfl_sec.audit.config import AuditConfig
from hasfl_sec.audit.entry import audit_model
from hasfl_sec.config import load_config
from hasfl_sec.report.markdown import markdown_table
from hasfl_sec.stats import mean_ci

TEXT_ATTACKS = {"text-inversion": {"steps": 300}, "text-inverter": {"steps": 1000}, "text-unsplit": {"rounds": 10}}
IMAGE_ATTACKS = {"rmle": {"steps": 600}, "inverse-network": {"steps": 800}, "unsplit": {"steps": 200}}
#: every attack the script can run (``--attacks``), with its parameters
PARAMS = {**TEXT_ATTACKS, **IMAGE_ATTACKS, "text-gradient-inversion": {"steps": 300}, "gradient-inversion": {}}


def leakage(model: str, dataset: str, seed: int, attacks: dict, metrics: list[str], args: argparse.Namespace,
            extra: list[str]) -> pd.DataFrame:
    """Mean of each metric per (cut, attack) for one seed; trained centrally first."""
    cfg = load_config(overrides=[f"model.name={model}", f"data.dataset={dataset}", f"seed={seed}", *extra])
    audit = AuditConfig(attacks=list(attacks), cuts="all", images=args.images, batch_size=args.batch or args.images,
                        attack_params=attacks, dependence=["dcor"], dfil_relative_sigma=None, seeds=[0])
    start = time.perf_counter()
    result, _ = audit_model(cfg, audit, epochs=args.epochs)
    frame = result.frame[result.frame.metric.isin(metrics + ["dcor"])]
    print(f"{model} seed {seed}: accuracy {result.meta['test_accuracy']:.3f}, {time.perf_counter() - start:.0f} s",
          flush=True)
    out = frame[["cut", "attack", "metric", "value"]].copy()
    out["model"], out["seed"], out["accuracy"] = model, seed, result.meta["test_accuracy"]
    return out


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t interval over seeds per (model, attack, metric, cut)."""
    rows = []
    for (model, attack, metric, cut), part in frame.groupby(["model", "attack", "metric", "cut"]):
        ci = mean_ci(part.value)
        rows.append({"model": model, "attack": attack, "metric": metric, "cut": cut, "mean": ci.mean,
                     "ci": f"[{ci.low:.3f}, {ci.high:.3f}]", "seeds": ci.n})
    return pd.DataFrame(rows)


def table(summary: pd.DataFrame, metric: str) -> str:
    part = summary[summary.metric == metric]
    part = part.assign(cell=[f"{m:.3f} {c}" for m, c in zip(part["mean"], part["ci"])])
    wide = part.pivot_table(index=["model", "attack"], columns="cut", values="cell", aggfunc="first")
    wide.columns = [f"cut {c}" for c in wide.columns]
    return markdown_table(wide.reset_index())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["text", "images"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=16, help="victim sequences or images per cut")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dataset", default=None, help="pydoc-secrets (text) or digits (images)")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--attacks", nargs="+", choices=sorted(PARAMS), default=None,
                        help="attacks to run (default: the text or image attacks above)")
    parser.add_argument("--batch", type=int, default=None, help="victim batch per round (default: --images)")
    parser.add_argument("--out", default=None, help="CSV of the per-seed values")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    attacks = {a: PARAMS[a] for a in args.attacks} if args.attacks else None
    frames = []
    if args.what == "text":
        metrics = ["token_accuracy", "rouge_l", "secret_recovery"]
        for seed in args.seeds:
            frames.append(leakage("gpt-char", args.dataset or "pydoc-secrets", seed, attacks or TEXT_ATTACKS, metrics,
                                  args,
                                  [f"data.context={args.context}"]))
    else:
        metrics = ["ssim"]
        for model in ("vit-tiny", "hecnn"):
            for seed in args.seeds:
                frames.append(leakage(model, args.dataset or "digits", seed, attacks or IMAGE_ATTACKS, metrics, args,
                                      []))
    frame = pd.concat(frames, ignore_index=True)
    if args.out:
        frame.to_csv(args.out, index=False)
    summary = summarise(frame)
    accuracy = frame.groupby("model").accuracy.agg(["mean", "min", "max"])
    print("\ncentral test accuracy over seeds:\n" + markdown_table(accuracy.reset_index()))
    for metric in [*metrics, "dcor"]:
        print(f"\n### {metric} against cut (mean [95% CI] over {len(args.seeds)} seeds)\n")
        print(table(summary, metric))


if __name__ == "__main__":
    main()
