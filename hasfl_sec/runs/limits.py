"""Whether a run fits in this machine's memory, checked from its config before any data is read.

A run holds its whole data set as float32 tensors at ``data.image_size`` and, while a device
trains, the activations of its batch. :func:`check_resources` adds up a lower bound of both
(the data set's tensors, the model's parameters, the activations of one sample) and refuses the
config in one line when even that exceeds the memory available, instead of letting the
allocator fail with a traceback after the data was read (``--image-size 100000`` asked for
57 TB). The model is built on PyTorch's ``meta`` device, which
computes shapes without allocating, so the check costs milliseconds at any size.
"""

from __future__ import annotations

import torch

from ..config import ExperimentConfig
from ..data.footprint import footprint
from ..data.text import TEXT_DATASETS
from ..errors import check_memory, human_bytes
from ..models import build_model
from ..models.zoo import check_modality

__all__ = ["check_resources", "activation_numel", "meta_model"]


def activation_numel(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Values every leaf module of ``model`` outputs for one sample of ``input_shape`` (the
    activations a backward pass keeps), computed on the meta device without allocating."""
    total = 0

    def count(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(example(1, device="meta") if (example := getattr(model, "example_input", None))
                  else torch.empty(1, *input_shape, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _model(cfg: ExperimentConfig, channels: int, side: int, classes: int) -> torch.nn.Module:
    m = cfg.model
    return build_model(m.name, in_channels=channels, num_classes=classes, image_size=side, norm=m.norm,
                       width=m.width, dropout=m.dropout)


def meta_model(cfg: ExperimentConfig) -> torch.nn.Module | None:
    """``cfg``'s model on the meta device (shapes, no memory), built before the data are read; None
    where the data set's shape or classes are not known until then (an image folder)."""
    fp = footprint(cfg.data.dataset, cfg.data.data_root, cfg.data.image_size)
    if fp is None or fp.classes is None:
        return None
    with torch.device("meta"):
        return _model(cfg, fp.channels, fp.side, fp.classes)


def check_resources(cfg: ExperimentConfig) -> None:
    """Refuse ``cfg`` if its model does not read its data (a text model on images, or the reverse), or
    if its data set and model cannot fit in the memory available (a lower bound;
    a run that passes may still need more). Unknown data sizes (an image folder at its natural
    size) are not checked here."""
    d, m = cfg.data, cfg.model
    check_modality(m.name, d.dataset, TEXT_DATASETS)
    fp = footprint(d.dataset, d.data_root, d.image_size)
    if fp is None:
        return
    with torch.device("meta"):
        model = _model(cfg, fp.channels, fp.side, fp.classes or 10)
        params = sum(p.numel() for p in model.parameters())
        per_sample = activation_numel(model, (fp.channels, fp.side, fp.side))
    # float32: the data set, the parameters with their gradients, one sample's activations and
    # theirs (a batch too large for a device is refused by the plan's memory check, naming it)
    need = fp.nbytes + 4 * (2 * params + 2 * per_sample)
    check_memory("data.image_size", d.image_size, need,
                 f"data set ({fp.images} images of {fp.channels}x{fp.side}x{fp.side}, {human_bytes(fp.nbytes)}) "
                 f"and model {m.name} ({human_bytes(4 * per_sample)} of activations per image)")
