"""SplitGuard: a device tests whether the server still trains its task (Erdogan, Kupcu and Cicek, WPES 2022).

An honest server's gradients depend on the labels it is sent: a batch whose labels were shifted
gets back gradients pointing elsewhere, and larger ones, than regular batches do. A hijacking
server (FSHA, Pasquini et al. 2021) ignores the labels, so fake and regular batches get back
alike gradients. After ``warmup`` regular batches, a device sends, with probability ``p_fake``
per round, a *fake* batch: its private images with the labels of a ``fake_fraction`` of them
shifted by one random offset in {1, ..., K-1} (mod K, so every shifted label is wrong). It never
steps on a fake batch's reply. It keeps the gradients its first layer's weight gets -- fake ones
in F, regular ones at random in R1 or R2 -- and after each fake batch scores

    S  = [theta(F, R) |m_F - m_R| - theta(R1, R2) |m_1 - m_2|] / (|m_F - m_R| + |m_1 - m_2|)
    SG = sigmoid(alpha * S) ** beta

where theta is the angle (radians) between the sets' mean gradients (R's mean is the average of
R1's and R2's), m_X the mean gradient norm of set X (m_R the average of m_1 and m_2), alpha = 5 and
beta = 2. Honest servers give SG near 1; a server that ignores labels gives S near 0, SG near
sigmoid(0)^2 = 0.25. These settings and the score are those of the authors' published code.

The warm-up is longer than the code's 20 batches: an untrained model's loss is the same for any
label, so fake and regular gradients then differ in direction only and scores against an honest
server sat near 0 for up to 40 rounds of SGD on the bundled digits (a single client on Adam, as in
the paper, learns faster); after 50 of the device's own rounds they had risen.

The decision rule is this toolkit's (the paper's could not be read, docs/privacy.md section 7b):
the device declares the server malicious when the median of its last ``window`` scores (5) falls
below ``threshold`` (0.75). The first scores rest on one or two regular gradients per set and
swing widely (honest devices scored 0.00 there on the bundled digits), which a median of five
absorbs; after them honest devices scored 0.86-1.00 and a hijacked one 0.15-0.89, mostly below
0.6. The rule was chosen on seeds 0-2 of that run and is evaluated on other seeds
(benchmarks/bench_fsha.py --part detectors). Each device keeps running sums, not the gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from ..seeding import torch_generator
from .params import check_fields, count, fraction, positive, rng_seed
from .registry import DETECTORS

__all__ = ["SplitGuard", "splitguard_score"]


@dataclass
class _Set:
    """Running mean of gradient vectors and of their norms."""

    total: torch.Tensor | None = None
    norms: float = 0.0
    n: int = 0

    def add(self, g: torch.Tensor) -> None:
        g = g.double()
        self.total = g.clone() if self.total is None else self.total + g
        self.norms += float(g.norm())
        self.n += 1

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.n

    @property
    def mean_norm(self) -> float:
        return self.norms / self.n

    def state(self) -> dict[str, Any]:
        return {"total": self.total, "norms": self.norms, "n": self.n}


def _angle(u: torch.Tensor, v: torch.Tensor) -> float:
    cos = float(u @ v / (u.norm() * v.norm()).clamp_min(1e-30))
    return math.acos(max(-1.0, min(1.0, cos)))


def _median(ordered: list[float]) -> float:
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def splitguard_score(fakes: _Set, r1: _Set, r2: _Set, alpha: float, beta: float) -> float:
    """The SG score of the module docstring from the three sets (each non-empty)."""
    regular = (r1.mean + r2.mean) / 2
    m_r = (r1.mean_norm + r2.mean_norm) / 2
    gap_fr, gap_12 = abs(fakes.mean_norm - m_r), abs(r1.mean_norm - r2.mean_norm)
    denom = gap_fr + gap_12
    if denom == 0:
        return math.nan  # no magnitude difference at all: no evidence either way (not scored)
    s = (_angle(fakes.mean, regular) * gap_fr - _angle(r1.mean, r2.mean) * gap_12) / denom
    return (1.0 / (1.0 + math.exp(-alpha * s))) ** beta


@dataclass
class _Device:
    generator: torch.Generator
    batches: int = 0
    fakes: _Set = field(default_factory=_Set)
    r1: _Set = field(default_factory=_Set)
    r2: _Set = field(default_factory=_Set)
    scores: list[tuple[int, float]] = field(default_factory=list)
    detected: int | None = None


@DETECTORS.register("splitguard", help="fake batches with shifted labels, compared with regular ones "
                                       "(Erdogan et al., WPES 2022)")
class SplitGuard:
    """A :class:`~hasfl_sec.sfl.parties.DeviceMonitor` running SplitGuard on each of ``devices``."""

    @dataclass
    class Params:
        p_fake: float = fraction(0.1)  # the authors' code: 0.1
        fake_fraction: float = fraction(1.0, one=True)  # b_F / b; the code shifts the whole batch
        warmup: int = count(50, low=0)  # N: regular batches before the first fake one (the code: 20)
        alpha: float = positive(5.0)
        beta: float = positive(2.0)
        threshold: float = fraction(0.75)  # between the honest (~1) and the hijacked (~0.25) levels
        window: int = count(5)
        seed: int = rng_seed(0)

    name = "splitguard"

    def __init__(self, params: "SplitGuard.Params | None", *, num_classes: int, devices: Iterable[int],
                 run_seed: int = 0) -> None:
        self.params = p = params if params is not None else self.Params()
        check_fields(p, "--detector-param splitguard.")
        self.num_classes = num_classes
        # one stream per device, from the detector's seed and the run's (each seed of a study its own draw)
        self.devices = {d: _Device(torch_generator(p.seed, "splitguard", run_seed, d)) for d in devices}

    def fake_labels(self, round: int, device: int, labels: torch.Tensor) -> torch.Tensor | None:
        st = self.devices.get(device)
        if st is None or len(labels) == 0:
            return None
        st.batches += 1
        if st.batches <= self.params.warmup or float(torch.rand(1, generator=st.generator)) >= self.params.p_fake:
            return None
        offset = int(torch.randint(1, self.num_classes, (1,), generator=st.generator))
        k = math.ceil(self.params.fake_fraction * len(labels))
        fake = labels.clone()
        fake[:k] = (labels[:k] + offset) % self.num_classes
        return fake

    def on_reply(self, round: int, device: int, grad: torch.Tensor, fake: bool, param_grad: torch.Tensor) -> None:
        st = self.devices.get(device)
        if st is None:
            return
        if fake:
            st.fakes.add(param_grad)
            if st.r1.n and st.r2.n:
                self._decide(round, st)
        elif st.batches > self.params.warmup:
            (st.r1 if float(torch.rand(1, generator=st.generator)) < 0.5 else st.r2).add(param_grad)

    def _decide(self, round: int, st: _Device) -> None:
        p = self.params
        score = splitguard_score(st.fakes, st.r1, st.r2, p.alpha, p.beta)
        if math.isnan(score):
            return
        st.scores.append((round, score))
        recent = sorted(s for _, s in st.scores[-p.window:])
        if st.detected is None and len(recent) == p.window and _median(recent) < p.threshold:
            st.detected = round

    def detected_round(self, device: int) -> int | None:
        """The round this detector declared ``device``'s server malicious, or None."""
        st = self.devices.get(device)
        return st.detected if st is not None else None

    def report(self) -> list[dict[str, Any]]:
        """One row per monitored device: detection round, fake batches sent, scores."""
        return [{"detector": self.name, "device": d, "detected_round": st.detected, "checks": st.fakes.n,
                 "last_score": st.scores[-1][1] if st.scores else None,
                 "mean_score": sum(s for _, s in st.scores) / len(st.scores) if st.scores else None}
                for d, st in sorted(self.devices.items())]

    def state_dict(self) -> dict[str, Any]:
        return {d: {"generator": st.generator.get_state(), "batches": st.batches, "fakes": st.fakes.state(),
                    "r1": st.r1.state(), "r2": st.r2.state(), "scores": list(st.scores), "detected": st.detected}
                for d, st in self.devices.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for d, s in state.items():
            st = self.devices[int(d)]
            st.generator.set_state(s["generator"])
            st.batches, st.scores, st.detected = s["batches"], list(s["scores"]), s["detected"]
            for name in ("fakes", "r1", "r2"):
                setattr(st, name, _Set(**s[name]))
