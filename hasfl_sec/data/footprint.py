"""How much memory a data set takes once loaded, known before it is loaded.

:func:`footprint` gives the number of images, their channels and side for a dataset name, so a
run can refuse an ``image_size`` whose resized tensors would not fit in memory before it reads a
file (docs/design.md section 9, "Resource limits"). The counts are those of the files the
loaders read (:mod:`hasfl_sec.data.datasets`), train and test together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Footprint", "footprint", "NATURAL"]

#: Images, channels, natural side and classes of the data sets whose size is fixed.
NATURAL: dict[str, tuple[int, int, int, int]] = {
    "digits": (1797, 1, 8, 10),          # scikit-learn's bundled copy of the UCI digits
    "lfw": (200, 1, 25, 2),              # scikit-image's bundled LFW faces (100 faces, 100 non-faces)
    "mnist": (70000, 1, 28, 10),
    "fashion-mnist": (70000, 1, 28, 10),
    "cifar10": (60000, 3, 32, 10),
}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Files counted at most in an image folder (walking a huge tree must not itself take minutes).
_MAX_WALK = 2_000_000


@dataclass(frozen=True)
class Footprint:
    """``images`` of ``channels`` x ``side`` x ``side`` float32 values in ``classes`` classes
    (None: not known before the data are read)."""

    images: int
    channels: int
    side: int
    classes: int | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the loaded float32 tensors."""
        return self.images * self.channels * self.side * self.side * 4


def footprint(name: str, data_root: str | None, image_size: int | None) -> Footprint | None:
    """The loaded size of dataset ``name`` at ``image_size`` (None: natural size), or None where it
    cannot be known without reading the images (an image folder at its natural size, an unknown name)."""
    if name in NATURAL:
        images, channels, side, classes = NATURAL[name]
        return Footprint(images, channels, image_size or side, classes)
    if name == "imagefolder" and image_size is not None and data_root and os.path.isdir(data_root):
        return Footprint(_count_images(data_root), 3, image_size)
    return None


def _count_images(root: str) -> int:
    """Image files under ``root`` (hidden folders skipped, as the loader skips them)."""
    count = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        count += sum(f.lower().endswith(_IMAGE_SUFFIXES) for f in files)
        if count >= _MAX_WALK:
            break
    return count
