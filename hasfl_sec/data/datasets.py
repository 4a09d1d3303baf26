"""Image datasets: one in-memory container and a registry of readers.

Every reader returns an :class:`ImageDataset` holding float32 images in ``[0, 1]`` (not
normalized) as ``[n, C, H, W]`` tensors and int64 labels. Two datasets ship with the installed
libraries and need no files: ``digits`` (scikit-learn) and ``lfw`` (scikit-image). The
torchvision datasets (``mnist``, ``fashion-mnist``, ``cifar10``) and ``imagefolder`` read from
``data_root``; nothing is ever downloaded at run time, and a missing or malformed root is a
:class:`~hasfl_sec.errors.ConfigError` that names the folder layout expected. Files that are there
but lie (truncated, garbage, label counts or values that do not fit, an image header claiming
billions of pixels) are refused by :mod:`hasfl_sec.data.checks` with an error naming the file.

Use :func:`load_dataset`; ``hasfl_sec.data`` re-exports everything public here.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import Registry
from ..seeding import derive_seed
from . import checks

__all__ = ["ImageDataset", "DATASETS", "load_dataset"]

logger = logging.getLogger(__name__)

Loader = Callable[..., "ImageDataset"]
DATASETS: Registry[Loader] = Registry("dataset", "data.dataset")

_NO_DOWNLOAD = "nothing is downloaded at run time; fetch it beforehand"
# Errors torchvision or PIL raise for a missing, truncated or corrupted file.
_READ_ERRORS = (RuntimeError, ValueError, TypeError, OSError, EOFError, KeyError, AssertionError,
                IndexError, pickle.UnpicklingError)


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Train and test images of one dataset, all in memory.

    ``x_*`` are float32 ``[n, C, H, W]`` tensors with values in ``[0, 1]`` (square images, not
    normalized); ``y_*`` are int64 ``[n]`` tensors with labels in ``[0, num_classes)``.
    Equality is identity (tensors have no single truth value).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        def fail(what: str) -> None:
            raise ValueError(f"ImageDataset {self.name!r}: {what}")

        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() != 4:
                fail(f"x_{split} must be a float32 [n, C, H, W] tensor, got {_describe(x)}")
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
                fail(f"y_{split} must be an int64 [n] tensor, got {_describe(y)}")
            if x.shape[0] != y.shape[0] or x.shape[0] == 0:
                fail(f"x_{split} has {x.shape[0]} images and y_{split} {y.shape[0]} labels (need equal, > 0)")
            if x.shape[2] != x.shape[3]:
                fail(f"images must be square, got {x.shape[2]}x{x.shape[3]}")
            if float(x.min()) < 0.0 or float(x.max()) > 1.0:
                fail(f"x_{split} values must lie in [0, 1], got [{float(x.min()):.4g}, {float(x.max()):.4g}]")
            if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
                fail(f"y_{split} labels must lie in [0, {self.num_classes}), got [{int(y.min())}, {int(y.max())}]")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            fail(f"train images {tuple(self.x_train.shape[1:])} and test images "
                 f"{tuple(self.x_test.shape[1:])} differ in shape")
        if len(self.class_names) != self.num_classes:
            fail(f"{len(self.class_names)} class names for {self.num_classes} classes")

    modality = "image"

    @property
    def strata(self) -> torch.Tensor:
        """What a partition of the training images is stratified by: their labels."""
        return self.y_train

    @property
    def in_channels(self) -> int:
        """Number of image channels C."""
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        """Side length H (= W) of the square images."""
        return int(self.x_train.shape[2])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return (self.in_channels, self.image_size, self.image_size)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def load_dataset(name: str, *, data_root: str | None = None, image_size: int | None = None, seed: int = 0,
                 test_fraction: float = 0.2, context: int | None = None) -> ImageDataset:
    """Load the dataset registered as ``name``.

    Args:
        name: a name in :data:`DATASETS` (``hasfl-sec list datasets``).
        data_root: folder holding the files, for datasets that are not bundled.
        image_size: side length to resize to (bilinear, antialiased when shrinking); ``None``
            keeps the dataset's natural size.
        seed: seeds the train/test split of datasets without an official one.
        test_fraction: test share for datasets without an official split.
        context: characters per sequence of a text dataset (:mod:`hasfl_sec.data.text`; None: its
            default); image datasets ignore it.

    Raises:
        ConfigError: unknown name, bad ``image_size``/``test_fraction``, or unusable ``data_root``.
    """
    loader = DATASETS.get(name)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 4):
        raise ConfigError("data.image_size", image_size, "an integer >= 4 or null (natural size)")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not math.isfinite(test_fraction) or not 0.0 < test_fraction < 1.0:
        raise ConfigError("data.test_fraction", test_fraction, "a number in (0, 1)")
    if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 2):
        raise ConfigError("data.context", context, "an integer >= 2 or null (the dataset's default)")
    kwargs = {"context": context} if getattr(loader, "text", False) else {}
    dataset = loader(data_root=data_root, image_size=image_size, seed=int(seed), test_fraction=float(test_fraction),
                     **kwargs)
    logger.info("dataset %s: %d train / %d test samples of shape %s, %d classes", dataset.name,
                len(dataset.y_train), len(dataset.y_test), dataset.input_shape, dataset.num_classes)
    return dataset


# ----------------------------------------------------------------------------------- helpers


def _resize(x: torch.Tensor, size: int | None, chunk: int = 4096) -> torch.Tensor:
    """Resize ``[n, C, H, W]`` images to ``size`` x ``size`` (no-op when ``size`` is None or equal)."""
    if size is None or (x.shape[2] == size and x.shape[3] == size):
        return x.contiguous()
    shrink = size < max(x.shape[2], x.shape[3])
    out = [F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
           for part in x.split(chunk)]
    return torch.cat(out).clamp_(0.0, 1.0)


def _build(name: str, x_train: torch.Tensor, y_train: Any, x_test: torch.Tensor, y_test: Any,
           class_names: Sequence[str], image_size: int | None) -> ImageDataset:
    return ImageDataset(
        name=name,
        x_train=_resize(x_train.float(), image_size),
        y_train=torch.as_tensor(np.asarray(y_train), dtype=torch.int64),
        x_test=_resize(x_test.float(), image_size),
        y_test=torch.as_tensor(np.asarray(y_test), dtype=torch.int64),
        num_classes=len(class_names),
        class_names=tuple(str(c) for c in class_names),
    )


def _stratified_split(name: str, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                      *, image_size: int | None, seed: int, test_fraction: float) -> ImageDataset:
    """Seeded stratified train/test split of ``[n, C, H, W]`` float images in [0, 1]."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    try:
        train_idx, test_idx = train_test_split(np.arange(n), test_size=test_fraction, stratify=labels,
                                               random_state=derive_seed(seed, "split") % 2**32)
    except ValueError as exc:
        raise ConfigError("data.test_fraction", test_fraction,
                          f"a fraction leaving at least one image per class ({len(class_names)}) in both "
                          f"train and test of the {n} {name} images", hint=str(exc)) from None
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return _build(name, x[train_idx], labels[train_idx], x[test_idx], labels[test_idx], class_names, image_size)


def _check_root(data_root: str | None, layout: str, hint: str) -> str:
    if data_root is None or not os.path.isdir(data_root):
        raise ConfigError("data.data_root", data_root, layout, hint)
    return str(data_root)


# ----------------------------------------------------------------------------------- bundled


@DATASETS.register("digits", help="scikit-learn handwritten digits: 1,797 8x8 grayscale images, 10 classes (bundled)")
def load_digits(*, data_root: str | None, image_size: int | None, seed: int, test_fraction: float) -> ImageDataset:
    """scikit-learn ``load_digits`` (pixel values 0..16), seeded stratified split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = bunch.images[:, None, :, :] / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    return _stratified_split("digits", images, labels, [str(i) for i in range(10)],
                             image_size=image_size, seed=seed, test_fraction=test_fraction)


@DATASETS.register("lfw", help="scikit-image LFW subset: 200 25x25 grayscale face / non-face crops (bundled)")
def load_lfw(*, data_root: str | None, image_size: int | None, seed: int, test_fraction: float) -> ImageDataset:
    """scikit-image ``lfw_subset``: first 100 are faces (label 1), last 100 non-faces (label 0)."""
    from skimage.data import lfw_subset

    images = np.asarray(lfw_subset())
    if images.dtype == np.uint8:  # documented as uint8, shipped as float in [0, 1]
        images = images / 255.0
    labels = np.zeros(len(images), dtype=np.int64)
    labels[: len(images) // 2] = 1
    return _stratified_split("lfw", images[:, None, :, :], labels, ("non-face", "face"),
                             image_size=image_size, seed=seed, test_fraction=test_fraction)


# ----------------------------------------------------------------------------------- torchvision


_CIFAR10_LAYOUT = ("a folder containing cifar-10-batches-py/ (torchvision CIFAR10 layout: data_batch_1..5, "
                   "test_batch, batches.meta)")
_MNIST_LAYOUT = ("a folder containing {0}/raw/ with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                 "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (torchvision {0} layout)")


def _fetch(cls_name: str) -> str:
    return f"{_NO_DOWNLOAD} with torchvision.datasets.{cls_name}(root, download=True)"


def _torchvision_pair(cls_name: str, root: str, data_root: str | None, layout: str,
                      explain: Callable[[], str | None] | None = None) -> tuple[Any, Any]:
    """torchvision's train and test sets of ``cls_name``; if it fails, ``explain()`` may say which
    file is at fault (torchvision's own message often does not)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    try:
        return cls(root, train=True, download=False), cls(root, train=False, download=False)
    except _READ_ERRORS as exc:
        problem = explain() if explain else None
        raise ConfigError("data.data_root", data_root, layout,
                          problem or f"torchvision.datasets.{cls_name}: {checks.describe(exc)}") from exc


def _mnist_like(name: str, cls_name: str, data_root: str | None, image_size: int | None) -> ImageDataset:
    layout = _MNIST_LAYOUT.format(cls_name)
    root = _check_root(data_root, layout, _fetch(cls_name))
    files = checks.mnist_files(root, cls_name, data_root, layout, _fetch(cls_name))
    train, test = _torchvision_pair(cls_name, root, data_root, layout)
    for split, ds in (("train", train), ("test", test)):
        checks.split_agrees(files[split][0], ds.data, files[split][1], ds.targets, len(train.classes), data_root)
    checks.same_image_shape(files["train"][0], train.data.shape, files["test"][0], test.data.shape, data_root)
    return _build(name, torch.as_tensor(train.data).unsqueeze(1).float().div_(255.0), train.targets,
                  torch.as_tensor(test.data).unsqueeze(1).float().div_(255.0), test.targets, train.classes, image_size)


@DATASETS.register("mnist", help="MNIST digits, 28x28 grayscale, 10 classes (data_root: torchvision MNIST layout)")
def load_mnist(*, data_root: str | None, image_size: int | None, seed: int, test_fraction: float) -> ImageDataset:
    """torchvision MNIST, official 60k/10k split."""
    return _mnist_like("mnist", "MNIST", data_root, image_size)


@DATASETS.register("fashion-mnist",
                   help="Fashion-MNIST clothing, 28x28 grayscale, 10 classes (data_root: torchvision layout)")
def load_fashion_mnist(*, data_root: str | None, image_size: int | None, seed: int,
                       test_fraction: float) -> ImageDataset:
    """torchvision FashionMNIST, official 60k/10k split."""
    return _mnist_like("fashion-mnist", "FashionMNIST", data_root, image_size)


@DATASETS.register("cifar10", help="CIFAR-10 photos, 32x32 RGB, 10 classes (data_root: torchvision CIFAR10 layout)")
def load_cifar10(*, data_root: str | None, image_size: int | None, seed: int, test_fraction: float) -> ImageDataset:
    """torchvision CIFAR10, official 50k/10k split. torchvision checks every file's MD5 sum, so a
    truncated or changed batch fails there; the error names the first file missing or corrupted."""
    from torchvision.datasets import CIFAR10

    root = _check_root(data_root, _CIFAR10_LAYOUT, _fetch("CIFAR10"))
    folder = os.path.join(root, CIFAR10.base_folder)
    sums = [*CIFAR10.train_list, *CIFAR10.test_list, (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]
    train, test = _torchvision_pair("CIFAR10", root, data_root, _CIFAR10_LAYOUT,
                                    lambda: checks.checksum_problem(folder, sums, _fetch("CIFAR10")))
    names = {"train": os.path.join(folder, "data_batch_1..5"), "test": os.path.join(folder, "test_batch")}
    for split, ds in (("train", train), ("test", test)):
        checks.split_agrees(names[split], ds.data, names[split], ds.targets, len(train.classes), data_root)

    def to_tensor(data: np.ndarray) -> torch.Tensor:  # [n, H, W, C] uint8 -> [n, C, H, W] float
        return torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).float().div_(255.0)

    return _build("cifar10", to_tensor(train.data), train.targets, to_tensor(test.data), test.targets,
                  train.classes, image_size)


# ----------------------------------------------------------------------------------- image folder


_FOLDER_LAYOUT = ("data_root/<class>/*.png (split here, stratified by data.test_fraction), or "
                  "data_root/train/<class>/*.png and data_root/test/<class>/*.png")


@DATASETS.register("imagefolder",
                   help="your own images, as RGB: data_root/<class>/* (seeded stratified split) or "
                        "data_root/train/<class>/* + data_root/test/<class>/*")
def load_imagefolder(*, data_root: str | None, image_size: int | None, seed: int,
                     test_fraction: float) -> ImageDataset:
    """torchvision's ImageFolder convention: one folder per class under ``data_root`` (split into
    train and test here, seeded and stratified, ``test_fraction`` of each class in test), or
    ``train/`` and ``test/`` folders that each hold one folder per class. The layout is read off the
    disk (:func:`_folder_layout`): ``train/`` and ``test/`` and nothing else means the second, class
    folders without them the first, anything else is refused. Every image becomes RGB and is resized
    (stretched if not square) to ``image_size`` (default 32)."""
    size = 32 if image_size is None else image_size
    root = _check_root(data_root, _FOLDER_LAYOUT, "--data-root is not a folder")
    if _folder_layout(root, data_root) == "split":
        return _split_folders(root, data_root, size)
    folder = _image_folder(root, data_root, ".")
    images = torch.stack([_read_image(path, size, data_root) for path, _ in folder.samples]).numpy()
    logger.info("imagefolder %s: one folder per class (%d classes, %d images), no train/ and test/; seeded "
                "stratified split (seed %d), %g of each class to test", root, len(folder.classes),
                len(folder.samples), seed, test_fraction)
    labels = np.asarray([target for _, target in folder.samples], dtype=np.int64)
    return _stratified_split("imagefolder", images, labels, folder.classes, image_size=None, seed=seed,
                             test_fraction=test_fraction)


def _folder_layout(root: str, data_root: str | None) -> str:
    """``"split"`` when ``root`` holds ``train/`` and ``test/`` (and no other folder), else
    ``"plain"`` (one folder per class; :func:`_image_folder` checks there is at least one). A tree
    that could be read both ways is refused rather than guessed: only one of ``train/`` and
    ``test/`` (a half-copied split, or a class called "train"?), or both next to other folders.
    Hidden folders (``.ipynb_checkpoints``) do not count as classes here."""
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    has = [split in folders for split in ("train", "test")]
    others = [f for f in folders if f not in ("train", "test")]
    if all(has) and not others:
        return "split"
    if any(has):
        found = ", ".join(f + "/" for f in folders[:6]) + (", ..." if len(folders) > 6 else "")
        raise ConfigError("data.data_root", data_root, _FOLDER_LAYOUT,
                          f"--data-root has {found}: a split tree holds only train/ and test/, a plain one "
                          "only class folders, and this is neither")
    return "plain"


def _image_folder(path: str, data_root: str | None, label: str) -> Any:
    """torchvision's ImageFolder of ``path`` (its class folders and their images), or a one-line
    error naming what is wrong (no class folders, a class folder without images). Hidden folders
    (``.ipynb_checkpoints``, ``.git``) are not classes."""
    from torchvision.datasets import ImageFolder

    class VisibleImageFolder(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
            if not classes:
                raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
            return classes, {name: i for i, name in enumerate(classes)}

    try:
        return VisibleImageFolder(path)
    except _READ_ERRORS as exc:
        where = "--data-root" if label == "." else f"--data-root {label}/"
        raise ConfigError("data.data_root", data_root, _FOLDER_LAYOUT,
                          f"{where}: {str(exc) or checks.describe(exc)}") from exc


def _split_folders(root: str, data_root: str | None, size: int) -> ImageDataset:
    """The ``train/`` + ``test/`` layout: the official split the user made."""
    folders = {split: _image_folder(os.path.join(root, split), data_root, split) for split in ("train", "test")}
    classes = folders["train"].classes
    unknown = sorted(set(folders["test"].classes) - set(classes))
    if unknown:
        raise ConfigError("data.data_root", data_root, _FOLDER_LAYOUT,
                          f"test/ has classes not in train/: {', '.join(unknown)}")
    tensors = []
    for split in ("train", "test"):
        folder = folders[split]
        images = [_read_image(path, size, data_root) for path, _ in folder.samples]
        labels = [folders["train"].class_to_idx[folder.classes[target]] for _, target in folder.samples]
        tensors += [torch.stack(images), labels]
    return _build("imagefolder", tensors[0], tensors[1], tensors[2], tensors[3], classes, None)


def _read_image(path: str, size: int, data_root: str | None) -> torch.Tensor:
    """One image as RGB in [0, 1], resized to ``size``; its header's size is checked before it is
    decoded (:func:`checks.open_image`)."""
    try:
        with checks.open_image(path, size, data_root) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except ConfigError:
        raise
    except _READ_ERRORS as exc:
        raise ConfigError("data.data_root", data_root, _FOLDER_LAYOUT,
                          f"cannot read {path}: {checks.describe(exc)}") from exc
    return _resize(torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0), size)[0]
