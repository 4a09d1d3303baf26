"""The cut-layer tap: records what crosses the cut without the trainer knowing who listens.

The trainer calls its observers at two exchange points (after each device's split step, and at
each client-side upload). :class:`CutLayerTap` is such an observer. Attach it with
:meth:`CutLayerTap.attach`, which returns a handle; :meth:`CutLayerTap.detach` removes it, so
nothing is left hooked (the Opacus ``add_hooks``/``remove_hooks`` discipline). A
:class:`TapSelector` bounds what is kept: which rounds and devices, and how many records at most.

Example::

    tap = CutLayerTap(TapSelector(rounds={1, 2}, max_records=64))
    with tap.attached(trainer):
        trainer.run()
    tap.exchanges[(1, 0, 0)].smashed
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from ..results import atomic_torch_save
from .protocol import Exchange, GroundTruth, Key, Upload

__all__ = ["Observer", "ObserverHandle", "TapSelector", "CutLayerTap"]

logger = logging.getLogger(__name__)


class Observer(Protocol):
    """What the trainer calls; every method receives detached CPU tensors it may keep."""

    def on_exchange(self, exchange: Exchange, truth: GroundTruth) -> None: ...

    def on_upload(self, upload: Upload) -> None: ...


class ObserverHandle:
    """Returned by ``trainer.add_observer``; :meth:`remove` detaches the observer (idempotent)."""

    def __init__(self, observers: list[Observer], observer: Observer) -> None:
        self._observers = observers
        self._observer = observer

    def remove(self) -> None:
        """Detach the observer; calling twice is harmless."""
        if self._observer in self._observers:
            self._observers.remove(self._observer)


@dataclass
class TapSelector:
    """Which exchanges to keep. ``None`` means all; ``max_records`` caps exchanges kept."""

    rounds: set[int] | None = None
    devices: set[int] | None = None
    max_records: int = 256
    keep_uploads: bool = True

    def wants(self, round: int, device: int) -> bool:
        """True if a record of ``device`` in ``round`` is in scope."""
        return (self.rounds is None or round in self.rounds) and (self.devices is None or device in self.devices)


class CutLayerTap:
    """Records exchanges, ground truth and uploads selected by a :class:`TapSelector`.

    ``exchanges`` and ``truths`` share keys; ``truths`` is for the audit runner and metrics only.
    Records beyond ``max_records`` are dropped (counted in ``dropped``), keeping memory bounded.
    """

    def __init__(self, selector: TapSelector | None = None) -> None:
        self.selector = selector or TapSelector()
        self.exchanges: dict[Key, Exchange] = {}
        self.truths: dict[Key, GroundTruth] = {}
        self.uploads: list[Upload] = []
        self.dropped = 0
        self._handle: ObserverHandle | None = None
        self.enabled = True

    # observer protocol ------------------------------------------------------------------------
    def wants(self, round: int, device: int) -> bool:
        """True if an exchange of ``device`` in ``round`` would be kept (the trainer asks first,
        so nothing is copied off the device for records the tap would drop)."""
        if not self.enabled or not self.selector.wants(round, device):
            return False
        if len(self.exchanges) >= self.selector.max_records:
            self.dropped += 1
            return False
        return True

    def wants_upload(self, round: int, device: int) -> bool:
        """True if the upload of ``device`` at ``round`` would be kept."""
        return self.enabled and self.selector.keep_uploads and self.selector.wants(round, device)

    def on_exchange(self, exchange: Exchange, truth: GroundTruth) -> None:
        """Keep the exchange and its ground truth if selected and under the cap."""
        if not self.enabled or not self.selector.wants(exchange.round, exchange.device):
            return
        if len(self.exchanges) >= self.selector.max_records:
            return
        self.exchanges[exchange.key] = exchange
        self.truths[truth.key] = truth

    def on_upload(self, upload: Upload) -> None:
        """Keep an uploaded client-side sub-model if selected."""
        if self.wants_upload(upload.round, upload.device):
            self.uploads.append(upload)

    # attachment -------------------------------------------------------------------------------
    def attach(self, trainer: "SupportsObservers") -> ObserverHandle:
        """Start listening to ``trainer``; attaching twice is refused."""
        if self._handle is not None:
            raise RuntimeError("this tap is already attached; call detach() first")
        self._handle = trainer.add_observer(self)
        return self._handle

    def detach(self) -> None:
        """Stop listening; records already kept stay available."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @contextlib.contextmanager
    def attached(self, trainer: "SupportsObservers") -> Iterator["CutLayerTap"]:
        """Context manager: attached inside the block, detached after (even on error)."""
        self.attach(trainer)
        try:
            yield self
        finally:
            self.detach()

    def clear(self) -> None:
        """Forget every record."""
        self.exchanges.clear()
        self.truths.clear()
        self.uploads.clear()
        self.dropped = 0

    def state_dict(self) -> dict[str, Any]:
        """The records as plain tensors and numbers (``torch.save``-able, ``weights_only``-loadable)."""
        return {
            "exchanges": [_exchange_dict(e) for e in self.exchanges.values()],
            "truths": [vars(t).copy() for t in self.truths.values()],
            "uploads": [vars(u).copy() for u in self.uploads],
            "dropped": self.dropped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore records saved by :meth:`state_dict` (a resumed run keeps what it had seen)."""
        self.clear()
        for e in state["exchanges"]:
            ex = Exchange(**e)
            self.exchanges[ex.key] = ex
        for t in state["truths"]:
            truth = GroundTruth(**t)
            self.truths[truth.key] = truth
        self.uploads = [Upload(**u) for u in state["uploads"]]
        self.dropped = int(state["dropped"])

    def save(self, path: str | Path) -> None:
        """Write the records to ``path`` (load with ``torch.load(path, weights_only=True)``)."""
        atomic_torch_save(self.state_dict(), Path(path))
        logger.info("tap: saved %d exchanges and %d uploads to %s", len(self.exchanges), len(self.uploads), path)


def _exchange_dict(exchange: Exchange) -> dict[str, object]:
    record = {k: getattr(exchange, k) for k in ("round", "device", "step", "cut", "smashed", "labels", "grad")}
    record["meta"] = dict(exchange.meta)
    return record


class SupportsObservers(Protocol):
    """Anything a tap can attach to (the trainer)."""

    def add_observer(self, observer: Observer) -> ObserverHandle: ...
