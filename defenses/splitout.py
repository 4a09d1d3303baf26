"""SplitOut: a device flags server-induced gradients as outliers (Erdogan et al., arXiv 2302.08618).

Before split training starts, the device simulates a short stretch of honest training on its own:
the whole model -- its client part as the fed server distributed it, and a server part of the
known architecture with fresh weights -- trained end to end on its own data with the run's
optimizer, for ``honest_batches`` batches of its batch size. The gradients its first layer's
weight gets there are the honest examples; a local outlier factor (scikit-learn's
``LocalOutlierFactor``, ``novelty=True``, as many neighbours as the examples allow, the default
contamination) is fitted to them. During training, each regular reply's first-layer gradient is
labelled inlier or outlier, and the device declares the server malicious when the strict majority
of its last ``window`` labels are outliers. These are the authors' published choices (features:
the raw flattened first-layer weight gradient; ``window`` 10); their code fits the LOF on the first
1% of one epoch's batches (about 9 on MNIST), and ``honest_batches`` (default 10) plays that part
here, where a device may hold fewer samples than one MNIST batch.

The honest simulation sees the model only at the start; as SFL training moves on (and averages
the device's part with the others'), honest gradients drift away from it -- the false-positive
rate against an honest server is measured over whole runs (benchmarks/bench_fsha.py).
"""

from __future__ import annotations

import collections
import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..seeding import derive_seed, isolated_rng, torch_generator
from .params import check_fields, count, rng_seed
from .registry import DETECTORS

#: A device's own extra loss on (inputs, smashed data), as :meth:`Defense.loss_term` gives it (NoPeek's).
LossTerm = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | None"]

__all__ = ["SplitOut", "honest_gradients"]


def honest_gradients(client: nn.Module, server: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batches: int,
                     batch_size: int, lr: float, generator: torch.Generator,
                     loss_term: LossTerm | None = None) -> np.ndarray:
    """``[batches, P]``: the first parameter's gradient in each of ``batches`` SGD steps of
    end-to-end training of ``client`` then ``server`` (copies; the arguments are not changed) on
    batches drawn without replacement from ``(x, y)`` (reshuffled when exhausted). ``loss_term``
    adds the device's own loss on (inputs, smashed data), as in its training (NoPeek's)."""
    client, server = copy.deepcopy(client).train(), copy.deepcopy(server).train()
    opt = torch.optim.SGD([*client.parameters(), *server.parameters()], lr=lr)
    first = next(client.parameters())
    out, order = [], torch.empty(0, dtype=torch.long)
    for _ in range(batches):
        if len(order) < min(batch_size, len(x)):
            order = torch.cat([order, torch.randperm(len(x), generator=generator)])
        idx, order = order[:batch_size], order[batch_size:]
        opt.zero_grad(set_to_none=True)
        smashed = client(x[idx])
        loss = F.cross_entropy(server(smashed), y[idx])
        extra = loss_term(x[idx], smashed) if loss_term is not None else None
        (loss if extra is None else loss + extra).backward()
        out.append(first.grad.detach().flatten().cpu().double().numpy().copy())
        opt.step()
    return np.stack(out)


@dataclass
class _Device:
    lof: Any = None
    examples: np.ndarray | None = None  # the honest gradients the LOF was fitted on
    labels: collections.deque = field(default_factory=collections.deque)
    checked: int = 0
    outliers: int = 0
    detected: int | None = None


@DETECTORS.register("splitout", help="local outlier factor on the device's gradients, fitted on a short "
                                     "honest local training (Erdogan et al. 2023)")
class SplitOut:
    """A :class:`~hasfl_sec.sfl.parties.DeviceMonitor` running SplitOut on each fitted device."""

    @dataclass
    class Params:
        honest_batches: int = count(10, low=3, high=100_000)  # the LOF's examples
        window: int = count(10)  # the authors' window
        seed: int = rng_seed(0)

    name = "splitout"

    def __init__(self, params: "SplitOut.Params | None", *, num_classes: int, devices: Iterable[int],
                 run_seed: int = 0) -> None:
        self.params = p = params if params is not None else self.Params()
        self.run_seed = run_seed
        check_fields(p, "--detector-param splitout.")
        self.devices = {d: _Device(labels=collections.deque(maxlen=p.window)) for d in devices}

    def fit(self, device: int, client: nn.Module, server: nn.Module, x: torch.Tensor, y: torch.Tensor,
            batch_size: int, lr: float,
            loss_term: LossTerm | None = None) -> None:
        """Simulate ``device``'s honest training on its data ``(x, y)`` (with its own ``loss_term``)
        and fit its outlier factor. What the simulation draws (dropout) is its own stream."""
        gen = torch_generator(self.params.seed, "splitout", self.run_seed, device)
        with isolated_rng(derive_seed(self.params.seed, "splitout", self.run_seed, device, "forward")):
            examples = honest_gradients(client, server, x, y, batches=self.params.honest_batches,
                                        batch_size=batch_size, lr=lr, generator=gen, loss_term=loss_term)
        self._fit_lof(self.devices[device], examples)

    @staticmethod
    def _fit_lof(st: _Device, examples: np.ndarray) -> None:
        from sklearn.neighbors import LocalOutlierFactor

        st.examples = examples
        st.lof = LocalOutlierFactor(n_neighbors=len(examples) - 1, novelty=True).fit(examples)

    def fake_labels(self, round: int, device: int, labels: torch.Tensor) -> torch.Tensor | None:
        return None  # SplitOut only listens

    def on_reply(self, round: int, device: int, grad: torch.Tensor, fake: bool, param_grad: torch.Tensor) -> None:
        st = self.devices.get(device)
        if st is None or st.lof is None or fake:  # another detector's fake batch is no evidence
            return
        outlier = int(st.lof.predict(param_grad.double().numpy()[None])[0]) == -1
        st.labels.append(outlier)
        st.checked += 1
        st.outliers += outlier
        if st.detected is None and len(st.labels) == self.params.window and 2 * sum(st.labels) > len(st.labels):
            st.detected = round

    def detected_round(self, device: int) -> int | None:
        """The round this detector declared ``device``'s server malicious, or None."""
        st = self.devices.get(device)
        return st.detected if st is not None else None

    def report(self) -> list[dict[str, Any]]:
        """One row per monitored device: detection round, replies checked, outliers among them."""
        return [{"detector": self.name, "device": d, "detected_round": st.detected, "checks": st.checked,
                 "outlier_share": st.outliers / st.checked if st.checked else None}
                for d, st in sorted(self.devices.items())]

    def state_dict(self) -> dict[str, Any]:
        # the examples, not the fitted scikit-learn object: checkpoints load with weights_only, and
        # refitting the LOF on the same examples gives the same model
        return {d: {"examples": None if st.examples is None else torch.from_numpy(st.examples),
                    "labels": list(st.labels), "checked": st.checked, "outliers": st.outliers,
                    "detected": st.detected} for d, st in self.devices.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for d, s in state.items():
            st = self.devices[int(d)]
            if s["examples"] is not None:
                self._fit_lof(st, s["examples"].numpy())
            st.labels = collections.deque(s["labels"], maxlen=self.params.window)
            st.checked, st.outliers, st.detected = s["checked"], s["outliers"], s["detected"]
