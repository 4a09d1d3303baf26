"""The report's section for a transformer: what the HASFL paper left open, measured.

The paper evaluates CNNs only. A transformer's blocks all output hidden states of one size and
cost about the same, so the cut changes how much a device computes but not what it sends; this
section shows the measured profile per cut, the cuts and batch sizes the plans gave each device
class, and points at the leakage per cut (docs/privacy.md, "Transformers").
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .doc import Block, Text, table
from .tables import EvalData

__all__ = ["TRANSFORMERS", "transformer_blocks"]

#: Models whose blocks are transformer blocks (the zoo's names).
TRANSFORMERS = {"vit-tiny": "Vision Transformer", "gpt-char": "character-level GPT"}


def _model(data: EvalData) -> str:
    return str(((data.meta.get("config") or {}).get("model") or {}).get("name", ""))


def _profile(path: Path) -> pd.DataFrame | None:
    """The profile every run of the evaluation shares (the model is the same in every cell)."""
    found = sorted(path.glob("runs/*/profile.csv")) or sorted(path.glob("runs/*/*/profile.csv"))
    return pd.read_csv(found[0]) if found else None


def _profile_table(profile: pd.DataFrame) -> Block:
    frame = pd.DataFrame({
        "cut": profile["cut"], "after": profile["name"],
        "device MFLOP/sample": (profile["client_fwd_flops"] + profile["client_bwd_flops"]) / 1e6,
        "server MFLOP/sample": (profile["server_fwd_flops"] + profile["server_bwd_flops"]) / 1e6,
        "smashed KB/sample": profile["smashed_bytes"] / 1024,
        "device parameters": profile["client_params"],
    })
    return table(frame, list(frame.columns), "Measured cost of each cut (forward and backward FLOPs, what is sent "
                                             "each way per sample, parameters on the device)")


def _cuts_by_class(data: EvalData) -> Block | None:
    if not data.has("classes"):
        return None
    classes = data.table("classes")
    keep = [c for c in ("plan", "device_class", "devices", "batch", "cuts") if c in classes.columns]
    return table(classes[keep], keep, "Cuts and batch sizes each plan gave each device class (over seeds)")


def transformer_blocks(data: EvalData) -> list[Block]:
    """The section's blocks, or none when the evaluated model is not a transformer."""
    model = _model(data)
    if model not in TRANSFORMERS:
        return []
    blocks: list[Block] = [Text(
        f"The model is a {TRANSFORMERS[model]} ({model}). The HASFL paper evaluates CNNs only and names "
        "transformers as its first open question. Its latency model and bound apply unchanged: the profile "
        "below is measured like a CNN's. What differs is the shape of the trade-off: every cut sends hidden "
        "states of the same size, so a deeper cut only moves computation onto the device, and the optimizer has "
        "no smaller uplink to trade it for.")]
    profile = _profile(data.path)
    if profile is not None:
        blocks.append(_profile_table(profile))
        sizes = profile["smashed_bytes"].unique()
        if len(sizes) == 1:
            blocks.append(Text(f"Every cut sends {sizes[0] / 1024:.3g} KB per sample (and receives as much back)."))
    by_class = _cuts_by_class(data)
    if by_class is not None:
        blocks.append(by_class)
    blocks.append(Text("Leakage against cut depth for this model is in the section \"Leakage per split\"."
                       + (" For text, the attacks recover characters: token accuracy, ROUGE-L and the exact "
                          "recovery of planted secrets." if model == "gpt-char" else "")))
    return blocks
