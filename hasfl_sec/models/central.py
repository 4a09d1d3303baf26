"""Central (non-split) training of a split-able model: the bare-model audit's victim and the
model whose Fisher information gives the leakage profile of privacy-constrained planning."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.datasets import ImageDataset
from ..seeding import torch_generator
from .split import SplitModel

__all__ = ["train_central"]


def train_central(model: SplitModel, dataset: ImageDataset, *, epochs: int, lr: float = 1e-3, batch_size: int = 64,
                  seed: int, device: torch.device, progress: bool = False) -> float:
    """Train ``model`` on the whole training set; returns the test accuracy.

    Adam (lr 1e-3) rather than the run's SGD: it trains every model of the zoo, with or without
    normalisation layers, without tuning (SGD at the split-training rate diverges on the
    un-normalised He et al. CNN).
    """
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = dataset.x_train.to(device), dataset.y_train.to(device)
    gen = torch_generator(seed, "central")
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs_iter = tqdm(epochs_iter, desc="central training", unit="epoch")
    for _ in epochs_iter:
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(dataset.x_test.to(device)).argmax(1).cpu() == dataset.y_test).float().mean())
    return acc
