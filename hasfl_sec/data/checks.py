"""Checks that a data set's files hold what they claim, before anything trusts them.

A file that lies about itself -- an IDX header promising more bytes than the file has, a label
file whose count differs from its image file's, a label past the last class, a PNG whose header
claims 30000 x 30000 pixels -- otherwise ends deep in torchvision, PIL or
:class:`~hasfl_sec.data.datasets.ImageDataset` as a traceback, or as an exception whose text is
empty (torchvision's IDX reader asserts without a message). Every check here raises a one-line
:class:`~hasfl_sec.errors.ConfigError` for ``data.data_root`` whose hint is ``<file>: <what is
wrong>``, so the user learns which file to replace and why.

The checks cost nothing on good data: the IDX check reads a file's header and size only, the
count and label checks look at arrays already in memory, the image check reads a header before the
pixels are decoded, and the MD5 sums (CIFAR-10) are computed only to explain a failure torchvision
already found.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import numpy as np

from ..errors import ConfigError

__all__ = ["FIELD", "MAX_IMAGE_PIXELS", "checksum_problem", "describe", "idx_shape", "images_fit", "missing",
           "mnist_files", "open_image", "same_image_shape", "split_agrees"]

FIELD = "data.data_root"

#: The most pixels an image of an image folder may have: 8192 x 8192. Every image is shrunk to a
#: few dozen pixels a side, but first decoded whole and turned into float32 RGB (12 bytes a pixel),
#: so one image at this size already takes 0.8 GB; a header that claims more (a decompression bomb
#: is a few bytes that claim billions) is refused before a pixel is decoded. PIL's own limit is
#: higher, and above it PIL only warns, up to twice that.
MAX_IMAGE_PIXELS = 8192 * 8192


def describe(exc: BaseException) -> str:
    """``"TypeName: message"``, or the type name alone when the message is empty (a bare assert)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail(data_root: str | None, valid: str, path: str, problem: str) -> NoReturn:
    raise ConfigError(FIELD, data_root, valid, f"{path}: {problem}")


def idx_shape(path: str, ndim: int, data_root: str | None, valid: str) -> tuple[int, ...]:
    """The dimensions an IDX file of unsigned bytes (the MNIST format: magic ``00 00 08 <ndim>``, one
    big-endian uint32 per dimension, then the bytes) declares, once its magic number is the one
    expected and its size is exactly header plus data. torchvision reads a wrong length until a
    reshape fails, naming no file, and a wrong magic number fails an assert with no message."""
    kind = "label" if ndim == 1 else "image"
    magic, header = bytes((0, 0, 0x08, ndim)), 4 * (ndim + 1)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(header)
    except OSError as exc:
        _fail(data_root, valid, path, f"cannot be read: {describe(exc)}")
    if head[:4] != magic[:len(head)]:
        _fail(data_root, valid, path, f"not an IDX {kind} file: it starts with bytes {head[:4].hex(' ')}, not "
              f"{magic.hex(' ')} (unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})")
    if len(head) < header:
        _fail(data_root, valid, path,
              f"truncated: {size} bytes, shorter than the {header}-byte header of an IDX {kind} file")
    dims = struct.unpack(f">{ndim}I", head[4:])
    want = header + math.prod(dims)
    if size != want:
        _fail(data_root, valid, path, f"{'truncated' if size < want else 'too long'}: its header declares "
              f"{' x '.join(map(str, dims))} bytes after the {header}-byte header ({want:,} bytes in all), but "
              f"the file has {size:,}")
    return dims


def missing(folder: str, names: Sequence[str], fetch: str) -> str:
    """``"missing <file>; <fetch>"`` for the files ``names`` of ``folder`` (named once when several)."""
    if not os.path.isdir(folder):
        shown = folder + os.sep
    else:
        shown = os.path.join(folder, names[0]) if len(names) == 1 else f"{', '.join(names)} in {folder}{os.sep}"
    return f"missing {shown}; {fetch}"


def _shape(array: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in getattr(array, "shape", ()))


def images_fit(images_file: str, shape: tuple[int, ...], dtype: str, labels_file: str,
               labels_shape: tuple[int, ...], data_root: str | None) -> None:
    """Images of ``shape`` and ``dtype`` and labels of ``labels_shape`` make one split: ``[n, H, W]``
    or ``[n, H, W, C]`` unsigned bytes with ``n > 0`` and ``H == W``, and ``n`` labels. Shapes, not
    arrays, so an IDX file's header can be checked before torchvision reads the file (it fails on
    an empty one, naming no file). The files are named in the error (they may be one file)."""
    if dtype != "uint8" or len(shape) not in (3, 4):
        _fail(data_root, "[n, H, W] or [n, H, W, C] images of unsigned bytes", images_file,
              f"{dtype} images of shape {shape}")
    if shape[0] == 0:
        _fail(data_root, "at least one image", images_file, "0 images")
    if shape[1] != shape[2]:
        _fail(data_root, "square images", images_file, f"{shape[1]} x {shape[2]} images")
    if len(labels_shape) != 1 or labels_shape[0] != shape[0]:
        where = "" if labels_file == images_file else f" in {images_file}"
        found = f"{labels_shape[0]} labels" if len(labels_shape) == 1 else f"labels of shape {labels_shape}"
        _fail(data_root, "as many labels as images", labels_file, f"{found} for {shape[0]} images{where}")


def split_agrees(images_file: str, images: Any, labels_file: str, labels: Any, num_classes: int,
                 data_root: str | None) -> None:
    """One split as loaded: :func:`images_fit`, and every label an integer from 0 to ``num_classes - 1``."""
    y = np.asarray(labels)
    dtype = str(getattr(images, "dtype", type(images).__name__)).replace("torch.", "")
    images_fit(images_file, _shape(images), dtype, labels_file, y.shape, data_root)
    if not np.issubdtype(y.dtype, np.integer):
        _fail(data_root, "integer labels", labels_file, f"{y.dtype} labels")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        _fail(data_root, f"labels from 0 to {num_classes - 1} ({num_classes} classes)", labels_file,
              f"label {y[bad[0]]} at position {bad[0]} ({bad.size} of {len(y)} labels out of range)")


def mnist_files(root: str, cls_name: str, data_root: str | None, layout: str,
                fetch: str) -> dict[str, tuple[str, str]]:
    """The (images, labels) files torchvision's ``cls_name`` reads for each split, checked before it
    reads them. It prefers the ``processed/training.pt`` and ``test.pt`` of its old versions when
    both exist (checked once loaded, with :func:`split_agrees`); otherwise the four raw IDX files
    must be there, each of the rank expected and exactly as long as its header declares, and the
    headers must agree (:func:`images_fit`, :func:`same_image_shape`)."""
    legacy = [os.path.join(root, cls_name, "processed", f) for f in ("training.pt", "test.pt")]
    if all(os.path.isfile(path) for path in legacy):
        return {"train": (legacy[0], legacy[0]), "test": (legacy[1], legacy[1])}
    raw = os.path.join(root, cls_name, "raw")
    files = {split: (os.path.join(raw, f"{prefix}-images-idx3-ubyte"), os.path.join(raw, f"{prefix}-labels-idx1-ubyte"))
             for split, prefix in (("train", "train"), ("test", "t10k"))}
    absent = [os.path.basename(path) for pair in files.values() for path in pair if not os.path.isfile(path)]
    if absent:
        raise ConfigError(FIELD, data_root, layout, missing(raw, absent, fetch))
    valid = f"{cls_name} IDX files as torchvision writes them"
    shapes = {}
    for split, (images, labels) in files.items():
        shapes[split] = idx_shape(images, 3, data_root, valid)
        images_fit(images, shapes[split], "uint8", labels, idx_shape(labels, 1, data_root, valid), data_root)
    same_image_shape(files["train"][0], shapes["train"], files["test"][0], shapes["test"], data_root)
    return files


def same_image_shape(train_file: str, train: tuple[int, ...], test_file: str, test: tuple[int, ...],
                     data_root: str | None) -> None:
    """Train and test images (of these shapes) have one shape: a model takes one input shape."""
    if tuple(train[1:]) != tuple(test[1:]):
        _fail(data_root, "train and test images of one shape", test_file,
              f"images of shape {tuple(test[1:])}, but {tuple(train[1:])} in {train_file}")


def checksum_problem(folder: str, sums: Iterable[Sequence[str]], fetch: str) -> str | None:
    """What is wrong with the files ``sums`` lists as (name, MD5 sum) in ``folder``: the missing
    ones, else the first that is not the file of its sum; None if all are right."""
    sums = list(sums)
    absent = [name for name, _ in sums if not os.path.isfile(os.path.join(folder, name))]
    if absent:
        return missing(folder, absent, fetch)
    for name, md5 in sums:
        path = os.path.join(folder, name)
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != md5:
            return (f"{path} is corrupted: its {os.path.getsize(path):,} bytes do not match the MD5 checksum of "
                    "the official file (truncated, changed or another version)")
    return None


def open_image(path: str, size: int, data_root: str | None) -> Any:
    """``path`` opened by PIL, which reads only the header; refused (and closed) unless that header
    claims at most :data:`MAX_IMAGE_PIXELS` pixels. PIL's own decompression-bomb warning is
    silenced (the check here is stricter) and its error becomes this one."""
    from PIL import Image

    valid = f"images of at most {MAX_IMAGE_PIXELS:,} pixels (8192 x 8192)"
    advice = f"shrink it first: images are resized to {size} x {size} anyway"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as exc:
            claimed = re.search(r"\((\d+) pixels\)", str(exc))
            count = f"{int(claimed[1]):,} pixels" if claimed else f"too many pixels ({describe(exc)})"
            _fail(data_root, valid, path, f"its header claims {count}; {advice}")
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        _fail(data_root, valid, path, f"its header claims {width} x {height} = {width * height:,} pixels; {advice}")
    return image
