"""The HASFL planning problem as plain numpy arrays (docs/hasfl.md section 4.1).

A :class:`Problem` holds, for every device i and every allowed cut c (column j of the arrays),
the per-sample latency coefficients of the round model in :mod:`hasfl_sec.sfl.latency`::

    a[i, j] = client_fwd / f_i + smashed_bits / rU_i       (up phase, per sample)
    g[i, j] = smashed_bits / rD_i + client_bwd / f_i       (down phase, per sample)
    s[i, j] = (server_fwd + server_bwd) / f_s              (sequential server work, per sample)
    up[i, j] = Delta / rU_i,  down[i, j] = Delta / rD_i     (client-model transfer, bits)

plus the memory cap ``mcap[i, j]`` (largest batch that fits; 0 = the cut does not fit at all) and
the bound constants k, D(c), epsilon, theta, gamma, I, b_max. The predicted time to target is::

    F(b, c) = R(b, c) (T_S(b, c) + T_A(c) / I)
    R(b, c) = 2 theta / (gamma (eps - k sum_i m[i, c_i] / b_i - D(L_c)))   (inf when the bracket <= 0)

``m`` is an optional (N, C) variance multiplier (default all ones: HASFL's bound exactly, and the
arithmetic stays bit-identical because every solver multiplies by it before summing). A
privacy-constrained problem (:mod:`.privacy`) sets m[i, c] = 1 + rho_c r_i(c)^2 for the noise
device i needs at cut c, masks the (device, cut) pairs no noise level makes private (memory cap
0), and attaches the chosen noise in ``privacy``.

The solver modules only see this class, so they need neither torch nor the model code.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, check
from ..sfl.plan import device_memory_bytes

__all__ = ["Problem", "RoundTime"]

log = logging.getLogger(__name__)

_COEFFS = ("a", "g", "s", "up", "down")
# A memory cap is only ever compared with b <= b_max; clipping keeps int64 arithmetic safe.
_MCAP_LIMIT = 2**40


@dataclass(frozen=True)
class RoundTime:
    """Latency of one round of a plan: T_S and T_A (paid every ``interval`` rounds)."""

    split_round_s: float
    aggregation_s: float
    interval: int

    @property
    def per_round_s(self) -> float:
        """T_S + T_A / I, the average cost of a round."""
        return self.split_round_s + self.aggregation_s / self.interval


def _int_param(value: Any, field: str, low: int) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low
    check(ok, field, value, f"an integer >= {low}")
    return int(value)


def _positive(value: Any, field: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    check(ok, field, value, "a finite number >= 0" if allow_zero else "a finite number > 0")
    return float(value)


@dataclass(frozen=True, eq=False)
class Problem:
    """Everything the planners need, as read-only numpy arrays.

    Args:
        a, g, s, up, down: (N, C) latency coefficients (see the module docstring), seconds.
        mcap: (N, C) integer memory cap: the largest batch device i can train at cut j.
        cuts: the C allowed cut values, strictly increasing (column j is cut ``cuts[j]``).
        drift: (C,) D(c) of the bound for each allowed cut.
        k: variance coefficient of the bound (``BoundConstants.variance_coeff``).
        epsilon: absolute convergence target.
        theta, gamma: initial optimality gap and learning rate of the bound.
        interval: aggregation interval I.
        b_max: largest batch size any device may use.
        memory_bytes: (N,) device memory, only used to word error messages.
        variance_mult: (N, C) multiplier m of each device's variance term at each cut (>= 0;
            None = all ones, the unconstrained bound).
        privacy: what a privacy-constrained problem chose per (device, cut)
            (:class:`~hasfl_sec.optimizer.privacy.PrivacyTerms`), carried for the solution; None
            for an unconstrained problem.
    """

    a: np.ndarray
    g: np.ndarray
    s: np.ndarray
    up: np.ndarray
    down: np.ndarray
    mcap: np.ndarray
    cuts: tuple[int, ...]
    drift: np.ndarray
    k: float
    epsilon: float
    theta: float
    gamma: float
    interval: int = 1
    b_max: int = 64
    memory_bytes: np.ndarray | None = None
    variance_mult: np.ndarray | None = None
    privacy: Any = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("b_max", _int_param(self.b_max, "optimizer.b_max", 1))
        set_("interval", _int_param(self.interval, "optimizer.interval", 1))
        cuts = tuple(int(c) for c in self.cuts)
        check(len(cuts) >= 1 and all(x < y for x, y in zip(cuts, cuts[1:])), "optimizer.cuts", list(cuts),
              "a non-empty, strictly increasing list of cut indices")
        set_("cuts", cuts)
        shape = np.shape(self.a)
        check(len(shape) == 2 and shape[0] >= 1 and shape[1] == len(cuts), "optimizer.problem.a", shape,
              f"an (N, {len(cuts)}) array, one column per allowed cut")
        for name in _COEFFS:
            arr = np.array(getattr(self, name), dtype=np.float64)
            check(arr.shape == shape and bool(np.all(np.isfinite(arr) & (arr >= 0))), f"optimizer.problem.{name}",
                  arr.shape, f"an {shape} array of finite numbers >= 0")
            arr.setflags(write=False)
            set_(name, arr)
        mcap = np.asarray(self.mcap)
        check(mcap.shape == shape and mcap.dtype.kind in "iuf" and bool(np.all(mcap >= 0))
              and bool(np.all(mcap == np.floor(mcap))), "optimizer.problem.mcap", mcap.shape,
              f"an {shape} array of integers >= 0")
        mcap = np.minimum(mcap, _MCAP_LIMIT).astype(np.int64)
        mcap.setflags(write=False)
        set_("mcap", mcap)
        drift = np.array(self.drift, dtype=np.float64).reshape(-1)
        check(drift.shape == (len(cuts),) and bool(np.all(np.isfinite(drift) & (drift >= 0))),
              "optimizer.problem.drift", drift.shape, f"{len(cuts)} finite numbers >= 0, one per allowed cut")
        drift.setflags(write=False)
        set_("drift", drift)
        set_("k", _positive(self.k, "optimizer.problem.k", allow_zero=True))
        set_("epsilon", _positive(self.epsilon, "optimizer.target"))
        set_("theta", _positive(self.theta, "optimizer.problem.theta"))
        set_("gamma", _positive(self.gamma, "optimizer.problem.gamma"))
        mult = np.ones(shape) if self.variance_mult is None else np.array(self.variance_mult, dtype=np.float64)
        check(mult.shape == shape and bool(np.all(np.isfinite(mult) & (mult >= 0))), "optimizer.problem.variance_mult",
              mult.shape, f"an {shape} array of finite numbers >= 0")
        mult.setflags(write=False)
        set_("variance_mult", mult)
        ub = np.minimum(mcap, self.b_max)
        ub.setflags(write=False)
        set_("ub", ub)
        self._check_memory()
        self._check_target()

    # ----------------------------------------------------------------------------- validation
    def _check_memory(self) -> None:
        """Every device must fit a batch of 1 at some allowed cut."""
        none_fit = np.flatnonzero(self.mcap.max(axis=1) < 1)
        if len(none_fit):
            i = int(none_fit[0])
            have = float(self.memory_bytes[i]) if self.memory_bytes is not None else 0.0
            raise ConfigError(f"fleet.devices[{i}].memory_bytes", have,
                              "enough memory for a batch of 1 at one of the allowed cuts",
                              f"device {i} fits no allowed cut {list(self.cuts)}; give it more memory "
                              "or allow shallower cuts")

    def variance_drift_floor(self) -> float:
        """The smallest k sum_i m_i/b_i + D(L_c) any plan reaches; eps must exceed it."""
        # With deepest cut j, device i's smallest term is min_{j' <= j} m[i, j'] / ub[i, j']
        # (with m = 1 this is 1 / max_{j' <= j} ub[i, j'], bit for bit: 1/x is monotone).
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.where(self.ub > 0, self.variance_mult / self.ub, np.inf)
        var = self.k * np.sum(np.minimum.accumulate(per, axis=1), axis=0)
        return float(np.min(var + self.drift))

    @property
    def noisy(self) -> bool:
        """Whether some variance multiplier differs from 1 (a privacy-constrained problem)."""
        return bool(np.any(self.variance_mult != 1.0))

    def _check_target(self) -> None:
        floor = self.variance_drift_floor()
        if not self.epsilon > floor:
            noise = "; the smashed-data noise of privacy.budget multiplies the variance term" if self.noisy else ""
            raise ConfigError(
                "optimizer.target", self.epsilon, f"an epsilon above {floor:.4g}",
                f"no plan can reach it: even the largest batches leave variance + drift >= {floor:.4g}; "
                f"use a looser target, a smaller aggregation interval I, a larger b_max or a smaller lr{noise}")

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_setup(cls, fleet: Any, profile: Any, bound: Any, *, epsilon: float, b_max: int = 64,
                   cuts: Sequence[int] | None = None, optimizer_copies: int = 2) -> "Problem":
        """Build the problem of a fleet, a measured model profile and bound constants.

        Args:
            fleet: a :class:`hasfl_sec.fleet.Fleet`.
            profile: a :class:`hasfl_sec.models.ModelProfile`.
            bound: :class:`hasfl_sec.planning.bound.BoundConstants` for this N, lr and I.
            epsilon: the absolute target (e.g. ``bound.epsilon(target_ratio)``).
            b_max: largest batch size.
            cuts: the allowed cuts (default: every legal cut of the profile).
            optimizer_copies: parameter copies the memory model charges (as ``device_memory_bytes``).
        """
        # Imported here: plan.py pulls in the torch model code, which the solver itself never needs.
        _int_param(b_max, "optimizer.b_max", 1)
        legal = tuple(cp.cut for cp in profile.cuts)
        chosen = legal if cuts is None else tuple(sorted({int(c) for c in cuts}))
        check(len(chosen) >= 1 and set(chosen) <= set(legal), "optimizer.cuts",
              list(cuts) if cuts is not None else None, f"a non-empty subset of the legal cuts {list(legal)}")
        n = fleet.num_devices
        check(bound.num_devices == n, "optimizer.bound.num_devices", bound.num_devices,
              f"{n} (the fleet's device count; k depends on N)")
        cps = [profile.cut(c) for c in chosen]
        col = lambda attr: np.array([float(getattr(cp, attr)) for cp in cps])[None, :]  # noqa: E731
        psi = 8.0 * col("smashed_bytes")
        delta = 8.0 * col("client_param_bytes")
        f = np.asarray(fleet.flops, dtype=float)[:, None]
        r_up = np.asarray(fleet.uplink_bps, dtype=float)[:, None]
        r_down = np.asarray(fleet.downlink_bps, dtype=float)[:, None]
        server = (col("server_fwd_flops") + col("server_bwd_flops")) / float(fleet.server_flops)
        mem = np.asarray(fleet.memory_bytes, dtype=float)
        mcap = _memory_caps(mem, chosen, profile, optimizer_copies, device_memory_bytes)
        need1 = np.array([device_memory_bytes(1, c, profile, optimizer_copies) for c in chosen])
        short = np.flatnonzero(mcap.max(axis=1) < 1)
        if len(short):
            i = int(short[0])
            raise ConfigError(f"fleet.devices[{i}].memory_bytes", float(mem[i]),
                              f">= {need1.min():.4g} bytes (a batch of 1 at the cheapest allowed cut)",
                              f"device {i} fits no allowed cut {list(chosen)}")
        return cls(
            a=col("client_fwd_flops") / f + psi / r_up,
            g=psi / r_down + col("client_bwd_flops") / f,
            s=np.broadcast_to(server, (n, len(chosen))).copy(),
            up=np.broadcast_to(delta / r_up, (n, len(chosen))).copy(),
            down=np.broadcast_to(delta / r_down, (n, len(chosen))).copy(),
            mcap=mcap, cuts=chosen, drift=np.array([bound.drift(c) for c in chosen]),
            k=bound.variance_coeff, epsilon=float(epsilon), theta=bound.theta, gamma=bound.lr,
            interval=bound.interval, b_max=b_max, memory_bytes=mem,
        )

    # ----------------------------------------------------------------------------- basics
    @property
    def num_devices(self) -> int:
        """N."""
        return int(self.a.shape[0])

    @property
    def num_cuts(self) -> int:
        """C, the number of allowed cuts."""
        return len(self.cuts)

    @property
    def scale(self) -> float:
        """2 theta / gamma, the numerator of R."""
        return 2.0 * self.theta / self.gamma

    def cut_index(self, cuts: Sequence[int]) -> np.ndarray:
        """Column indices of per-device cut values; :class:`ConfigError` for a cut not allowed."""
        c = np.asarray(cuts).reshape(-1)
        check(len(c) == self.num_devices, "plan.cut", list(c), f"{self.num_devices} cuts, one per device")
        idx = np.searchsorted(self.cuts, c)
        idx = np.minimum(idx, self.num_cuts - 1)
        bad = np.flatnonzero(np.asarray(self.cuts)[idx] != c)
        if len(bad):
            raise ConfigError("plan.cut", int(c[bad[0]]), self.cuts, f"device {int(bad[0])}")
        return idx.astype(np.int64)

    def _batch(self, b: Sequence[int]) -> np.ndarray:
        arr = np.asarray(b, dtype=np.float64).reshape(-1)
        check(len(arr) == self.num_devices and bool(np.all(arr >= 1)), "plan.batch_size", list(b),
              f"{self.num_devices} values >= 1, one per device")
        return arr

    # ----------------------------------------------------------------------------- evaluation
    def round_time_idx(self, b: np.ndarray, j: np.ndarray) -> RoundTime:
        """:class:`RoundTime` of batch sizes ``b`` and cut *indices* ``j``."""
        rows = np.arange(self.num_devices)
        split = (float(np.max(b * self.a[rows, j])) + float(np.sum(b * self.s[rows, j]))
                 + float(np.max(b * self.g[rows, j])))
        agg = float(np.max(self.up[rows, j]) + np.max(self.down[rows, j]))
        return RoundTime(split, agg, self.interval)

    def rounds_idx(self, b: np.ndarray, j: np.ndarray) -> float:
        """R(b, c) for cut indices ``j`` (inf when the bound's bracket is not positive)."""
        rows = np.arange(self.num_devices)
        inv = float(np.sum(self.variance_mult[rows, j] / b))
        margin = self.epsilon - self.k * inv - float(self.drift[int(np.max(j))])
        return self.scale / margin if margin > 0 else math.inf

    def fits_idx(self, b: np.ndarray, j: np.ndarray) -> bool:
        """Whether every b_i is an integer in [1, min(b_max, mcap_i(c_i))]."""
        rows = np.arange(self.num_devices)
        return bool(np.all((b >= 1) & (b <= self.ub[rows, j]) & (b == np.floor(b))))

    def objective_idx(self, b: np.ndarray, j: np.ndarray) -> float:
        """F(b, c) for cut indices ``j``; inf for a plan outside the domain or the bound."""
        if not self.fits_idx(b, j):
            return math.inf
        r = self.rounds_idx(b, j)
        return r * self.round_time_idx(b, j).per_round_s if math.isfinite(r) else math.inf

    def round_latency(self, b: Sequence[int], c: Sequence[int]) -> RoundTime:
        """T_S and T_A of the plan (batch sizes ``b``, cut values ``c``)."""
        return self.round_time_idx(self._batch(b), self.cut_index(c))

    def rounds(self, b: Sequence[int], c: Sequence[int]) -> float:
        """Predicted rounds R(b, L_c) to reach epsilon (inf when the plan cannot)."""
        return self.rounds_idx(self._batch(b), self.cut_index(c))

    def time_to_target(self, b: Sequence[int], c: Sequence[int]) -> float:
        """Exact F(b, c) of an integer plan; inf when it violates memory, b_max or the bound."""
        return self.objective_idx(self._batch(b), self.cut_index(c))

    def objective_many(self, b: np.ndarray, j: np.ndarray) -> np.ndarray:
        """F for K plans at once: ``b`` and cut indices ``j`` are (K, N) arrays; returns (K,)."""
        b = np.asarray(b, dtype=np.float64)
        j = np.asarray(j, dtype=np.int64)
        rows = np.arange(self.num_devices)[None, :]
        split = (np.max(b * self.a[rows, j], axis=1) + np.sum(b * self.s[rows, j], axis=1)
                 + np.max(b * self.g[rows, j], axis=1))
        agg = np.max(self.up[rows, j], axis=1) + np.max(self.down[rows, j], axis=1)
        margin = self.epsilon - self.k * np.sum(self.variance_mult[rows, j] / b, axis=1) - self.drift[np.max(j, axis=1)]
        ok = (margin > 0) & np.all((b >= 1) & (b <= self.ub[rows, j]), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.scale / margin * (split + agg / self.interval)
        return np.where(ok, out, np.inf)


def _memory_caps(mem: np.ndarray, cuts: Sequence[int], profile: Any, copies: int, need_fn: Any) -> np.ndarray:
    """(N, C) largest batch whose ``device_memory_bytes`` fits each device, consistent with it."""
    fixed = np.array([need_fn(0, c, profile, copies) for c in cuts])[None, :]
    per = np.array([need_fn(1, c, profile, copies) for c in cuts])[None, :] - fixed
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(per > 0, np.floor((mem[:, None] - fixed) / per), np.where(mem[:, None] >= fixed, _MCAP_LIMIT, 0))
    raw = np.clip(np.nan_to_num(raw, nan=0.0), 0, _MCAP_LIMIT)
    # The division can be off by one in floating point; fix it against the exact memory formula
    # so a planned batch never fails plan.check_memory.
    need = lambda b: fixed + b * per  # noqa: E731 -- the same affine form device_memory_bytes uses
    raw = np.where((raw < _MCAP_LIMIT) & (need(raw + 1) <= mem[:, None]), raw + 1, raw)
    raw = np.where((raw >= 1) & (need(raw) > mem[:, None]), raw - 1, raw)
    return raw.astype(np.int64)
