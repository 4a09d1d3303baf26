"""The trainer's hooks for parties that depart from the protocol (hasfl_sec/sfl/parties.py).

An honest party set changes nothing, bit for bit; a replaced reply reaches the device and nothing
else; a batch the server does not learn from leaves the server's model alone; a fake batch's labels
reach the server while the device does not train on its reply.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import small_overrides

from hasfl_sec.config import load_config
from hasfl_sec.errors import ConfigError
from hasfl_sec.runs.setup import prepare
from hasfl_sec.sfl.parties import HONEST, Parties


class PassThrough:
    """A server behaviour and monitor that departs from nothing (but forces every hook to run)."""

    name = "pass-through"

    def __init__(self) -> None:
        self.replies: list[tuple[int, int, bool]] = []
        self.param_grads: list[torch.Tensor] = []

    def replaces(self, round, device):
        return False

    def trains_task(self, round, device):
        return True

    def reply(self, round, device, cut, smashed, labels):  # never called: replaces is False
        raise AssertionError("reply called")

    def end_round(self, round):
        pass

    def fake_labels(self, round, device, labels):
        return None

    def on_reply(self, round, device, grad, fake, param_grad):
        self.replies.append((round, device, fake))
        self.param_grads.append(param_grad)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class Zeroing(PassThrough):
    """Replaces device 0's reply with zeros and does not learn from its batch."""

    name = "zeroing"

    def replaces(self, round, device):
        return device == 0

    def trains_task(self, round, device):
        return device != 0

    def reply(self, round, device, cut, smashed, labels):
        assert not smashed.requires_grad
        return torch.zeros_like(smashed)


class Faking(PassThrough):
    """Device 1 sends every batch with its labels shifted by one class."""

    name = "faking"

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[torch.Tensor] = []

    def fake_labels(self, round, device, labels):
        return (labels + 1) % 10 if device == 1 else None


def _trainer(parties: Parties = HONEST, rounds: int = 3, **extra):
    overrides = small_overrides(**{"train.rounds": rounds, "train.agg_interval": 100, "train.eval_every": 100,
                                   "train.execution": "per-device", **extra})
    return prepare(load_config(overrides=overrides)).trainer(parties=parties)


def _state(trainer) -> list[torch.Tensor]:
    return [t.clone() for c in (*trainer.copies, trainer.common) for t in c.state_dict().values()]


def test_honest_parties_change_nothing_bit_for_bit():
    plain, hooked = _trainer(), _trainer(Parties(server=PassThrough(), monitors=(PassThrough(),)))
    assert hooked.execution.name == "per-device"
    for _ in range(3):
        assert plain.step().device_losses == hooked.step().device_losses
    assert all(torch.equal(a, b) for a, b in zip(_state(plain), _state(hooked)))
    assert hooked.parties.monitors[0].replies[:4] == [(1, 0, False), (1, 1, False), (1, 2, False), (1, 3, False)]
    assert "parties" not in plain.state_dict() and "parties" in hooked.state_dict()


def test_a_malicious_server_falls_back_to_the_per_device_execution():
    trainer = _trainer(Parties(server=PassThrough()), **{"train.execution": "batched"})
    assert trainer.execution.name == "per-device"
    assert _trainer(**{"train.execution": "batched"}).execution.name == "batched"


def test_a_replaced_reply_reaches_the_device_and_its_batch_trains_no_server_part():
    plain, zeroed = _trainer(rounds=1), _trainer(Parties(server=Zeroing()), rounds=1)
    client0 = [p.clone() for p in zeroed.clients[0].parameters()]
    server0 = [p.clone() for p in zeroed.noncommon[0].parameters()]
    plain.step()
    zeroed.step()
    # device 0 got a zero gradient and plain SGD (no momentum or weight decay): its part did not move
    assert all(torch.equal(a, b) for a, b in zip(client0, zeroed.clients[0].parameters()))
    # its non-common blocks on the server learnt nothing from its batch (the honest run's did)
    assert all(torch.equal(a, b) for a, b in zip(server0, zeroed.noncommon[0].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(server0, plain.noncommon[0].parameters()))
    # the common part saw only the other devices' batches
    assert not all(torch.equal(a, b) for a, b in zip(plain.common.parameters(), zeroed.common.parameters()))
    # the other devices were served honestly: the same reply, the same step
    for i in (1, 2, 3):
        assert all(torch.equal(a, b) for a, b in zip(plain.clients[i].parameters(), zeroed.clients[i].parameters()))


def test_a_fake_batch_reaches_the_server_but_the_device_does_not_learn_from_it():
    monitor = Faking()
    plain, faked = _trainer(rounds=1), _trainer(Parties(monitors=(monitor,)), rounds=1)
    before = [p.clone() for p in faked.clients[1].parameters()]
    seen = Recorder()
    faked.add_observer(seen)
    honest, fake = plain.step(), faked.step()
    # a fake batch's loss is on made-up labels: no training loss, left out of the round's mean
    assert fake.device_losses[0] == honest.device_losses[0] and math.isnan(fake.device_losses[1])
    assert math.isfinite(fake.train_loss) and fake.train_loss != honest.train_loss
    assert all(torch.equal(a, b) for a, b in zip(before, faked.clients[1].parameters()))
    assert (1, 1, True) in monitor.replies and (1, 0, False) in monitor.replies
    # what the server received is what an observer of the exchange sees; the truth stays the truth
    exchange, truth = seen.exchanges[1]
    assert torch.equal(exchange.labels, (truth.labels + 1) % 10)
    assert torch.equal(seen.exchanges[0][0].labels, seen.exchanges[0][1].labels)


class Recorder:
    """An observer of every exchange."""

    def __init__(self) -> None:
        self.exchanges: dict[int, tuple] = {}

    def wants(self, round, device):
        return True

    def wants_upload(self, round, device):
        return False

    def on_exchange(self, exchange, truth):
        self.exchanges[exchange.device] = (exchange, truth)


def test_monitors_see_the_gradient_each_device_steps_on():
    monitor = PassThrough()
    trainer = _trainer(Parties(monitors=(monitor,)), rounds=1)
    before = [next(c.parameters()).detach().clone() for c in trainer.clients]
    trainer.step()
    lr = trainer.cfg.lr
    for i, c in enumerate(trainer.clients):  # plain SGD: w' = w - lr * g
        moved = (before[i] - next(c.parameters()).detach()).flatten() / lr
        assert torch.allclose(moved, monitor.param_grads[i], rtol=1e-3, atol=1e-6)


class Counting(PassThrough):
    """A monitor whose state is a count, under another name."""

    def __init__(self, name: str, count: int = 0) -> None:
        super().__init__()
        self.name, self.count = name, count

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def test_monitor_states_are_restored_by_name_and_other_parties_are_refused():
    saved = Parties(monitors=(Counting("a", 1), Counting("b", 2))).state_dict()
    a, b = Counting("a"), Counting("b")
    Parties(monitors=(b, a)).load_state_dict(saved)  # another order: each gets its own state
    assert (a.count, b.count) == (1, 2)
    with pytest.raises(ConfigError, match="checkpoint: got 'server honest; monitors a, b'"):
        Parties(monitors=(Counting("a"),)).load_state_dict(saved)
    with pytest.raises(ConfigError, match="server zeroing"):
        Parties(server=Zeroing(), monitors=(Counting("a"), Counting("b"))).load_state_dict(saved)
    Parties(monitors=(a,)).load_state_dict({})  # an honest run's checkpoint restores nothing
