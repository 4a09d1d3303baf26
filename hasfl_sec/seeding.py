"""Seeding: one master seed, independent derived streams per component.

Every random choice in hasfl-sec draws from a generator derived from the run's seed and a fixed
key (``derive_seed(seed, "partition")``), so adding a new random component never shifts the
numbers an existing one draws.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Iterator

import numpy as np
import torch

__all__ = ["derive_seed", "numpy_rng", "torch_generator", "seed_everything", "isolated_rng"]


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived deterministically from ``seed`` and ``keys``."""
    text = "/".join([str(int(seed))] + [str(k) for k in keys]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def numpy_rng(seed: int, *keys: object) -> np.random.Generator:
    """A numpy generator for the stream named by ``keys``."""
    return np.random.default_rng(derive_seed(seed, *keys))


def torch_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU torch generator for the stream named by ``keys``."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (for code we do not control)."""
    random.seed(derive_seed(seed, "python"))
    np.random.seed(derive_seed(seed, "numpy") % (2**32))
    torch.manual_seed(derive_seed(seed, "torch"))


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block on torch's global generators seeded with ``seed`` -- the CPU's and every CUDA
    device's -- and restore them afterwards, so what the block draws (a layer's initialisation,
    dropout in a forward pass) is its own and the run's random stream is left as it was."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # seeds the CUDA generators too
        yield
