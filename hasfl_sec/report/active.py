"""The report's section on a malicious edge server (tables ``hijack``, ``detectors``; docs/privacy.md section 7).

The attacker is feature-space hijacking (Pasquini, Ateniese and Bernaschi, CCS 2021): the edge
server returns crafted gradients that steer a device's client part into a feature space it can
invert. The devices run SplitGuard (Erdogan, Kupcu and Cicek, WPES 2022) and SplitOut (Erdogan et
al., 2023). The section shows what the server reconstructs at the end of training, per cut and
device class, with each defense; when and whether each detector caught it, and what leaked before;
and the detectors' false alarms on devices served honestly.
"""

from __future__ import annotations

import pandas as pd

from .doc import Block, Figure, Items, Text
from .seeds import ci_legend, ci_table, seed_count, with_ci
from .tables import EvalData

__all__ = ["active_blocks"]

_HIJACK_NUMBERS = ["mse", "ssim", "psnr", "baseline_mse", "below_guess_round", "accuracy", "mse_change"]
_DETECTOR_NUMBERS = ["detection_round", "mse_at_detection", "ssim_at_detection"]


def _rate(count: object, runs: object, rate: float, low: float, high: float) -> str:
    """``3/4 (0.75, 95% CI 0.30-0.95)``; a dash without runs."""
    if not runs or pd.isna(rate):
        return "–"
    return f"{int(count)}/{int(runs)} ({rate:.2f}, {low:.2f}-{high:.2f})"


def _threat_models(data: EvalData) -> list[str]:
    """One line per distinct threat model of the attacked arms (from ``eval.json``)."""
    hijacks = data.meta.get("hijack") or {}
    seen = dict.fromkeys(str(h.get("threat_model", "")) for h in hijacks.values() if h.get("attack") != "none")
    return [t for t in seen if t]


def _hijack_table(data: EvalData) -> list[Block]:
    h = data.table("hijack")
    if h.empty:
        return []
    shown = with_ci(h, _HIJACK_NUMBERS)
    shown["mse_change"] = [("–" if pd.isna(m) else f"{t}{' (real)' if s else ''}")
                           for t, m, s in zip(shown["mse_change"], h["mse_change"], h["mse_change_significant"])]
    seeds = seed_count(data.table("active"))
    return [ci_table(shown, {
        "plan": "arm", "defense": "defense", "setting": "setting", "cut": "cut", "device_class": "device class",
        "round": "last round", "mse": "MSE", "ssim": "SSIM", "psnr": "PSNR (dB)", "baseline_mse": "guess MSE",
        "below_guess_round": "first round below guess", "accuracy": "final accuracy",
        "mse_change": "MSE change vs undefended"},
        "What the hijacking server reconstructs at the end of training", _HIJACK_NUMBERS),
        Text(ci_legend(seeds) + " Per hijacked device, the attacker's inversion of that round's smashed data "
             "against the device's private batch (an oracle score the attacker cannot compute; Pasquini et al., "
             "section 4), averaged over the devices of a cut and class. The guess is the attacker's best "
             "reconstruction without the attack: the mean of its own images. 'First round below guess' is the "
             "first measured round whose reconstruction beat it. 'MSE change' is paired over seeds against the "
             "undefended attacked arm (same cut and class): positive means the defense slowed the attacker; "
             "(real) marks an interval that excludes 0. Final accuracy is the task's, on every device.")]


def _detector_table(data: EvalData) -> list[Block]:
    d = data.table("detectors")
    if d.empty:
        return []
    shown = with_ci(d, _DETECTOR_NUMBERS)
    shown["caught_text"] = [_rate(*r) for r in zip(d["caught"], d["hijacked_runs"], d["caught_rate"],
                                                   d["caught_low"], d["caught_high"])]
    shown["alarms_text"] = [_rate(*r) for r in zip(d["false_alarms"], d["honest_runs"], d["false_alarm_rate"],
                                                   d["false_alarm_low"], d["false_alarm_high"])]
    return [ci_table(shown, {
        "plan": "arm", "defense": "defense", "setting": "setting", "detector": "detector",
        "caught_text": "hijacked devices caught", "detection_round": "detection round",
        "mse_at_detection": "attacker's MSE then", "ssim_at_detection": "attacker's SSIM then",
        "alarms_text": "false alarms (honest devices)"},
        "The devices' detectors: when they caught the server, and what leaked before", _DETECTOR_NUMBERS),
        Text("Counts are over device-runs (devices × seeds), with Wilson 95% intervals; devices of one run "
             "share a model, so these intervals are optimistic. Detection rounds and the attacker's scores at "
             "detection are means over seeds of the caught devices (± 95% Student-t). False alarms count the "
             "devices the server served honestly: every device of the honest arm, and the devices an attacked "
             "arm did not hijack.")]


def active_blocks(data: EvalData, figures: list[str]) -> list[Block]:
    """The section's blocks (empty when the evaluation ran no active arm)."""
    blocks: list[Block] = []
    models = _threat_models(data)
    if models:
        blocks.append(Text("Threat model (edge server, active): it returns crafted gradients instead of the "
                           "task's to the devices it hijacks (feature-space hijacking, Pasquini, Ateniese and "
                           "Bernaschi, CCS 2021), and trains the task honestly on the others. It knows:"))
        blocks.append(Items(models))
    blocks += _hijack_table(data)
    if "hijack.png" in figures:
        blocks.append(Figure("figures/hijack.png", "Reconstruction MSE against rounds (means over seeds, 95% "
                                                   "bands): per cut and device class without a defense (left), "
                                                   "per attacked arm (right); dashed: the guess without the attack."))
    blocks += _detector_table(data)
    for grid in sorted((data.path / "figures").glob("hijack_*.png")):
        arm = grid.stem.removeprefix("hijack_")
        blocks.append(Figure(f"figures/{grid.name}", f"arm {arm}: a hijacked device's private images (top) and "
                                                     "the server's reconstructions at the last round (first seed)"))
    return blocks
