"""Per-device mini-batch sampling: seeded, checkpointable; epoch-wise without replacement by
default, or Poisson sampling (each sample independently with probability q) when a defense's
privacy accounting assumes it (DP-SGD, Abadi et al. 2016)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..seeding import torch_generator

__all__ = ["DeviceSampler"]


class DeviceSampler:
    """Draws mini-batches from one device's local indices.

    Each epoch is a fresh permutation from the device's own generator; a batch that runs past the
    end of an epoch continues into the next, so any batch size (even larger than the local data)
    is served. Over ``R`` rounds of batch size ``b`` a device with ``n`` samples therefore sends
    every sample either ``floor(R b / n)`` or ``ceil(R b / n)`` times, never more (each completed
    epoch sends every sample exactly once). The whole state is a few tensors, saved with the
    checkpoint so a resumed run draws exactly the batches an uninterrupted run would.

    :meth:`poisson` draws instead a batch holding each local sample independently with probability
    ``rate``: its size is Binomial(n, rate) and may be zero.
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

    def poisson(self, rate: float) -> torch.Tensor:
        """The dataset indices of a Poisson-sampled batch: each local sample with probability ``rate``.

        Uses the device's generator (so a resumed run draws the same batches) and leaves the
        epoch permutation alone.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"a sampling rate must lie in [0, 1], got {rate}")
        keep = torch.rand(len(self.indices), generator=self.generator) < rate
        return self.indices[keep]

    def draw(self, batch_size: int, rate: float | None = None) -> torch.Tensor:
        """:meth:`next` ``(batch_size)``, or :meth:`poisson` ``(rate)`` when a rate is given."""
        return self.next(batch_size) if rate is None else self.poisson(rate)

    def state_dict(self) -> dict[str, Any]:
        """Generator state, current permutation and position."""
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])
