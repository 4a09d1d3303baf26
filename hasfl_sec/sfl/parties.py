"""Parties that may depart from the protocol: the edge server's replies and the devices' monitors.

In the honest HASFL round (docs/hasfl.md section 1.2, step 4) the edge server returns to each
device the gradient of that device's loss with respect to the smashed data it received. A
*malicious* edge server (docs/design.md section 4, third row: "may alter the gradients it
returns") replaces that reply with a gradient of its own choosing -- feature-space hijacking
(Pasquini, Ateniese and Bernaschi, CCS 2021) returns the gradient of an adversarial loss that
steers the device's client part into a feature space the server can invert. Devices in turn may
*monitor* the replies they get (SplitGuard, Erdogan, Kupcu and Cicek, WPES 2022, sends batches
with randomized labels now and then and compares their gradients with the regular ones).

The trainer knows nothing about attacks or detectors: it calls the two protocols below through
:class:`Parties`, and the audit side supplies the implementations. The default,
:data:`HONEST`, changes nothing: the trainer's arithmetic is that of a run without parties, bit
for bit (tests/test_parties.py).

Order within round t, for device i (the per-device execution, :mod:`.perdevice`):

1. the device draws its batch; a monitor may swap its labels for a fake batch's
   (:meth:`DeviceMonitor.fake_labels`): the server computes its loss with the labels it is sent;
2. the server runs its task step; a device whose batch :meth:`ServerBehaviour.trains_task` says
   the server does not learn from adds nothing to the server's gradient;
3. the server's reply to device i is the honest cut-layer gradient, or
   :meth:`ServerBehaviour.reply` where :meth:`ServerBehaviour.replaces` says so; the device's
   downlink defenses apply to whatever it receives;
4. every device back-propagates the reply it received; monitors see the reply and the gradient
   it gives the device's first parameter tensor (the first layer's weight, what SplitGuard and
   SplitOut inspect; :meth:`DeviceMonitor.on_reply`); a device does not step on a fake batch's
   reply; then every other device steps;
5. :meth:`ServerBehaviour.end_round` (the attacker's own training steps), then the observers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from ..errors import ConfigError

__all__ = ["ServerBehaviour", "DeviceMonitor", "Parties", "HONEST"]


@runtime_checkable
class ServerBehaviour(Protocol):
    """How the edge server answers the devices (an attacker's implementation)."""

    name: str

    def replaces(self, round: int, device: int) -> bool:
        """Whether device ``device``'s reply in round ``round`` is :meth:`reply` instead of the
        honest cut-layer gradient."""

    def trains_task(self, round: int, device: int) -> bool:
        """Whether the server's own task model learns from this device's batch."""

    def reply(self, round: int, device: int, cut: int, smashed: torch.Tensor,
              labels: torch.Tensor) -> torch.Tensor:
        """The gradient sent back for the (detached) ``smashed`` data the device sent, same shape."""

    def end_round(self, round: int) -> None:
        """Called once the round's replies are sent and every device has stepped."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps to continue the behaviour bit for bit."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""


@runtime_checkable
class DeviceMonitor(Protocol):
    """What a device watches on its side of the cut (a detector's implementation)."""

    name: str

    def fake_labels(self, round: int, device: int, labels: torch.Tensor) -> torch.Tensor | None:
        """Labels to send instead of ``labels`` this round (a fake batch), or None for a regular one."""

    def on_reply(self, round: int, device: int, grad: torch.Tensor, fake: bool, param_grad: torch.Tensor) -> None:
        """The cut-layer gradient the device received, whether its batch was fake, and the gradient
        it gave the device's first parameter tensor, flattened (all detached)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""


@dataclass(frozen=True)
class Parties:
    """The edge server's behaviour (None: honest) and the devices' monitors, as the trainer calls them."""

    server: ServerBehaviour | None = None
    monitors: tuple[DeviceMonitor, ...] = ()

    @property
    def honest(self) -> bool:
        """True when nothing departs from the protocol (the trainer then runs as without parties)."""
        return self.server is None and not self.monitors

    def describe(self) -> str:
        """For the log: ``"server fsha; monitors splitguard"``."""
        server = self.server.name if self.server is not None else "honest"
        monitors = ", ".join(m.name for m in self.monitors) or "none"
        return f"server {server}; monitors {monitors}"

    def labels_sent(self, round: int, device: int, labels: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """``(labels the server gets, whether the batch is fake)``: the first monitor that fakes wins."""
        for m in self.monitors:
            fake = m.fake_labels(round, device, labels)
            if fake is not None:
                return fake, True
        return labels, False

    def task_weights(self, round: int, weights: Sequence[float]) -> list[float]:
        """The devices' weights in the server's task loss: 0 for a batch the server does not learn from."""
        if self.server is None:
            return list(weights)
        return [w if self.server.trains_task(round, i) else 0.0 for i, w in enumerate(weights)]

    def reply(self, round: int, device: int, cut: int, honest: torch.Tensor, smashed: torch.Tensor,
              labels: torch.Tensor) -> torch.Tensor:
        """The gradient the server sends device ``device``: ``honest`` unless the behaviour replaces it."""
        if self.server is None or not self.server.replaces(round, device):
            return honest
        return self.server.reply(round, device, cut, smashed.detach(), labels)

    def received(self, round: int, device: int, grad: torch.Tensor, fake: bool, param_grad: torch.Tensor) -> None:
        """Hand every monitor the reply the device received and its first parameter's gradient."""
        for m in self.monitors:
            m.on_reply(round, device, grad.detach(), fake, param_grad.detach().flatten().cpu())

    def end_round(self, round: int) -> None:
        """The behaviour's end-of-round step (the attacker's own training)."""
        if self.server is not None:
            self.server.end_round(round)

    def state_dict(self) -> dict[str, Any]:
        """The behaviour's and monitors' states (checkpoints), each under its name."""
        return {"server": self.server.state_dict() if self.server is not None else None,
                "server_name": self.server.name if self.server is not None else None,
                "monitors": {m.name: m.state_dict() for m in self.monitors}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (a checkpoint of an honest run restores nothing). A
        checkpoint of other parties (another attacker, other detectors) is refused in one line."""
        if not state:
            return
        saved = state.get("monitors", {})
        names = sorted(saved) if isinstance(saved, dict) else None  # a list: written before names were kept
        server = self.server.name if self.server is not None else None
        if (names is not None and names != sorted(m.name for m in self.monitors)) or \
                state.get("server_name", server) != server:
            monitors = ", ".join(names or []) or "none"
            saved_parties = f"server {state.get('server_name') or 'honest'}; monitors {monitors}"
            raise ConfigError("checkpoint", saved_parties, f"a checkpoint of these parties ({self.describe()})")
        if self.server is not None and state.get("server") is not None:
            self.server.load_state_dict(state["server"])
        pairs = [(m, saved[m.name]) for m in self.monitors] if names is not None else zip(self.monitors, saved)
        for monitor, monitor_state in pairs:
            monitor.load_state_dict(monitor_state)


#: No departure from the protocol.
HONEST = Parties()
