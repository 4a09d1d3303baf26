"""Tests of hasfl_sec.models: split equivalence, cut resolution, zoo validation and profiles."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hasfl_sec.errors import ConfigError
from hasfl_sec.models import MODELS, SplitModel, build_model, group_norm_groups, profile_model

EXPECTED_BLOCKS = {
    "hecnn": ("conv11", "conv12", "conv21", "conv22", "conv31", "conv32", "fc1", "fc2"),
    "vgg16": (
        "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1",
        "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3", "fc1", "fc2", "fc3",
    ),
    "resnet18": (
        "stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
        "layer4.0", "layer4.1", "head",
    ),
    "vit-tiny": ("embed", "block1", "block2", "block3", "block4", "head"),
    "gpt-char": ("embed", "block1", "block2", "block3", "block4", "head"),  # tests/test_text.py
}

# (name, in_channels, extra builder kwargs); small widths keep vgg16 fast.
CASES = [
    ("hecnn", 3, {}),
    ("hecnn", 1, {"norm": "none", "dropout": 0.3}),
    ("vgg16", 3, {"width": 16}),
    ("vgg16", 1, {"width": 8, "norm": "none", "dropout": 0.2}),
    ("resnet18", 3, {}),
    ("resnet18", 1, {"norm": "none"}),
    ("vit-tiny", 3, {}),
    ("vit-tiny", 1, {"width": 32, "norm": "none", "dropout": 0.2}),
]


def _build(name: str, in_channels: int = 3, image_size: int = 16, **kw) -> SplitModel:
    torch.manual_seed(0)
    return build_model(name, in_channels=in_channels, num_classes=10, image_size=image_size, **kw)


def test_registry_and_block_names() -> None:
    assert set(MODELS.names()) == set(EXPECTED_BLOCKS)
    for name, blocks in EXPECTED_BLOCKS.items():
        assert MODELS.describe(name)
        text = name == "gpt-char"  # one channel of token ids, a context of image_size
        model = _build(name, 1 if text else 3, width=8 if name == "vgg16" else None)
        assert model.block_names == blocks
        assert model.num_blocks == len(blocks)
        assert model.legal_cuts == tuple(range(1, len(blocks)))
        assert model.arch == name and model.input_shape == ((16,) if text else (3, 16, 16))
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name,in_channels,kw", CASES, ids=[f"{c[0]}-c{c[1]}-{c[2]}" for c in CASES])
def test_split_equivalence_forward_and_backward(name: str, in_channels: int, kw: dict) -> None:
    model = _build(name, in_channels, **kw).train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, in_channels, 16, 16, generator=gen)
    y = torch.randint(0, 10, (3,), generator=gen)
    params = list(model.parameters())
    loss_fn = nn.CrossEntropyLoss()

    torch.manual_seed(123)  # dropout masks
    full_out = model(x)
    ref_grads = torch.autograd.grad(loss_fn(full_out, y), params)
    for cut in model.legal_cuts:
        client, server = model.client_part(cut), model.server_part(cut)
        # same modules, not copies
        assert all(a is b for a, b in zip(list(client) + list(server), model.blocks))
        assert len(client) == cut and len(server) == model.num_blocks - cut
        model.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        smashed = client(x)
        s = smashed.detach().requires_grad_()
        out = server(s)
        torch.testing.assert_close(out, full_out, atol=1e-6, rtol=1e-6)
        loss_fn(out, y).backward()
        assert s.grad is not None and s.grad.shape == smashed.shape
        smashed.backward(s.grad)
        for (pname, p), g in zip(model.named_parameters(), ref_grads):
            assert p.grad is not None, f"cut {cut}: no grad for {pname}"
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6, msg=f"cut {cut}: {pname}")


@pytest.mark.parametrize("name", sorted(set(EXPECTED_BLOCKS) - {"gpt-char"}))
def test_batch_size_one_trains(name: str) -> None:
    model = _build(name, width=8 if name == "vgg16" else None).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    out = model(torch.randn(1, 3, 16, 16))
    assert out.shape == (1, 10)
    nn.functional.cross_entropy(out, torch.tensor([3])).backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize("name,size", [("hecnn", 4), ("hecnn", 7), ("vgg16", 4), ("vgg16", 28), ("resnet18", 5),
                                       ("vit-tiny", 4), ("vit-tiny", 8), ("vit-tiny", 25), ("vit-tiny", 32)])
def test_any_image_size(name: str, size: int) -> None:
    model = _build(name, 3, image_size=size, width=4 if name == "vgg16" else None).train()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 10)
    model(torch.randn(1, 3, size, size)).sum().backward()  # batch 1 even where maps reach 1x1


def test_width_and_dropout() -> None:
    paper = _build("hecnn", width=64)
    convs = [m for m in paper.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 128, 128]
    default = _build("hecnn")
    assert [m.out_channels for m in default.modules() if isinstance(m, nn.Conv2d)] == [16, 16, 32, 32, 32, 32]
    assert not any(isinstance(m, nn.Dropout) for m in default.modules())
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in _build("hecnn", dropout=0.5).modules())
    vgg = _build("vgg16")
    assert [m.out_channels for m in vgg.modules() if isinstance(m, nn.Conv2d)] == [
        64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512,
    ]
    assert [m.out_channels for m in _build("vgg16", width=32).modules() if isinstance(m, nn.Conv2d)][-1] == 256
    gn = [m for m in default.modules() if isinstance(m, nn.GroupNorm)]
    assert gn and all(m.num_channels % m.num_groups == 0 for m in gn)
    assert not any(isinstance(m, nn.GroupNorm) for m in _build("resnet18", norm="none").modules())
    assert (group_norm_groups(64), group_norm_groups(16), group_norm_groups(48), group_norm_groups(3)) == (32, 16, 16, 1)
    # a 1x1 map must not get one-value groups (constant output, refused at batch 1)
    assert group_norm_groups(32, spatial=1) == 16 and group_norm_groups(32, spatial=4) == 32


def test_seeded_construction_is_deterministic() -> None:
    a, b = _build("hecnn"), _build("hecnn")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_resolve_cut() -> None:
    model = _build("hecnn")
    assert model.resolve_cut(1) == 1 and model.resolve_cut(7) == 7
    assert model.resolve_cut("conv11") == 1
    assert model.resolve_cut("conv22") == 4
    assert model.resolve_cut("fc1") == 7
    assert model.cut_names["conv32"] == 6 and "fc2" not in model.cut_names
    assert len(model.client_part("conv22")) == 4
    for bad in (0, 8, -1, "nonexistent", "fc2", True, 2.5, None):
        with pytest.raises(ConfigError, match="plan.cut"):
            model.resolve_cut(bad)
    with pytest.raises(ConfigError, match="fleet.cut"):
        model.resolve_cut(99, field="fleet.cut")
    with pytest.raises(ConfigError, match="conv11"):  # lists the valid names
        model.client_part("nope")


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"name": "nonexistent"}, "model.name"),
        ({"norm": "batch"}, "model.norm"),
        ({"name": "resnet18", "width": 32}, "model.width"),
        ({"width": 0}, "model.width"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"dropout": -0.1}, "model.dropout"),
        ({"num_classes": 1}, "model.num_classes"),
        ({"in_channels": 0}, "model.in_channels"),
        ({"image_size": 3}, "model.image_size"),
    ],
)
def test_build_model_errors(kwargs: dict, field: str) -> None:
    args = {"name": "hecnn", "in_channels": 3, "num_classes": 10, "image_size": 16}
    args.update(kwargs)
    name = args.pop("name")
    with pytest.raises(ConfigError, match=field) as info:
        build_model(name, **args)
    assert info.value.field == field


def test_profile_hecnn_matches_reality() -> None:
    model = _build("hecnn", 3, image_size=16)
    model.eval()
    for p in model.parameters():
        p.grad = None
    rng_before = torch.get_rng_state()
    prof = profile_model(model, batch_size=2)
    # side effects: mode kept, no grads, global RNG untouched
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(rng_before, torch.get_rng_state())

    assert [b.name for b in prof.blocks] == list(model.block_names)
    assert [c.cut for c in prof.cuts] == list(model.legal_cuts)
    # analytic conv FLOPs: 2 * Cin * Cout * 9 * H * W per sample
    assert prof.blocks[0].fwd_flops == 2 * 3 * 16 * 9 * 16 * 16
    assert prof.blocks[1].fwd_flops == 2 * 16 * 16 * 9 * 16 * 16
    assert prof.blocks[2].fwd_flops == 2 * 16 * 32 * 9 * 8 * 8
    # block 0 has no input gradient: backward = weight grad only (= forward conv FLOPs)
    assert prof.blocks[0].bwd_flops == prof.blocks[0].fwd_flops
    assert prof.blocks[1].bwd_flops == 2 * prof.blocks[1].fwd_flops
    assert all(b.bwd_flops > 0 for b in prof.blocks)

    x = torch.randn(3, 3, 16, 16)
    total = prof.total_fwd_flops
    prev = 0
    for c in prof.cuts:
        assert c.client_fwd_flops + c.server_fwd_flops == total
        assert c.client_bwd_flops + c.server_bwd_flops == prof.total_bwd_flops
        assert c.client_fwd_flops > prev
        prev = c.client_fwd_flops
        assert c.client_bwd_flops > 0 and c.server_bwd_flops > 0
        client = model.client_part(c.cut)
        with torch.no_grad():
            smashed = client(x)
        assert c.smashed_bytes == 4 * smashed.numel() // 3
        assert c.client_params == sum(p.numel() for p in client.parameters())
        assert c.client_param_bytes == 4 * c.client_params
        assert c.name == model.block_names[c.cut - 1]
        assert c.client_activation_bytes > 0
    assert prof.cut(4) is prof.cuts[3]
    frame = prof.to_frame()
    assert len(frame) == 7 and frame["smashed_bytes"].tolist() == [c.smashed_bytes for c in prof.cuts]
    assert len(prof.blocks_frame()) == 8


def test_profile_saved_bytes_exact_without_norm() -> None:
    # conv11 with norm="none": conv saves its input, ReLU saves its output; weights excluded.
    model = _build("hecnn", 3, image_size=16, norm="none")
    prof = profile_model(model, batch_size=2)
    assert prof.blocks[0].saved_bytes == 4 * (3 + 16) * 16 * 16
    # conv12's conv reuses conv11's saved ReLU output: charged once, to conv11
    assert prof.blocks[1].saved_bytes < 2 * 4 * 16 * 16 * 16 + 4 * 16 * 16 * 16
    assert prof.cut(2).client_activation_bytes == prof.blocks[0].saved_bytes + prof.blocks[1].saved_bytes


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_profile_other_models_consistent(name: str) -> None:
    model = _build(name, 3, image_size=16, width=16 if name == "vgg16" else None)
    prof = profile_model(model)
    assert len(prof.blocks) == model.num_blocks and len(prof.cuts) == model.num_blocks - 1
    x = torch.randn(2, 3, 16, 16)
    for c in prof.cuts:
        assert c.client_fwd_flops + c.server_fwd_flops == prof.total_fwd_flops
        with torch.no_grad():
            assert c.smashed_bytes == 4 * model.client_part(c.cut)(x)[0].numel()
    assert all(b.fwd_flops > 0 and b.bwd_flops > 0 for b in prof.blocks)
    assert prof.total_params == sum(p.numel() for p in model.parameters())


def test_vit_tiny_tokens_patches_and_width() -> None:
    """vit-tiny: hidden states are [16 patches, width] at every cut, patches follow the image size,
    the width must split across the heads, and DP-SGD's per-sample gradients cover every parameter."""
    from opacus.grad_sample import GradSampleModule

    from hasfl_sec.models.vit import vit_patch_size

    assert [vit_patch_size(s) for s in (4, 8, 16, 25, 28, 32)] == [2, 2, 4, 7, 7, 8]
    model = _build("vit-tiny", 1, image_size=25)
    x = torch.randn(2, 1, 25, 25)
    for cut in model.legal_cuts:
        assert model.client_part(cut)(x).shape == (2, 16, 64)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    with pytest.raises(ConfigError, match="model.width"):
        _build("vit-tiny", width=30)
    client = GradSampleModule(model.client_part(2))
    client(x).square().sum().backward()
    assert all(p.grad_sample.shape[0] == 2 for p in client.parameters())
