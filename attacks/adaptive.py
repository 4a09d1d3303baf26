"""What an adaptive attacker makes of a defense it knows.

An adaptive attacker knows which defense the devices apply and its parameters, but not the
victims' random draws (docs/privacy.md section 5, feature 8; the "attacker-aware" evaluation of ResSFL,
Li et al., CVPR 2022, and of Titcombe et al., ICLR-W 2021, whose decoders are trained on defended
smashed data). It simulates the defense on its own data with its own copy of the defense
(seeded apart from the victims', see :func:`hasfl_sec.defenses.build_defenses`).

Attacks use it in two ways:

* learning attacks (the inverse network, the sybil's reference gradients of the label attacks)
  apply :meth:`~hasfl_sec.defenses.base.Defense.transform_smashed` -- a fresh random draw each
  time -- so what they learn from has the victims' distribution;
* optimisation attacks (rMLE, UnSplit) match ``T(f(x))`` to the observation, with ``T`` the
  defense's *expected* transform (:func:`expected_transform`): for zero-mean additive noise after
  an optional clip that is the clip (the maximum-likelihood objective under Gaussian noise), for a
  deterministic transform (top-k, quantisation) the transform itself, back-propagated as the
  defense defines it (the devices back-propagate through it too: masked for top-k,
  straight-through for quantisation, Bengio, Leonard & Courville, arXiv:1308.3432).

The attacker simulates the defense as it acts on the victim's device (``device`` = the victim's
id), which matters for per-device parameters such as a list of noise levels; its copy's random
streams are seeded apart from the victims' whatever the device id.

This module only reads the defense protocol (:class:`~hasfl_sec.defenses.base.Defense`); it never
changes a defense.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..defenses.base import Defense, DefenseStack
from ..defenses.noise import SmashedNoise, clip_per_sample

__all__ = ["changes_smashed", "changes_grad", "expected_transform", "defend"]

#: Draws averaged by :func:`expected_transform` for a random transform it has no closed form for.
MEAN_DRAWS = 8

Transform = Callable[[torch.Tensor], torch.Tensor]


def _members(defense: Defense | None) -> list[Defense]:
    if defense is None:
        return []
    if isinstance(defense, DefenseStack):
        return [m for d in defense.defenses for m in _members(d)]
    return [defense]


def _overrides(defense: Defense, method: str) -> bool:
    return getattr(type(defense), method) is not getattr(Defense, method)


def changes_smashed(defense: Defense | None) -> bool:
    """True if some defense of ``defense`` transforms the smashed data a device sends."""
    return any(_overrides(d, "transform_smashed") and not d.is_identity() for d in _members(defense))


def changes_grad(defense: Defense | None) -> bool:
    """True if some defense of ``defense`` transforms the cut-layer gradient a device receives."""
    return any(_overrides(d, "transform_grad") for d in _members(defense))


def defend(defense: Defense | None, smashed: torch.Tensor, *, device: int = 0, round: int = 0) -> torch.Tensor:
    """``smashed`` as device ``device`` applying ``defense`` would send it (one random draw);
    identity for None."""
    if defense is None:
        return smashed
    return defense.transform_smashed(smashed, round=round, device=device)


def _expected_one(d: Defense, device: int) -> Transform | None:
    """The expected transform of one defense, or None if it is the identity."""
    if not _overrides(d, "transform_smashed") or d.is_identity():
        return None
    own = getattr(d, "expected_smashed", None)  # a defense may state its own expectation
    if callable(own):
        return own
    if isinstance(d, SmashedNoise):
        # zero-mean noise: E[clip(a) + n] = clip(a); without a clip the expectation is a itself.
        clip, norm = d.params.clip, getattr(d.params, "norm", "l2")
        return None if clip is None else (lambda a: clip_per_sample(a, clip, norm))

    def generic(a: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            probe = [d.transform_smashed(a.detach(), round=0, device=device) for _ in range(2)]
        if torch.equal(*probe):  # deterministic (top-k, quantisation): the transform itself
            return d.transform_smashed(a, round=0, device=device)
        # random without a closed form: a Monte-Carlo mean, each draw differentiable
        return torch.stack([d.transform_smashed(a, round=0, device=device) for _ in range(MEAN_DRAWS)]).mean(0)

    return generic


def observed(forward: Callable[[torch.Tensor], torch.Tensor], defense: Defense | None, *,
             device: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` followed by the defense's expected transform (:func:`expected_transform`): what
    an attacker who knows ``defense`` expects to observe; ``forward`` itself without one."""
    transform = expected_transform(defense, device=device)
    return forward if transform is None else (lambda x: transform(forward(x)))


def expected_transform(defense: Defense | None, *, device: int = 0) -> Transform | None:
    """``a -> E[T(a)]`` of the defenses in order, on device ``device``, differentiable in ``a``
    (as the defenses' transforms are); None if it is the identity.

    Known closed forms: the noise defense (its clip, or nothing); a defense with an
    ``expected_smashed(a)`` method states its own. Any other transform is probed on each call:
    a deterministic one (top-k, quantisation) is applied as it is, a random one averaged over
    :data:`MEAN_DRAWS` draws.
    """
    parts = [t for t in (_expected_one(d, device) for d in _members(defense)) if t is not None]
    if not parts:
        return None

    def apply(a: torch.Tensor) -> torch.Tensor:
        for t in parts:
            a = t(a)
        return a

    return apply
