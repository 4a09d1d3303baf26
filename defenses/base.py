"""The defense protocol: optional hook points, all identity by default.

Before training, :meth:`Defense.prepare` receives a :class:`DefenseContext` (plan, data sizes,
schedule, model, sampling), for defenses whose parameters depend on them (DP-SGD's sampling rate
and accounting). :meth:`Defense.transform_smashed` must work without ``prepare`` (an adaptive
attacker simulates the defense on its own data).

A defense may use any subset of them; the hook points follow three established patterns (wrapping
the model and optimizer as Opacus does, a loss term as NoPeek does, and transforms of what crosses
the cut as Flower's mods do):

* :meth:`Defense.prepare_model` -- once, before any device copy exists: return the model to
  train (DP-SGD replaces layers Opacus cannot compute per-sample gradients for).
* :meth:`Defense.sample_rates` -- how each device must sample its batch: ``None`` keeps the
  trainer's fixed-size batches, a rate per device asks for Poisson sampling (variable, possibly
  empty batches), which DP-SGD's accounting assumes.
* :meth:`Defense.wrap_client` / :meth:`Defense.unwrap_client` -- setup time: the module a device
  runs its forward pass through (Opacus' per-sample-gradient hooks), and its removal before the
  trainer lays the model out again after a re-plan.
* :meth:`Defense.wrap_optimizer` -- setup time: wrap a device's client-side optimizer
  (for example DP-SGD).
* :meth:`Defense.transform_smashed` -- on the device, on the way up: change the smashed data
  before it is sent (differentiable; the device back-propagates through it).
* :meth:`Defense.transform_grad` -- on the way down: change the cut-layer gradient before the
  device receives it.
* :meth:`Defense.transform_smashed_group` / :meth:`Defense.transform_grad_group` -- the same
  two transforms for a group of devices run as one batched computation; by default each device's
  view goes through the per-device hook.
* :meth:`Defense.loss_term` -- an extra device-side loss on (inputs, smashed), back-propagated
  through the client part together with the returned gradient.

The trainer never branches on a defense's type; it calls a :class:`DefenseStack` that folds every
configured defense in order (the last transform is closest to the wire). A defense that must not
be combined with another names it in ``incompatible_with`` (DP-SGD: NoPeek); :func:`check_compatible`
refuses such pairs when a config is validated and when a stack is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Sequence

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["Defense", "DefenseContext", "DefenseStack", "check_compatible", "overrides"]


@dataclass(frozen=True)
class DefenseContext:
    """What a defense may need to know about the run before training starts.

    Attributes:
        batch_sizes, cuts: each device's b_i and c_i under the plan in effect.
        part_sizes: each device's number of training samples |D_i|.
        rounds: total training rounds; agg_interval: I.
        model: the split model (before any device copy is made).
        sample_rates: each device's Poisson sampling rate when a defense asked for Poisson
            sampling (:meth:`Defense.sample_rates`), or None: fixed-size batches drawn epoch-wise
            without replacement (:class:`hasfl_sec.sfl.sampler.DeviceSampler`).
    """

    batch_sizes: tuple[int, ...]
    cuts: tuple[int, ...]
    part_sizes: tuple[int, ...]
    rounds: int
    agg_interval: int
    model: Any = None
    sample_rates: tuple[float, ...] | None = None

    @property
    def num_devices(self) -> int:
        """N."""
        return len(self.batch_sizes)


class Defense:
    """Base class; subclasses override only the hooks they need.

    A registered defense has a ``Params`` dataclass (its config section) and is built as
    ``Defense(params)``. ``incompatible_with`` maps the names of defenses it must not be combined
    with to the reason; :func:`check_compatible` refuses such combinations.
    """

    name: str = "identity"
    incompatible_with: ClassVar[dict[str, str]] = {}

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model to train (called once, before any device copy is made; identity by default).

        Must not modify ``model`` in place: return a new module when something has to change.
        """
        return model

    def sample_rates(self, context: DefenseContext) -> tuple[float, ...] | None:
        """Each device's Poisson sampling rate this defense needs, or None (default: the trainer's
        fixed-size batches). ``context.sample_rates`` is not yet set when this is called."""
        return None

    def prepare(self, context: DefenseContext) -> None:
        """Called once before training and again after a re-plan (no-op by default)."""

    def is_identity(self) -> bool:
        """True when these parameters leave training and the exchanges unchanged (zero strength);
        the audit then runs no adaptive variant against it. False by default."""
        return False

    def wrap_client(self, module: nn.Module, *, device: int) -> nn.Module:
        """The module device ``device`` runs its client part through; it must hold exactly the
        parameters of ``module`` (identity by default)."""
        return module

    def unwrap_client(self, module: nn.Module, *, device: int) -> nn.Module:
        """Undo :meth:`wrap_client` (remove hooks) and return the inner module; the trainer calls
        it before laying the model out again (identity by default)."""
        return module

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, *, device: int) -> torch.optim.Optimizer:
        """Return the optimizer device ``device`` will step (identity by default)."""
        return optimizer

    def transform_smashed(self, smashed: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        """Return what the device sends instead of ``smashed`` (identity by default)."""
        return smashed

    def transform_grad(self, grad: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        """Return the gradient the device receives instead of ``grad`` (identity by default)."""
        return grad

    def transform_smashed_group(self, smashed: torch.Tensor, *, round: int, devices: Sequence[int]) -> torch.Tensor:
        """:meth:`transform_smashed` for a group of devices at once: ``smashed`` is ``[k, b, ...]``,
        row r from device ``devices[r]`` (the batched execution, :mod:`hasfl_sec.sfl.batched`).

        The default calls :meth:`transform_smashed` on each device's view, in the order of
        ``devices``, so a defense sees exactly the per-device tensors it sees in the per-device
        execution; a per-sample defense may override it to transform the group in one call.
        """
        if not overrides(self, "transform_smashed"):
            return smashed
        # unbind, not indexing: its backward stacks the rows' gradients in one op, where k indexed
        # views would each materialise a gradient of the whole group
        rows = zip(smashed.unbind(), devices)
        return torch.stack([self.transform_smashed(row, round=round, device=d) for row, d in rows])

    def transform_grad_group(self, grad: torch.Tensor, *, round: int, devices: Sequence[int]) -> torch.Tensor:
        """:meth:`transform_grad` for a group of devices at once (see :meth:`transform_smashed_group`)."""
        if not overrides(self, "transform_grad"):
            return grad
        rows = zip(grad.unbind(), devices)
        return torch.stack([self.transform_grad(row, round=round, device=d) for row, d in rows])

    def loss_term(
        self, inputs: torch.Tensor, smashed: torch.Tensor, *, round: int, device: int
    ) -> torch.Tensor | None:
        """An extra scalar loss for the device's client part, or None (default)."""
        return None

    def report(self) -> dict[str, float]:
        """Figures to record (for example epsilon); empty by default."""
        return {}

    def state_dict(self) -> dict[str, object]:
        """State to checkpoint (for example a noise generator); empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned."""


def overrides(defense: Defense, hook: str) -> bool:
    """True if ``defense``'s class replaces the base class's hook ``hook`` (the identity)."""
    return getattr(type(defense), hook) is not getattr(Defense, hook)


def check_compatible(defenses: Iterable[tuple[str, type[Defense] | Defense]], field: str = "defense.use") -> None:
    """Raise :class:`ConfigError` on ``field`` if two of the named defenses declare each other
    incompatible (``Defense.incompatible_with``)."""
    items = list(defenses)
    names = [n for n, _ in items]
    for i, (a, da) in enumerate(items):
        for b, db in items[i + 1:]:
            reason = da.incompatible_with.get(b) or db.incompatible_with.get(a)
            if reason:
                raise ConfigError(field, names, f"defenses that can be combined; drop {a} or {b}", reason)


class DefenseStack(Defense):
    """Several defenses applied in order, behaving as one.

    Raises:
        ConfigError: two of ``defenses`` declare each other incompatible.
    """

    name = "stack"

    def __init__(self, defenses: Sequence[Defense] = ()) -> None:
        self.defenses = list(defenses)
        check_compatible([(d.name, d) for d in self.defenses])

    def prepare_model(self, model: nn.Module) -> nn.Module:
        for d in self.defenses:
            model = d.prepare_model(model)
        return model

    def sample_rates(self, context: DefenseContext) -> tuple[float, ...] | None:
        wanted = {(d.name, r) for d in self.defenses if (r := d.sample_rates(context)) is not None}
        if len({r for _, r in wanted}) > 1:
            raise ConfigError("defense.use", [d.name for d in self.defenses], "defenses that agree on how "
                              "devices sample their batches", "each asks for different Poisson sampling rates")
        return next(iter(wanted))[1] if wanted else None

    def prepare(self, context: DefenseContext) -> None:
        for d in self.defenses:
            d.prepare(context)

    def wrap_client(self, module: nn.Module, *, device: int) -> nn.Module:
        for d in self.defenses:
            module = d.wrap_client(module, device=device)
        return module

    def unwrap_client(self, module: nn.Module, *, device: int) -> nn.Module:
        for d in reversed(self.defenses):
            module = d.unwrap_client(module, device=device)
        return module

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, *, device: int) -> torch.optim.Optimizer:
        for d in self.defenses:
            optimizer = d.wrap_optimizer(optimizer, device=device)
        return optimizer

    def transform_smashed(self, smashed: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        for d in self.defenses:
            smashed = d.transform_smashed(smashed, round=round, device=device)
        return smashed

    def transform_grad(self, grad: torch.Tensor, *, round: int, device: int) -> torch.Tensor:
        # The gradient travels back down the stack, so the defense nearest the wire sees it first.
        for d in reversed(self.defenses):
            grad = d.transform_grad(grad, round=round, device=device)
        return grad

    def transform_smashed_group(self, smashed: torch.Tensor, *, round: int, devices: Sequence[int]) -> torch.Tensor:
        for d in self.defenses:
            smashed = d.transform_smashed_group(smashed, round=round, devices=devices)
        return smashed

    def transform_grad_group(self, grad: torch.Tensor, *, round: int, devices: Sequence[int]) -> torch.Tensor:
        for d in reversed(self.defenses):
            grad = d.transform_grad_group(grad, round=round, devices=devices)
        return grad

    def loss_term(
        self, inputs: torch.Tensor, smashed: torch.Tensor, *, round: int, device: int
    ) -> torch.Tensor | None:
        terms = [d.loss_term(inputs, smashed, round=round, device=device) for d in self.defenses]
        terms = [t for t in terms if t is not None]
        return torch.stack(terms).sum() if terms else None

    def report(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for d in self.defenses:
            out.update({f"{d.name}.{k}": v for k, v in d.report().items()})
        return out

    def state_dict(self) -> dict[str, object]:
        return {str(i): d.state_dict() for i, d in enumerate(self.defenses)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        for i, d in enumerate(self.defenses):
            d.load_state_dict(state.get(str(i), {}))  # type: ignore[arg-type]
