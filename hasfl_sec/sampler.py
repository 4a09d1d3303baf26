"""Per-device mini-batch sampling: seeded, epoch-wise without replacement, checkpointable."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .seeding import torch_generator

__all__ = ["DeviceSampler"]


class DeviceSampler:
    """Draws mini-batches from one device's local indices.

    Each epoch is a fresh permutation from the device's own generator; a batch that runs past the
    end of an epoch continues into the next, so any batch size (even larger than the local data)
    is served. The whole state is a few tensors, saved with the checkpoint so a resumed run draws
    exactly the batches an uninterrupted run would.
    """

    def __init__(self, indices: np.ndarray, *, seed: int, device: int) -> None:
        if len(indices) == 0:
            raise ValueError(f"device {device} has no training samples")
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        self.generator = torch_generator(seed, "sampler", device)
        self.perm = self._new_perm()
        self.pos = 0

    def _new_perm(self) -> torch.Tensor:
        return self.indices[torch.randperm(len(self.indices), generator=self.generator)]

    def next(self, batch_size: int) -> torch.Tensor:
        """The dataset indices of the next ``batch_size`` samples."""
        out = []
        need = batch_size
        while need > 0:
            if self.pos >= len(self.perm):
                self.perm = self._new_perm()
                self.pos = 0
            take = self.perm[self.pos : self.pos + need]
            self.pos += len(take)
            need -= len(take)
            out.append(take)
        return out[0] if len(out) == 1 else torch.cat(out)

    def state_dict(self) -> dict[str, Any]:
        """Generator state, current permutation and position."""
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])
