"""The attack protocol: threat models, what an attack may see, and what it returns.

Every attack declares a :class:`ThreatModel` (docs/design.md section 4): where the attacker sits,
which records it observes, and what else it knows. The audit runner enforces it in one place:
:func:`observe` strips every field of the tap's records that the threat model does not grant, and
:func:`make_context` hands the attack only the model access and auxiliary data it is entitled to.
Ground truth (:class:`~hasfl_sec.sfl.protocol.GroundTruth`) never reaches an attack; metrics compare
the attack's :class:`Reconstruction` with it afterwards (Breaching's separation of
``true_user_data``).
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from ..defenses.base import Defense
from ..defenses.params import check_values
from ..errors import ConfigError
from ..sfl.protocol import Exchange, Key, Upload

__all__ = ["ThreatModel", "Observations", "AttackContext", "Reconstruction", "Attack", "observe", "make_context",
           "OBSERVABLE"]

#: What a tap records and an attacker may be granted.
OBSERVABLE = frozenset({"smashed", "labels", "grad", "uploads"})
POSITIONS = ("edge-server", "fed-server")


@dataclass(frozen=True)
class ThreatModel:
    """What an attacker knows and sees.

    Attributes:
        position: ``edge-server`` (sees every exchange) or ``fed-server`` (sees client uploads).
        observes: subset of :data:`OBSERVABLE`.
        client_architecture: knows the client part's architecture.
        client_weights: knows the client part's current weights (white-box).
        auxiliary_samples: number of auxiliary samples from the data distribution (0 = none).
        query_access: may run the client part on inputs of its choice (black-box).
        sybil: controls a participating device holding its own labelled data, so it can push
            labelled inputs through the same split step as the victim and see the cut-layer
            gradients they get back (the colluding-client setting of similarity-based label
            inference, Liu & Lyu, IEEE TIFS 2024). Needs ``auxiliary_samples`` for the data.
        knows_defense: an adaptive attacker: knows the devices' defense and its parameters (not
            the victims' random draws) and may simulate it on its own data
            (:mod:`hasfl_sec.attacks.adaptive`).
        active: departs from the protocol during training (a malicious edge server that alters
            the gradients it returns, docs/design.md section 4), rather than only observing.
    """

    position: str
    observes: frozenset[str]
    client_architecture: bool = False
    client_weights: bool = False
    auxiliary_samples: int = 0
    query_access: bool = False
    sybil: bool = False
    knows_defense: bool = False
    active: bool = False

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise ValueError(f"position {self.position!r}; valid: {', '.join(POSITIONS)}")
        unknown = set(self.observes) - OBSERVABLE
        if unknown:
            raise ValueError(f"observes {sorted(unknown)}; valid: {', '.join(sorted(OBSERVABLE))}")
        if self.client_weights and not self.client_architecture:
            raise ValueError("knowing the client weights implies knowing its architecture")
        if self.sybil and not self.auxiliary_samples:
            raise ValueError("a sybil device needs auxiliary (labelled) samples of its own")

    def describe(self) -> str:
        """One line for reports, printed next to the attack's numbers."""
        knows = [k for k, v in (("architecture", self.client_architecture), ("weights", self.client_weights),
                                ("query access", self.query_access), ("a sybil device", self.sybil),
                                ("the defense", self.knows_defense)) if v]
        if self.auxiliary_samples:
            knows.append(f"{self.auxiliary_samples} auxiliary samples")
        position = f"{self.position} (active)" if self.active else self.position
        return (f"{position}; observes {', '.join(sorted(self.observes))}; "
                f"knows {', '.join(knows) if knows else 'nothing else'}")


@dataclass(frozen=True)
class Observations:
    """What the attacker's position lets it see: exchanges (fields nulled as needed) and uploads."""

    exchanges: tuple[Exchange, ...]
    uploads: tuple[Upload, ...] = ()


def observe(exchanges: Sequence[Exchange], uploads: Sequence[Upload], threat: ThreatModel) -> Observations:
    """The records as ``threat`` may see them: ungranted fields become None, uploads only if granted.

    This is the single place where the threat model is enforced on recorded data.
    """
    grants = threat.observes
    kept = tuple(
        dataclasses.replace(
            e,
            smashed=e.smashed if "smashed" in grants else None,
            labels=e.labels if "labels" in grants else None,
            grad=e.grad if "grad" in grants else None,
            meta={},  # e.g. the device's loss: not something the server is given
        )
        for e in exchanges
    )
    return Observations(kept, tuple(uploads) if "uploads" in grants else ())


@dataclass
class AttackContext:
    """Model access and side information, filled only as far as the threat model grants.

    Attributes:
        input_shape, num_classes: public facts about the task.
        cut, victim: the cut and the id of the device under attack.
        client_model: the client part with its weights (white-box), else None.
        client_template: the client part's architecture, freshly initialised, else None.
        query: runs the client part on attacker-chosen inputs (black-box), else None.
        auxiliary: auxiliary inputs from the data distribution, else None.
        auxiliary_labels: their labels (the attacker's own labelled data), else None.
        sybil_grad: ``(x, y) -> g`` runs a sybil device's labelled batch through the victim's split
            step (same cut, same current weights) and returns the cut-layer gradient the server sends
            back, shape ``[b, *smashed]``; granted by ``ThreatModel.sybil``, else None. Called as
            ``sybil_grad(x, y, defense=d)`` the sybil's uplink passes through
            ``d.transform_smashed`` and its gradient through ``d.transform_grad``, as a victim's do.
        defense: the attacker's own copy of the devices' defense (seeded apart from the victims'),
            granted by ``ThreatModel.knows_defense`` when the run has a defense, else None.
        client_optimizer: the public training hyper-parameters of the client part
            (``lr``, ``momentum``, ``weight_decay`` of its SGD), always given.
        device, generator: where to compute and the attack's own random stream.
    """

    input_shape: tuple[int, ...]
    num_classes: int
    cut: int
    victim: int = 0
    client_model: nn.Module | None = None
    client_template: nn.Module | None = None
    query: Callable[[torch.Tensor], torch.Tensor] | None = None
    auxiliary: torch.Tensor | None = None
    auxiliary_labels: torch.Tensor | None = None
    sybil_grad: Callable[..., torch.Tensor] | None = None
    defense: Defense | None = None
    client_optimizer: dict[str, float] = field(default_factory=lambda: {"lr": 0.05, "momentum": 0.0,
                                                                         "weight_decay": 0.0})
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    generator: torch.Generator = field(default_factory=torch.Generator)


def make_context(threat: ThreatModel, *, client: nn.Module, fresh_client: Callable[[], nn.Module],
                 input_shape: tuple[int, int, int], num_classes: int, cut: int, victim: int = 0,
                 auxiliary: torch.Tensor | None = None, auxiliary_labels: torch.Tensor | None = None,
                 sybil_grad: Callable[..., torch.Tensor] | None = None, defense: Defense | None = None,
                 client_optimizer: dict[str, float] | None = None, device: torch.device | str = "cpu",
                 seed: int = 0) -> AttackContext:
    """An :class:`AttackContext` with exactly what ``threat`` grants.

    ``client`` is the real client part (never handed over unless the weights are granted);
    ``fresh_client`` builds an untrained copy of its architecture; ``sybil_grad`` is the runner's
    split step for a sybil device (handed over only if ``threat.sybil``); ``defense`` is the
    attacker's copy of the devices' defense (handed over only if ``threat.knows_defense``).
    """
    device = torch.device(device)
    frozen = copy.deepcopy(client).to(device).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)

    def query(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return frozen(x.to(device))

    if threat.sybil and sybil_grad is None:
        raise ConfigError("attack.sybil", None, "a sybil split step (the run must let the attacker join as a device)")
    if threat.auxiliary_samples and (auxiliary is None or len(auxiliary) < threat.auxiliary_samples):
        have = 0 if auxiliary is None else len(auxiliary)
        raise ConfigError("attack.auxiliary_samples", have, f"at least {threat.auxiliary_samples} auxiliary samples")
    gen = torch.Generator()
    gen.manual_seed(seed)
    return AttackContext(
        input_shape=input_shape, num_classes=num_classes, cut=cut, victim=victim,
        client_model=frozen if threat.client_weights else None,
        client_template=fresh_client().to(device) if threat.client_architecture else None,
        query=query if threat.query_access else None,
        auxiliary=auxiliary[: threat.auxiliary_samples] if threat.auxiliary_samples else None,
        auxiliary_labels=(auxiliary_labels[: threat.auxiliary_samples]
                          if threat.auxiliary_samples and auxiliary_labels is not None else None),
        sybil_grad=sybil_grad if threat.sybil else None,
        defense=defense if threat.knows_defense else None,
        client_optimizer=dict(client_optimizer or {"lr": 0.05, "momentum": 0.0, "weight_decay": 0.0}),
        device=device, generator=gen,
    )


@dataclass
class Reconstruction:
    """What an attack recovered, aligned with the exchanges it was given.

    Attributes:
        keys: the (round, device, step) of each reconstructed sample's exchange.
        positions: the sample's position inside that exchange's batch.
        inputs: reconstructed inputs ``[n, C, H, W]`` in [0, 1] (text: token ids ``[n, T]``), or None.
        labels: inferred labels ``[n]``, or None; ``label_scores`` ``[n, K]`` when available.
        stats: free-form per-attack figures (final loss, iterations, ...).
    """

    keys: list[Key]
    positions: list[int]
    inputs: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    label_scores: torch.Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_images(cls, exchanges: Sequence[Exchange], images: Sequence[torch.Tensor],
                    input_shape: tuple[int, ...], **stats: Any) -> "Reconstruction":
        """One reconstructed input batch per exchange (images ``[b, C, H, W]``, or token ids
        ``[b, T]`` for text), keyed by exchange and position in its batch."""
        keys = [ex.key for ex, batch in zip(exchanges, images) for _ in range(len(batch))]
        positions = [k for batch in images for k in range(len(batch))]
        inputs = torch.cat([b.cpu() for b in images]) if images else torch.empty(0, *input_shape)
        return cls(keys, positions, inputs=inputs, stats=dict(stats))


class Attack(ABC):
    """Base class. Subclasses set ``name``, ``threat_model``, ``Params`` and implement :meth:`reconstruct`.

    ``unit`` says what one call of :meth:`reconstruct` covers, so the audit runner can group the
    records and give the right client weights: ``"round"`` -- one device's exchanges of one round,
    with the client weights in use during that round; ``"period"`` -- one device's exchanges over an
    aggregation period of I rounds plus its upload at the period's end, with the client weights
    broadcast at the period's start (what the fed server itself sent); ``"trace"`` -- all of one
    device's recorded exchanges at once (for attacks that use no client weights, e.g. one clone
    learnt from every batch the server saw).
    ``recovers`` is ``"inputs"`` or ``"labels"``; ``modality`` is ``"image"`` or ``"text"``.

    An attack that can adapt to a known defense has a ``Params.adaptive`` flag (default True);
    the instance's ``threat_model.knows_defense`` follows it, and :meth:`adapts_to` says whether
    knowing a given defense changes anything the attack computes.
    """

    name: ClassVar[str] = "attack"
    threat_model: ClassVar[ThreatModel]
    Params: ClassVar[type] = object
    unit: ClassVar[str] = "round"
    recovers: ClassVar[str] = "inputs"
    #: What the task's inputs are: ``"image"`` or ``"text"`` (token ids).
    modality: ClassVar[str] = "image"

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()
        # An attack whose Params choose how much auxiliary data it uses declares exactly that much.
        wanted = getattr(self.params, "auxiliary_samples", None)
        if wanted is not None and wanted != self.threat_model.auxiliary_samples:
            self.threat_model = dataclasses.replace(type(self).threat_model, auxiliary_samples=int(wanted))
        adaptive = getattr(self.params, "adaptive", None)
        if adaptive is not None and bool(adaptive) != self.threat_model.knows_defense:
            self.threat_model = dataclasses.replace(self.threat_model, knows_defense=bool(adaptive))

    @classmethod
    def check_params(cls, values: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
        """``values`` as valid ``Params`` fields, converted to their types: unknown names refused
        with the known ones listed, each value type-checked against the field's hint and
        range-checked against what the field declares (:mod:`hasfl_sec.defenses.params`);
        errors name ``<prefix><attack>.<param>``."""
        return check_values(cls.Params, values, f"{prefix}{cls.name}.", cls.name)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None = None) -> "Attack":
        """Build with ``Params`` from a dict, checked by :meth:`check_params`."""
        return cls(cls.Params(**cls.check_params(values, "attack.")))

    def applies(self, context: AttackContext) -> str | None:
        """None if the attack can run in ``context``, else why not (e.g. a binary-only attack on a
        10-class task, an image attack on text); the runner then skips it and says so. Overrides
        add their own conditions to this one."""
        text = len(context.input_shape) == 1  # (context,) token ids; images are (C, H, W)
        if (self.modality == "text") != text:
            return f"{self.name} is an attack on {self.modality} data; this task is {'text' if text else 'images'}"
        return None

    def adapts_to(self, defense: Defense | None) -> bool:
        """True if this attack, told ``defense``, computes anything differently than without it.

        False by default (an attack without ``Params.adaptive``); the audit runs an adaptive
        variant of an attack only where this is True, since otherwise it would repeat the plain one.
        """
        return False

    def fit(self, context: AttackContext) -> None:
        """Prepare with side information (e.g. train a decoder on auxiliary data); default no-op."""

    @abstractmethod
    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        """Recover private inputs and/or labels from ``observations``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"
