"""The networks a feature-space hijacking server trains (FSHA, Pasquini et al., CCS 2021, section 3.1).

For each cut the attacker needs three networks whose shapes follow the smashed data at that cut:

* the *pilot* f~, mapping inputs into the smashed space (same output shape as the device's client
  part): here the client part's own architecture, freshly initialised -- in SFL the server side
  distributes the model, so it knows the architecture, and the shape matches at every cut;
* the *decoder* f~^-1, mapping the smashed space back to inputs in ``[0, 1]`` (a sigmoid output;
  the paper's pixels are in ``[-1, 1]`` with a tanh, the same map up to an affine change);
* the *discriminator* D on the smashed space, a Wasserstein critic: no normalisation layers,
  since the gradient penalty is taken per sample (Gulrajani et al., NeurIPS 2017, section 4).

The paper's MNIST networks are residual stacks sized for 28x28 inputs at its four split levels; the
builders below derive the same roles from any smashed shape (``[C, h, w]`` or ``[d]``): stride-2
transposed convolutions upsample the decoder by doubling until the input side is reached (a final
bilinear resize covers a side that is not a power of two times ``h``), and the critic halves with
stride-2 convolutions down to 4x4 before one linear score. ``width`` sets the channels of both.
"""

from __future__ import annotations

import math

from torch import nn

from .shapes import as_map

__all__ = ["decoder", "discriminator"]


def _upsampler(channels: int, side: int, input_shape: tuple[int, int, int], width: int) -> list[nn.Module]:
    """Convolutions from ``[channels, side, side]`` up to ``input_shape``, sigmoid output."""
    c, h, w = input_shape
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
    while side * 2 <= max(h, w):
        layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        side *= 2
    if (side, side) != (h, w):
        layers.append(nn.Upsample(size=(h, w), mode="bilinear", align_corners=False))
    layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(width, c, 3, padding=1),
               nn.Sigmoid()]
    return layers


def decoder(smashed_shape: tuple[int, ...], input_shape: tuple[int, int, int], width: int) -> nn.Sequential:
    """f~^-1: smashed data of ``smashed_shape`` (without the batch) to images of ``input_shape``."""
    head, smashed_shape = as_map(smashed_shape)
    if len(smashed_shape) == 3:
        channels, h, w = smashed_shape
        if h != w:  # square the feature map first; the zoo's models keep square maps
            head.append(nn.Upsample(size=(max(h, w), max(h, w)), mode="bilinear", align_corners=False))
        return nn.Sequential(*head, *_upsampler(channels, max(h, w), input_shape, width))
    if len(smashed_shape) == 1:
        side = max(1, min(input_shape[1:]) // 4)
        return nn.Sequential(*head, nn.Linear(smashed_shape[0], width * side * side), nn.LeakyReLU(0.2),
                             nn.Unflatten(1, (width, side, side)), *_upsampler(width, side, input_shape, width))
    raise ValueError(f"smashed data of shape {list(smashed_shape)}: expected [C, H, W], [T, D] or [D]")


def discriminator(smashed_shape: tuple[int, ...], width: int) -> nn.Sequential:
    """D: one real-valued score per sample of smashed data of ``smashed_shape``."""
    head, smashed_shape = as_map(smashed_shape)
    if len(smashed_shape) == 3:
        channels, h, w = smashed_shape
        layers: list[nn.Module] = [*head, nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        while max(h, w) > 4:
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * h * w, 1))
    if len(smashed_shape) == 1:
        return nn.Sequential(*head, nn.Linear(smashed_shape[0], 4 * width), nn.LeakyReLU(0.2),
                             nn.Linear(4 * width, width), nn.LeakyReLU(0.2), nn.Linear(width, 1))
    raise ValueError(f"smashed data of shape {list(smashed_shape)}: expected [C, H, W], [T, D] or [D]")
