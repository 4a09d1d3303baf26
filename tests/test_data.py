"""Datasets and partitions: real bundled data, real torchvision readers on tiny fake roots."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.data import lfw_subset

from hasfl_sec.data.datasets import DATASETS, ImageDataset, load_dataset
from hasfl_sec.data.partitioning import PARTITIONS, partition, partition_summary
from hasfl_sec.errors import ConfigError


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_dataset("digits", seed=0)


def assert_valid(ds: ImageDataset, channels: int, size: int) -> None:
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape[1:]) == (channels, size, size) and x.shape[0] == y.shape[0]
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert int(y.min()) >= 0 and int(y.max()) < ds.num_classes
    assert ds.in_channels == channels and ds.image_size == size and ds.input_shape == (channels, size, size)


def config_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------- bundled


def test_digits_shapes_range_and_stratified_split(digits):
    assert_valid(digits, 1, 8)
    assert digits.num_classes == 10 and digits.class_names == tuple(str(i) for i in range(10))
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert len(digits.y_test) == 360  # ceil(0.2 * 1797)
    assert float(digits.x_train.max()) == 1.0  # 16/16: pixels were scaled, not clipped or normalized
    train_share = np.bincount(digits.y_train.numpy(), minlength=10) / len(digits.y_train)
    test_share = np.bincount(digits.y_test.numpy(), minlength=10) / len(digits.y_test)
    assert np.abs(train_share - test_share).max() < 0.01  # stratified


def test_digits_resize_to_16(digits):
    big = load_dataset("digits", image_size=16, seed=0)
    assert_valid(big, 1, 16)
    assert torch.equal(big.y_train, digits.y_train)
    # bilinear upsampling keeps each image's overall brightness
    assert torch.allclose(big.x_train.mean(dim=(1, 2, 3)), digits.x_train.mean(dim=(1, 2, 3)), atol=0.03)


def test_digits_split_is_seeded(digits):
    same = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    assert torch.equal(same.x_train, digits.x_train) and torch.equal(same.y_test, digits.y_test)
    assert not torch.equal(other.x_train, digits.x_train)
    assert len(load_dataset("digits", test_fraction=0.5).y_test) == 899


def test_lfw_faces_and_non_faces():
    ds = load_dataset("lfw", seed=3)
    assert_valid(ds, 1, 25)
    assert ds.num_classes == 2 and ds.class_names == ("non-face", "face")
    labels = torch.cat([ds.y_train, ds.y_test])
    assert len(labels) == 200 and int(labels.sum()) == 100
    assert int(ds.y_test.sum()) == len(ds.y_test) // 2  # stratified: 20 faces / 20 non-faces
    first_face = torch.as_tensor(lfw_subset()[0], dtype=torch.float32)  # documented: first 100 are faces
    where = [i for i in range(len(ds.y_train)) if torch.equal(ds.x_train[i, 0], first_face)]
    where_test = [i for i in range(len(ds.y_test)) if torch.equal(ds.x_test[i, 0], first_face)]
    assert [int(ds.y_train[i]) for i in where] + [int(ds.y_test[i]) for i in where_test] == [1]
    small = load_dataset("lfw", image_size=8, seed=3)  # antialiased downscaling
    assert_valid(small, 1, 8)


def test_bad_dataset_arguments():
    with pytest.raises(ConfigError) as info:
        load_dataset("imagenet")
    message = config_error(info)
    assert message.startswith("data.dataset:") and all(name in message for name in DATASETS.names())
    with pytest.raises(ConfigError, match=r"^data\.image_size:"):
        load_dataset("digits", image_size=3)
    for fraction in (0.0, 1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"^data\.test_fraction:"):
            load_dataset("digits", test_fraction=fraction)
    with pytest.raises(ConfigError, match=r"^data\.test_fraction:"):  # fewer test images than classes
        load_dataset("lfw", test_fraction=0.004)


def test_every_dataset_has_help():
    assert {"digits", "lfw", "mnist", "fashion-mnist", "cifar10", "imagefolder"} <= set(DATASETS.names())
    assert all(DATASETS.describe(name) for name in DATASETS.names())


def test_image_dataset_validates_shapes():
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64)
    ImageDataset("ok", x, y, x, y, 2, ("a", "b"))
    with pytest.raises(ValueError, match="float32"):
        ImageDataset("bad", x.double(), y, x, y, 2, ("a", "b"))
    with pytest.raises(ValueError, match="square"):
        ImageDataset("bad", torch.rand(4, 1, 8, 6), y, x, y, 2, ("a", "b"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ImageDataset("bad", x * 255, y, x, y, 2, ("a", "b"))
    with pytest.raises(ValueError, match="labels"):
        ImageDataset("bad", x, y + 2, x, y, 2, ("a", "b"))


# ------------------------------------------------------------------------------------- torchvision


LAYOUT = {
    "cifar10": "cifar-10-batches-py/ (torchvision CIFAR10 layout: data_batch_1..5, test_batch",
    "mnist": "MNIST/raw/ with train-images-idx3-ubyte",
    "fashion-mnist": "FashionMNIST/raw/ with train-images-idx3-ubyte",
}


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_missing_or_empty_root_names_the_layout(name, tmp_path):
    for root in (None, str(tmp_path / "does-not-exist"), str(tmp_path)):
        with pytest.raises(ConfigError) as info:
            load_dataset(name, data_root=root)
        message = config_error(info)
        assert message.startswith("data.data_root:") and repr(root) in message
        assert LAYOUT[name] in message


def test_corrupted_cifar_root_is_a_config_error(tmp_path):
    # torchvision checks the md5 of every CIFAR-10 batch, so a fake root can only test this path
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}))
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10", data_root=str(tmp_path))
    message = config_error(info)
    assert message.startswith("data.data_root:") and LAYOUT["cifar10"] in message and "corrupted" in message


@pytest.mark.skipif(not os.environ.get("HASFL_CIFAR10_ROOT"), reason="set HASFL_CIFAR10_ROOT to a real CIFAR-10 root")
def test_cifar10_real_root():
    ds = load_dataset("cifar10", data_root=os.environ["HASFL_CIFAR10_ROOT"], image_size=16)
    assert_valid(ds, 3, 16)
    assert len(ds.y_train) == 50000 and len(ds.y_test) == 10000 and ds.class_names[0] == "airplane"


def write_idx(path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    path.write_bytes(struct.pack(f">{1 + array.ndim}i", magic, *array.shape) + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_reader_on_fake_idx_root(name, folder, tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    x_train, y_train = rng.integers(0, 256, (12, 28, 28)), np.arange(12) % 10
    x_test, y_test = rng.integers(0, 256, (5, 28, 28)), np.array([9, 0, 3, 3, 7])
    write_idx(raw / "train-images-idx3-ubyte", x_train)
    write_idx(raw / "train-labels-idx1-ubyte", y_train)
    write_idx(raw / "t10k-images-idx3-ubyte", x_test)
    write_idx(raw / "t10k-labels-idx1-ubyte", y_test)

    ds = load_dataset(name, data_root=str(tmp_path), test_fraction=0.9)  # official split: fraction ignored
    assert_valid(ds, 1, 28)
    assert ds.num_classes == 10 and len(ds.y_train) == 12 and len(ds.y_test) == 5
    assert torch.equal(ds.y_train, torch.as_tensor(y_train)) and torch.equal(ds.y_test, torch.as_tensor(y_test))
    assert torch.allclose(ds.x_train[:, 0], torch.as_tensor(x_train / 255.0, dtype=torch.float32))
    assert torch.allclose(ds.x_test[:, 0], torch.as_tensor(x_test / 255.0, dtype=torch.float32))
    assert load_dataset(name, data_root=str(tmp_path), image_size=16).input_shape == (1, 16, 16)

    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00")  # truncated file
    with pytest.raises(ConfigError, match=r"^data\.data_root:"):
        load_dataset(name, data_root=str(tmp_path))


# ------------------------------------------------------------------------------------- image folder


def test_imagefolder_reader(tmp_path):
    colours = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for split, per_class in (("train", {"cat": 3, "dog": 2}), ("test", {"dog": 2})):
        for cls, count in per_class.items():
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (20 + 10 * i, 40), colours[cls]).save(tmp_path / split / cls / f"{i}.png")
    Image.new("L", (12, 12), 255).save(tmp_path / "train" / "dog" / "gray.png")  # grayscale becomes RGB

    ds = load_dataset("imagefolder", data_root=str(tmp_path), image_size=16)
    assert_valid(ds, 3, 16)
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.y_test.tolist() == [1, 1]  # test/ has only "dog": labels follow train/'s class indices
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 16, 16)
    assert torch.allclose(ds.x_train[0], red, atol=1e-5)
    assert torch.allclose(ds.x_test[0][2], torch.ones(16, 16), atol=1e-5)
    assert torch.allclose(ds.x_train[5], torch.ones(3, 16, 16), atol=1e-5)  # the gray.png
    assert load_dataset("imagefolder", data_root=str(tmp_path)).image_size == 32  # default size


def test_downscaling_is_antialiased(tmp_path):
    # vertical stripes 0,1,1,0 repeating: a 4x shrink without antialiasing samples only the 1s
    stripes = np.tile(np.array([0, 255, 255, 0], np.uint8), (32, 8))
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(stripes, mode="L").save(tmp_path / split / "a" / "0.png")
    ds = load_dataset("imagefolder", data_root=str(tmp_path), image_size=8)
    assert torch.allclose(ds.x_train[0, :, :, 1:-1], torch.full((3, 8, 6), 0.5), atol=1e-3)


def test_imagefolder_bad_layouts(tmp_path):
    expected = "data_root/train/<class>/*.png and data_root/test/<class>/*.png"
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "0.png")
    with pytest.raises(ConfigError) as info:  # no test/
        load_dataset("imagefolder", data_root=str(tmp_path))
    assert expected in config_error(info) and "test/" in str(info.value)
    (tmp_path / "test").mkdir()
    with pytest.raises(ConfigError) as info:  # test/ without class folders
        load_dataset("imagefolder", data_root=str(tmp_path))
    assert config_error(info).startswith("data.data_root:") and expected in str(info.value)
    (tmp_path / "test" / "zebra").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "zebra" / "0.png")
    with pytest.raises(ConfigError, match="zebra"):  # class unknown to train/
        load_dataset("imagefolder", data_root=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^data\.data_root: got None"):
        load_dataset("imagefolder")


# ------------------------------------------------------------------------------------- partitions


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    for part in parts:
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)  # sorted, no duplicates
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def mean_max_class_share(labels: torch.Tensor, parts: list[np.ndarray]) -> float:
    table = partition_summary(labels, parts, 10)
    counts = table[[f"class_{k}" for k in range(10)]].to_numpy()
    return float((counts.max(axis=1) / counts.sum(axis=1)).mean())


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partition_is_an_exact_seeded_cover(digits, scheme):
    y = digits.y_train
    parts = partition(y, 7, scheme=scheme, alpha=0.5, seed=11)
    assert len(parts) == 7
    assert_exact_cover(parts, len(y))
    again = partition(y.numpy(), 7, scheme=scheme, alpha=0.5, seed=11)  # numpy labels work too
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition(y, 7, scheme=scheme, alpha=0.5, seed=12)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_iid_parts_are_near_equal(digits):
    sizes = [len(p) for p in partition(digits.y_train, 10, scheme="iid")]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_small_alpha_is_skewed(digits):
    y = digits.y_train
    iid = mean_max_class_share(y, partition(y, 10, scheme="iid", seed=0))
    skewed = mean_max_class_share(y, partition(y, 10, scheme="dirichlet", alpha=0.1, seed=0))
    mild = mean_max_class_share(y, partition(y, 10, scheme="dirichlet", alpha=100.0, seed=0))
    assert iid < 0.25 and mild < 0.25
    assert skewed > iid + 0.25


def test_dirichlet_honours_min_size(digits):
    y = digits.y_train
    free = partition(y, 20, scheme="dirichlet", alpha=0.3, seed=0, min_size=1)
    assert min(len(p) for p in free) < 30  # so the constraint below forces redraws
    bound = partition(y, 20, scheme="dirichlet", alpha=0.3, seed=0, min_size=30)
    assert min(len(p) for p in bound) >= 30
    assert_exact_cover(bound, len(y))


def test_partition_summary(digits):
    parts = partition(digits.y_train, 4, scheme="dirichlet", seed=1)
    table = partition_summary(digits.y_train, parts, 10)
    assert list(table.columns) == ["device", "n_samples"] + [f"class_{k}" for k in range(10)]
    assert table["device"].tolist() == [0, 1, 2, 3]
    assert table["n_samples"].tolist() == [len(p) for p in parts]
    assert table.iloc[:, 2:].sum(axis=1).tolist() == table["n_samples"].tolist()
    assert table.iloc[:, 2:].sum(axis=0).tolist() == np.bincount(digits.y_train.numpy()).tolist()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_devices": 0}, "fleet.num_devices"),
        ({"num_devices": 2000}, "fleet.num_devices"),  # more devices than samples: not even 1 each
        ({"alpha": 0.0}, "data.alpha"),
        ({"alpha": -1.0}, "data.alpha"),
        ({"alpha": float("nan")}, "data.alpha"),
        ({"alpha": float("inf")}, "data.alpha"),
        ({"min_size": 0}, "data.min_samples_per_device"),
        ({"scheme": "shards"}, "data.partition"),
    ],
)
def test_bad_partition_arguments(digits, kwargs, field):
    args = {"num_devices": 5, "scheme": "dirichlet", **kwargs}
    with pytest.raises(ConfigError) as info:
        partition(digits.y_train, args.pop("num_devices"), **args)
    message = config_error(info)
    assert message.startswith(field + ":"), message
    if field == "data.partition":
        assert all(name in message for name in PARTITIONS.names())


def test_an_impossible_dirichlet_draw_is_repaired_not_refused(digits, caplog):
    # no Dir(0.01) draw gives 50 devices 20 samples each: the closest draw is repaired, with a warning
    y = digits.y_train
    with caplog.at_level("WARNING"):
        parts = partition(y, 50, scheme="dirichlet", alpha=0.01, seed=0, min_size=20)
    assert min(len(p) for p in parts) >= 20
    assert f"dirichlet partition of {len(y)} samples over 50 devices" in caplog.text and "moved" in caplog.text
    assert_exact_cover(parts, len(y))
    again = partition(y, 50, scheme="dirichlet", alpha=0.01, seed=0, min_size=20)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_the_repair_moves_only_the_shortfall_and_keeps_short_devices_mix():
    from hasfl_sec.data.partitioning import _top_up

    labels = np.repeat(np.arange(2), 10)  # class 0: 0..9, class 1: 10..19
    drawn = [np.array([0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 19]), np.array([7, 16]), np.array([8, 9, 17, 18]),
             np.array([], dtype=np.int64)]
    wanted = np.array([[7.0, 7.0], [1.0, 1.0], [2.0, 2.0], [0.0, 1.0]])  # device 3 was drawn as all class 1
    parts = _top_up(labels, drawn, wanted, 4)
    assert_exact_cover(parts, 20)
    assert [len(p) for p in parts] == [8, 4, 4, 4]  # 2 + 4 = 6 samples short, and 6 moved
    assert set(drawn[1]) <= set(parts[1]) and np.bincount(labels[parts[1]]).tolist() == [2, 2]  # its 1:1 mix
    assert np.bincount(labels[parts[3]], minlength=2).tolist() == [0, 4]  # the class its shares asked for
    assert set(parts[0]) <= set(drawn[0]) and np.array_equal(parts[2], drawn[2])  # donors only give


def test_draws_that_met_the_minimum_are_unchanged():
    """Partitions computed by the code before any repair existed (commit 627d372): the index arrays
    of small cases, and hashes of larger ones."""
    import hashlib

    from sklearn.datasets import load_digits as sk_digits

    y = np.repeat(np.arange(3), 8)
    assert [p.tolist() for p in partition(y, 4, scheme="dirichlet", alpha=0.5, seed=0, min_size=2)] == [
        [0, 3, 5, 20, 21], [12, 13, 15, 19], [2, 4, 16, 17, 18, 23], [1, 6, 7, 8, 9, 10, 11, 14, 22]]
    assert [p.tolist() for p in partition(y, 4, scheme="dirichlet", alpha=0.5, seed=5, min_size=3)] == [
        [2, 3, 4, 9, 18, 21], [0, 1, 5, 10, 15, 16, 17, 20, 22, 23], [7, 8, 12, 13, 14], [6, 11, 19]]
    assert [p.tolist() for p in partition(y, 4, scheme="iid", seed=1, min_size=2)] == [
        [5, 8, 14, 15, 16, 21], [1, 7, 9, 17, 20, 22], [0, 4, 13, 18, 19, 23], [2, 3, 6, 10, 11, 12]]

    def digest(parts):
        return hashlib.sha256(b"".join(p.astype(np.int64).tobytes() + b"|" for p in parts)).hexdigest()[:16]

    full = sk_digits().target
    assert digest(partition(full, 7, scheme="dirichlet", alpha=0.5, seed=11, min_size=8)) == "822985577d57a647"
    assert digest(partition(full, 20, scheme="dirichlet", alpha=0.3, seed=0, min_size=30)) == "fb04b6eeb5a3e1d8"
    assert digest(partition(full, 20, scheme="dirichlet", alpha=0.5, seed=0, min_size=8)) == "189a4af8291f554a"


def test_lfw_partitions_with_the_defaults(caplog):
    from hasfl_sec.config import load_config
    from hasfl_sec.runs.setup import config_dataset

    cfg = load_config(overrides=["data.dataset=lfw"])
    data = config_dataset(cfg)
    d = cfg.data
    assert (cfg.fleet.num_devices, d.partition, d.alpha, d.min_samples_per_device) == (20, "dirichlet", 0.5, 8)

    def run(seed: int) -> list[np.ndarray]:
        return partition(data.y_train, cfg.fleet.num_devices, scheme=d.partition, alpha=d.alpha, seed=seed,
                         min_size=d.min_samples_per_device)

    with caplog.at_level("WARNING"):
        parts = run(cfg.seed)
    assert "dirichlet partition of 160 samples over 20 devices" in caplog.text  # repaired, and says so
    assert len(parts) == 20 and min(len(p) for p in parts) >= 8  # 160 = 20 x 8: exactly 8 each
    assert_exact_cover(parts, len(data.y_train))
    assert all(np.array_equal(a, b) for a, b in zip(parts, run(cfg.seed)))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, run(cfg.seed + 1)))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_a_minimum_the_data_cannot_meet_is_lowered_with_a_warning(digits, scheme, caplog):
    y = digits.y_train  # 1437 samples: 200 devices x 10 is too many, 7 each is what they allow
    with caplog.at_level("WARNING"):
        parts = partition(y, 200, scheme=scheme, alpha=0.5, seed=0, min_size=10)
    assert "data.min_samples_per_device lowered from 10 to 7" in caplog.text
    assert min(len(p) for p in parts) >= 7
    assert_exact_cover(parts, len(y))


def _png_tree(root, classes=("cat", "dog", "owl"), per_class=5):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(root / c / f"{k}.png")
    return root


def test_a_plain_imagefolder_tree_is_split_stratified_and_seeded(tmp_path, caplog):
    root = _png_tree(tmp_path / "plain")
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    with caplog.at_level("INFO"):
        data = load_dataset("imagefolder", data_root=str(root), image_size=8, seed=3, test_fraction=0.2)
    assert "one folder per class (3 classes, 15 images)" in caplog.text and "stratified split" in caplog.text
    assert data.class_names == ("cat", "dog", "owl") and data.x_train.shape[1:] == (3, 8, 8)
    assert len(data.y_train) == 12 and len(data.y_test) == 3
    assert np.bincount(data.y_test.numpy()).tolist() == [1, 1, 1]  # stratified
    assert np.bincount(data.y_train.numpy()).tolist() == [4, 4, 4]
    again = load_dataset("imagefolder", data_root=str(root), image_size=8, seed=3, test_fraction=0.2)
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.x_train, data.x_train)
    other = load_dataset("imagefolder", data_root=str(root), image_size=8, seed=4, test_fraction=0.2)
    assert not torch.equal(other.x_test, data.x_test)


def test_a_split_imagefolder_tree_is_not_split_again(tmp_path):
    _png_tree(tmp_path / "train", per_class=4)
    _png_tree(tmp_path / "test", per_class=2)
    data = load_dataset("imagefolder", data_root=str(tmp_path), image_size=8, seed=0, test_fraction=0.5)
    assert data.class_names == ("cat", "dog", "owl")
    assert np.bincount(data.y_train.numpy()).tolist() == [4, 4, 4]
    assert np.bincount(data.y_test.numpy()).tolist() == [2, 2, 2]  # the user's split, not test_fraction's


@pytest.mark.parametrize("layout", ["empty", "no-images", "not-images", "loose-images", "half-split",
                                    "split-and-classes"])
def test_unreadable_or_ambiguous_imagefolder_trees_are_one_line_errors(tmp_path, layout):
    root = tmp_path / "r"
    root.mkdir()
    if layout in ("no-images", "not-images"):
        (root / "cat").mkdir()
    if layout == "not-images":
        (root / "cat" / "notes.txt").write_text("not an image")
    if layout == "loose-images":  # images, but no class folders
        Image.new("RGB", (8, 8)).save(root / "0.png")
    if layout == "half-split":
        _png_tree(root / "train")
    if layout == "split-and-classes":
        _png_tree(root / "train")
        _png_tree(root / "test")
        _png_tree(root / "extra", classes=("cat",))
    with pytest.raises(ConfigError) as info:
        load_dataset("imagefolder", data_root=str(root), image_size=8, seed=0, test_fraction=0.2)
    message = config_error(info)
    assert message.startswith(f"data.data_root: got {str(root)!r}") and "--data-root" in message
    assert "data_root/<class>/*.png" in message and "data_root/train/<class>/*.png" in message


def test_lfw_and_a_plain_imagefolder_train_through_the_cli(tmp_path):
    from click.testing import CliRunner

    from hasfl_sec.cli.app import cli

    root = _png_tree(tmp_path / "plain", per_class=15)  # 36 training images: 4 devices x 8
    small = ["--set", "train.rounds=2", "--devices", "4", "--image-size", "16"]
    for args in (["--dataset", "lfw"], ["--dataset", "imagefolder", "--data-root", str(root), "--model", "hecnn"]):
        out = tmp_path / args[1]
        result = CliRunner().invoke(cli, ["train", *args, *small, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert (out / "manifest.json").is_file()


# ------------------------------------------------------------------------------------- data that lies

MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def mnist_refusal(tmp_path, name: str = "mnist", folder: str = "MNIST", **files) -> tuple[str, dict[str, str]]:
    """Write a torchvision MNIST root of 12 train and 5 test 28x28 images, with ``files`` (keys of
    MNIST_FILES) replaced: an array as an IDX file, bytes as they are, None left out. Load it and
    return the one-line ConfigError (checked to be about the root) and the path of every file."""
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (12, 28, 28)), "train_labels": np.arange(12) % 10,
              "test_images": rng.integers(0, 256, (5, 28, 28)), "test_labels": np.array([9, 0, 3, 3, 7]), **files}
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    paths = {key: str(raw / MNIST_FILES[key]) for key in MNIST_FILES}
    for key, value in arrays.items():
        if isinstance(value, bytes):
            (raw / MNIST_FILES[key]).write_bytes(value)
        elif value is not None:
            write_idx(raw / MNIST_FILES[key], value)
    with pytest.raises(ConfigError) as info:
        load_dataset(name, data_root=str(tmp_path))
    message = config_error(info)
    assert message.startswith(f"data.data_root: got {str(tmp_path)!r}; expected "), message
    assert "()" not in message and "Traceback" not in message
    return message, paths


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_label_count_unlike_image_count_names_both_files(tmp_path, name, folder):
    message, paths = mnist_refusal(tmp_path, name, folder, train_labels=np.arange(11) % 10)
    assert "as many labels as images" in message
    assert f"{paths['train_labels']}: 11 labels for 12 images in {paths['train_images']}" in message


def test_mnist_label_out_of_range_names_the_file_the_value_and_the_range(tmp_path):
    labels = np.arange(12) % 10
    labels[3], labels[7] = 200, 10
    message, paths = mnist_refusal(tmp_path, train_labels=labels)
    assert "labels from 0 to 9 (10 classes)" in message
    assert f"{paths['train_labels']}: label 200 at position 3 (2 of 12 labels out of range)" in message


def _idx_header(magic: int, *dims: int) -> bytes:
    return struct.pack(f">{1 + len(dims)}I", magic, *dims)


@pytest.mark.parametrize("key, content, problem", [
    pytest.param("test_labels", b"\x00\x00", "truncated: 2 bytes, shorter than the 8-byte header of an IDX label file",
                 id="header-cut"),
    pytest.param("train_labels", b"", "truncated: 0 bytes, shorter than the 8-byte header of an IDX label file",
                 id="empty"),
    pytest.param("train_images", b"\x00\x01garbage",
                 "not an IDX image file: it starts with bytes 00 01 67 61, not 00 00 08 03", id="garbage"),
    pytest.param("train_images", _idx_header(2051, 12, 28),
                 "truncated: 12 bytes, shorter than the 16-byte header of an IDX image file", id="dims-cut"),
    pytest.param("train_images", _idx_header(2051, 12, 28, 28) + bytes(9000),
                 ("truncated: its header declares 12 x 28 x 28 bytes after the 16-byte header (9,424 bytes in all), "
                  "but the file has 9,016"), id="data-cut"),
    pytest.param("test_images", _idx_header(2051, 5, 28, 28) + bytes(5 * 28 * 28 + 3),
                 "too long: its header declares 5 x 28", id="data-extra"),
    pytest.param("test_labels", _idx_header(2051, 5, 1, 1) + bytes(5),
                 "not an IDX label file: it starts with bytes 00 00 08 03", id="labels-as-images"),
    pytest.param("train_labels", _idx_header(0x0901, 12) + bytes(12),
                 ("not an IDX label file: it starts with bytes 00 00 09 01, not 00 00 08 01 "
                  "(unsigned bytes, 1 dimension)"), id="int8-labels"),
])
def test_an_unreadable_idx_file_is_named_with_what_is_wrong(tmp_path, key, content, problem):
    message, paths = mnist_refusal(tmp_path, **{key: content})
    assert f"expected MNIST IDX files as torchvision writes them ({paths[key]}: {problem}" in message


def test_a_missing_mnist_file_is_named(tmp_path):
    message, paths = mnist_refusal(tmp_path, test_labels=None)
    assert LAYOUT["mnist"] in message and f"missing {paths['test_labels']};" in message
    assert paths["train_labels"] not in message


def test_old_torchvision_processed_files_that_disagree_are_named(tmp_path):
    # torchvision still reads the processed/training.pt and test.pt its old versions wrote, in preference to raw/
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir(parents=True)
    images = torch.zeros(4, 28, 28, dtype=torch.uint8)
    torch.save((images, torch.tensor([0, 1, 2, 3])), processed / "training.pt")
    torch.save((images[:2], torch.tensor([4, 5, 6])), processed / "test.pt")
    with pytest.raises(ConfigError) as info:
        load_dataset("mnist", data_root=str(tmp_path))
    assert f"expected as many labels as images ({processed / 'test.pt'}: 3 labels for 2 images)" in config_error(info)
    torch.save((images[:2], torch.tensor([4, -1])), processed / "test.pt")
    with pytest.raises(ConfigError) as info:
        load_dataset("mnist", data_root=str(tmp_path))
    assert f"({processed / 'test.pt'}: label -1 at position 1 (1 of 2 labels out of range))" in config_error(info)
    torch.save((images[:2], torch.tensor([4, 9])), processed / "test.pt")
    assert load_dataset("mnist", data_root=str(tmp_path)).y_test.tolist() == [4, 9]


@pytest.mark.parametrize("files, expected, problem", [
    ({"train_images": np.zeros((0, 28, 28)), "train_labels": np.zeros(0)}, "at least one image",
     "train_images: 0 images"),
    ({"train_images": np.zeros((12, 28, 20))}, "square images", "train_images: 28 x 20 images"),
    ({"test_images": np.zeros((5, 32, 32))}, "train and test images of one shape",
     "test_images: images of shape (32, 32), but (28, 28) in train_images"),
], ids=["empty", "not-square", "train-test-differ"])
def test_mnist_images_the_loader_cannot_use_are_named(tmp_path, files, expected, problem):
    message, paths = mnist_refusal(tmp_path, **files)
    for key, path in paths.items():
        problem = problem.replace(key, path)
    assert f"expected {expected} ({problem})" in message


def claim_size(png, width: int, height: int) -> None:
    """Make the header of PNG file ``png`` claim ``width`` x ``height`` pixels (its data stays small)."""
    import zlib

    data = bytearray(png.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width and height, then its CRC
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    png.write_bytes(bytes(data))


@pytest.mark.parametrize("width, height", [(30000, 30000), (10000, 9000), (8193, 8192)])
def test_an_image_whose_header_claims_too_many_pixels_is_refused_unread(tmp_path, width, height):
    import warnings

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / cls / f"{i}.png")
    png = tmp_path / "b" / "1.png"
    claim_size(png, width, height)
    with warnings.catch_warnings(), pytest.raises(ConfigError) as info:
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not leak either
        load_dataset("imagefolder", data_root=str(tmp_path), image_size=8)
    message = config_error(info)
    assert message.startswith(f"data.data_root: got {str(tmp_path)!r}; expected images of at most 67,108,864 "
                              f"pixels (8192 x 8192) ({png}: its header claims ")
    assert f"{width * height:,} pixels" in message and "resized to 8 x 8" in message


def cifar_root(root, labels=(0, 1), images: int = 2) -> dict[str, str]:
    """A cifar-10-batches-py folder of pickled batches; returns each file's MD5."""
    import hashlib

    folder = root / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    sums = {}
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"]:
        entry = {"label_names": [f"c{k}" for k in range(10)]} if name == "batches.meta" else \
            {"data": np.zeros((images, 3072), np.uint8), "labels": list(labels)}
        (folder / name).write_bytes(pickle.dumps(entry))
        sums[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    return sums


def test_a_missing_or_corrupted_cifar_batch_is_named(tmp_path):
    cifar_root(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10", data_root=str(tmp_path))
    message = config_error(info)
    assert LAYOUT["cifar10"] in message and f"{folder / 'data_batch_1'} is corrupted: its " in message
    assert "do not match the MD5 checksum of the official file" in message
    (folder / "data_batch_3").unlink()
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10", data_root=str(tmp_path))
    assert f"missing {folder / 'data_batch_3'}" in config_error(info)


def test_cifar_batches_whose_checksums_match_but_whose_labels_lie(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"

    def pretend_official(sums):  # as if these files were the ones torchvision's checksums name
        monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", sums[f"data_batch_{i}"]] for i in range(1, 6)])
        monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", sums["test_batch"]]])
        monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": sums["batches.meta"]})

    pretend_official(cifar_root(tmp_path, labels=(0, 1, 2)))
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10", data_root=str(tmp_path))
    assert f"expected as many labels as images ({folder}/data_batch_1..5: 15 labels for 10 images)" \
        in config_error(info)
    pretend_official(cifar_root(tmp_path, labels=(0, 10)))
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10", data_root=str(tmp_path))
    assert f"({folder}/data_batch_1..5: label 10 at position 1 (5 of 10 labels out of range)" in config_error(info)
    pretend_official(cifar_root(tmp_path, labels=(0, 9)))
    ds = load_dataset("cifar10", data_root=str(tmp_path), image_size=8)
    assert_valid(ds, 3, 8)
    assert ds.y_train.tolist() == [0, 9] * 5 and ds.class_names == tuple(f"c{k}" for k in range(10))


@pytest.mark.parametrize("dataset", ["mnist", "imagefolder"])
def test_data_that_lies_is_one_error_line_through_the_cli(tmp_path, dataset):
    from click.testing import CliRunner

    from hasfl_sec.cli.app import cli

    root = tmp_path / "root"
    if dataset == "mnist":
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for key, array in (("train_images", np.zeros((4, 28, 28))), ("train_labels", np.zeros(3)),
                           ("test_images", np.zeros((2, 28, 28))), ("test_labels", np.zeros(2))):
            write_idx(raw / MNIST_FILES[key], array)
    else:
        _png_tree(root, classes=("a", "b"), per_class=3)
        claim_size(root / "a" / "0.png", 30000, 30000)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["train", "--dataset", dataset, "--data-root", str(root), "--rounds", "1",
                                      "--devices", "2", "--image-size", "8", "--out", str(out)])
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(errors) == 1 and errors[0].startswith(f"Error: data.data_root: got {str(root)!r}; expected ")
    assert str(root / ("MNIST/raw/train-labels-idx1-ubyte" if dataset == "mnist" else "a/0.png")) in errors[0]
    assert "()" not in errors[0] and not out.exists()
