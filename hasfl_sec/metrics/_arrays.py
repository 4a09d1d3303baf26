"""Array conversion helpers shared by the metric modules (no paper; plumbing only).

Metrics accept numpy arrays or torch tensors; torch is never imported here, a tensor is
recognised by its ``detach`` method so the metrics package stays importable without torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_numpy", "as_samples"]


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a float64 numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def as_samples(x: Any, name: str) -> np.ndarray:
    """``x`` as a 2-D float64 array [n, d]: every trailing axis is flattened into features."""
    arr = to_numpy(x)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have a sample axis; got a scalar")
    if arr.ndim == 1:
        return arr.reshape(-1, 1)
    return arr.reshape(arr.shape[0], -1)
