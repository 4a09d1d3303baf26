"""The model zoo: split-ready networks registered by name.

Every builder has the signature ``builder(*, in_channels, num_classes, image_size, norm="group",
width=None, dropout=0.0) -> SplitModel``; use :func:`build_model`, which validates the arguments
first. Registered models:

* ``hecnn`` (default) -- the 6-conv + 2-fc CIFAR-10 network attacked by He, Zhang & Lee,
  "Model inversion attacks against collaborative inference", ACSAC 2019.
* ``vgg16`` -- torchvision's VGG-16 layer configuration (``cfgs["D"]``) with a small-input head.
* ``resnet18`` -- torchvision's ResNet-18 with a CIFAR-style stem.

No model contains BatchNorm (``norm`` is ``"group"`` or ``"none"``), so batches of one sample train
and Opacus can wrap the models. Parameters are initialised from torch's global RNG only; the
caller seeds it. Building a model consumes no randomness beyond parameter initialisation.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models.vgg import cfgs as tv_vgg_cfgs

from ..errors import ConfigError
from ..registry import Registry
from .split import SplitModel, check_norm, group_norm_groups, make_norm2d

__all__ = ["MODELS", "DEFAULT_MODEL", "HECNN_DEFAULT_WIDTH", "TEXT_MODELS", "build_model", "check_modality"]

#: Registry of model builders, selected by the ``model.name`` setting.
MODELS: Registry[Callable[..., SplitModel]] = Registry("model", "model.name")

#: Models whose inputs are token ids; the others read images (``check_modality``).
TEXT_MODELS: set[str] = {"gpt-char"}

#: Name of the default model.
DEFAULT_MODEL = "hecnn"

#: Default base width of ``hecnn`` in this toolkit (the paper uses 64).
HECNN_DEFAULT_WIDTH = 16


def check_modality(model: str, dataset: str, text_datasets: set[str]) -> None:
    """Refuse a text model on images or an image model on text, naming the models that fit.

    Raises:
        ConfigError: on ``model.name``.
    """
    text = dataset in text_datasets
    if (model in TEXT_MODELS) == text:
        return
    fits = sorted(n for n in MODELS.names() if (n in TEXT_MODELS) == text)
    kind = "text" if text else "image"
    raise ConfigError("model.name", model, f"a model for {kind} data: {', '.join(fits)}",
                      f"data.dataset {dataset!r} is {kind} data")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    norm: str = "group",
    width: int | None = None,
    dropout: float = 0.0,
) -> SplitModel:
    """Validate the arguments and build the registered model ``name``.

    Raises:
        ConfigError: unknown ``name`` (on ``model.name``), or a bad ``in_channels`` (>= 1),
            ``num_classes`` (>= 2), ``image_size`` (>= 4), ``norm`` (``"group"``/``"none"``),
            ``width`` (None or >= 1) or ``dropout`` (0 <= p < 1), each on ``model.<argument>``.
    """
    builder = MODELS.get(name)
    if not _is_int(in_channels) or in_channels < 1:
        raise ConfigError("model.in_channels", in_channels, "an integer >= 1")
    if not _is_int(num_classes) or num_classes < 2:
        raise ConfigError("model.num_classes", num_classes, "an integer >= 2")
    if not _is_int(image_size) or image_size < 4:
        raise ConfigError("model.image_size", image_size, "an integer >= 4 (square images)")
    check_norm(norm)
    if width is not None and (not _is_int(width) or width < 1):
        raise ConfigError("model.width", width, "null (the model's default) or an integer >= 1")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not (0.0 <= float(dropout) < 1.0):
        raise ConfigError("model.dropout", dropout, "a number p with 0 <= p < 1")
    return builder(
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        norm=norm,
        width=width,
        dropout=float(dropout),
    )


def _conv_block(cin: int, cout: int, norm: str, pool: bool, size: int) -> nn.Sequential:
    """Conv2d(3x3, padding 1) + norm + ReLU on a ``size`` x ``size`` map, then MaxPool2d(2) if ``pool``."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel_size=3, padding=1),
        make_norm2d(norm, cout, spatial=size * size),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@torch.no_grad()
def _flat_features(blocks: list[nn.Module], in_channels: int, image_size: int) -> int:
    """Features per sample after running a zero tensor through ``blocks`` (no randomness used)."""
    x = torch.zeros(1, in_channels, image_size, image_size)
    for block in blocks:
        was = block.training
        block.eval()
        x = block(x)
        block.train(was)
    return int(x[0].numel())


@MODELS.register("hecnn", help="He et al. (ACSAC 2019) CIFAR CNN: 6 convs + 2 fc, 8 blocks; default width 16")
def build_hecnn(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    norm: str = "group",
    width: int | None = None,
    dropout: float = 0.0,
) -> SplitModel:
    """The CIFAR-10 CNN of He, Zhang & Lee, "Model inversion attacks against collaborative
    inference", ACSAC 2019 (the target network of their model-inversion attacks).

    Layers: conv11, conv12, pool, conv21, conv22, pool, conv31, conv32, pool, fc1, fc2; all convs
    are 3x3 with padding 1 and every conv and fc1 is followed by ReLU. The paper's conv widths are
    64, 64, 128, 128, 128, 128, i.e. ``(w, w, 2w, 2w, 2w, 2w)`` with ``w = 64``; pass ``width=64``
    to reproduce them. This toolkit's default is ``width=16`` so the model trains quickly on two
    CPU cores. The hidden size of fc1 (256) is our choice.

    Blocks (L = 8, legal cuts 1..7): ``conv11`` = conv+norm+ReLU, ``conv12`` = conv+norm+ReLU+pool,
    ``conv21``, ``conv22`` (+pool), ``conv31``, ``conv32`` (+pool), ``fc1`` = Flatten+Linear+ReLU
    (+Dropout when ``dropout > 0``), ``fc2`` = Linear. A pool is skipped when the feature map is
    already 1x1, so any ``image_size >= 4`` works (GroupNorm on a 1x1 map uses fewer groups so each
    holds at least two values). Parameters use PyTorch's default initialisation.
    """
    check_norm(norm)
    w = HECNN_DEFAULT_WIDTH if width is None else int(width)
    channels = (w, w, 2 * w, 2 * w, 2 * w, 2 * w)
    names = ("conv11", "conv12", "conv21", "conv22", "conv31", "conv32")
    blocks: list[nn.Module] = []
    cin, size = in_channels, image_size
    for i, (name, cout) in enumerate(zip(names, channels)):
        pool = i % 2 == 1 and size > 1
        blocks.append(_conv_block(cin, cout, norm, pool, size))
        if pool:
            size //= 2
        cin = cout
    flat = _flat_features(blocks, in_channels, image_size)
    hidden = 256
    fc1: list[nn.Module] = [nn.Flatten(1), nn.Linear(flat, hidden), nn.ReLU()]
    if dropout > 0:
        fc1.append(nn.Dropout(dropout))
    blocks += [nn.Sequential(*fc1), nn.Linear(hidden, num_classes)]
    return SplitModel(
        blocks,
        names + ("fc1", "fc2"),
        arch="hecnn",
        input_shape=(in_channels, image_size, image_size),
        num_classes=num_classes,
        config={"norm": norm, "width": w, "dropout": dropout},
    )


@MODELS.register("vgg16", help="VGG-16 (torchvision cfg 'D'): 13 convs + small 3-fc head, 16 blocks")
def build_vgg16(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    norm: str = "group",
    width: int | None = None,
    dropout: float = 0.0,
) -> SplitModel:
    """VGG-16 from torchvision's layer configuration ``torchvision.models.vgg.cfgs["D"]``.

    Each conv block is Conv2d(3x3, padding 1) + norm + ReLU, with a following ``"M"`` MaxPool2d(2)
    folded into it (skipped when the map is already 1x1). Conv widths are torchvision's 64..512,
    scaled by ``width / 64`` when ``width`` is given. The classifier is adapted to small inputs:
    ``fc1`` = AdaptiveAvgPool2d(1) + Flatten + Linear(C, 512) + ReLU (+Dropout), ``fc2`` =
    Linear(512, 512) + ReLU (+Dropout), ``fc3`` = Linear(512, num_classes). Dropout layers are
    present only when ``dropout > 0``.

    Blocks (L = 16): conv1_1, conv1_2, conv2_1, conv2_2, conv3_1..conv3_3, conv4_1..conv4_3,
    conv5_1..conv5_3, fc1, fc2, fc3. Initialisation follows torchvision's VGG: Kaiming-normal
    (fan_out, ReLU) conv weights, N(0, 0.01) linear weights, zero biases, GroupNorm 1/0.
    """
    check_norm(norm)
    cfg = list(tv_vgg_cfgs["D"])
    scale = 1.0 if width is None else int(width) / 64.0
    blocks: list[nn.Module] = []
    names: list[str] = []
    cin, size, stage, idx = in_channels, image_size, 1, 0
    for i, item in enumerate(cfg):
        if item == "M":
            continue
        cout = max(1, int(round(int(item) * scale)))
        idx += 1
        pool = i + 1 < len(cfg) and cfg[i + 1] == "M"
        do_pool = pool and size > 1
        blocks.append(_conv_block(cin, cout, norm, do_pool, size))
        names.append(f"conv{stage}_{idx}")
        if do_pool:
            size //= 2
        if pool:
            stage, idx = stage + 1, 0
        cin = cout
    hidden = 512

    def fc(cin_: int, extra: list[nn.Module]) -> nn.Sequential:
        layers = extra + [nn.Linear(cin_, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        return nn.Sequential(*layers)

    blocks += [
        fc(cin, [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]),
        fc(hidden, []),
        nn.Linear(hidden, num_classes),
    ]
    names += ["fc1", "fc2", "fc3"]
    model = SplitModel(
        blocks,
        names,
        arch="vgg16",
        input_shape=(in_channels, image_size, image_size),
        num_classes=num_classes,
        config={"norm": norm, "width": width, "dropout": dropout},
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.GroupNorm):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)
    return model


def _resnet_norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """A torchvision ``norm_layer`` factory: GroupNorm, or Identity for ``"none"``."""
    check_norm(norm)
    if norm == "group":
        return lambda channels: nn.GroupNorm(group_norm_groups(channels), channels)
    return lambda channels: nn.Identity()


@MODELS.register("resnet18", help="torchvision ResNet-18 with a CIFAR stem (3x3 conv, no maxpool), 10 blocks")
def build_resnet18(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    norm: str = "group",
    width: int | None = None,
    dropout: float = 0.0,
) -> SplitModel:
    """torchvision's ResNet-18 (``weights=None``) adapted to small inputs, CIFAR style.

    ``conv1`` becomes a 3x3 stride-1 padding-1 convolution from ``in_channels`` to 64 (Kaiming
    initialised like torchvision's) and the stem max-pool is removed. Normalisation is GroupNorm
    (via torchvision's ``norm_layer`` argument) or Identity.

    Blocks (L = 10): ``stem`` (conv1, norm, ReLU), ``layer1.0``, ``layer1.1``, ``layer2.0``,
    ``layer2.1``, ``layer3.0``, ``layer3.1``, ``layer4.0``, ``layer4.1`` (torchvision's BasicBlock
    modules themselves) and ``head`` (avgpool, Flatten, fc). ``width`` must be None or 64 and
    ``dropout`` must be 0: torchvision's ResNet-18 has fixed widths and no dropout.
    """
    if width is not None and width != 64:
        raise ConfigError(
            "model.width", width, "null or 64 for resnet18", "torchvision's ResNet-18 has fixed widths 64..512"
        )
    if dropout:
        raise ConfigError("model.dropout", dropout, "0 for resnet18", "torchvision's ResNet-18 has no dropout layer")
    net = tv_resnet18(weights=None, num_classes=num_classes, norm_layer=_resnet_norm_layer(norm))
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    blocks: list[nn.Module] = [nn.Sequential(net.conv1, net.bn1, net.relu)]
    names = ["stem"]
    for layer_name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(net, layer_name)
        for j, block in enumerate(layer):
            blocks.append(block)
            names.append(f"{layer_name}.{j}")
    blocks.append(nn.Sequential(net.avgpool, nn.Flatten(1), net.fc))
    names.append("head")
    return SplitModel(
        blocks,
        names,
        arch="resnet18",
        input_shape=(in_channels, image_size, image_size),
        num_classes=num_classes,
        config={"norm": norm, "width": 64, "dropout": 0.0},
    )

