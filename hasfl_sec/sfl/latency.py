"""Per-round latency of HASFL split training (docs/hasfl.md sections 2.1-2.2).

Inputs are per-device: batch sizes b_i and the costs of each device's cut (:class:`CutCosts`,
per-sample FLOPs and bits as a model profile produces them), so this module does not depend on
the model code. With f_i, r_i^U, r_i^D from the :class:`~hasfl_sec.fleet.Fleet` and f_s the
server's FLOP/s, the per-stage latencies of device i are (AdaptSFL eqs. 16-24)::

    T_i^F   = b_i Phi^F_c / f_i                 client forward
    T_i^A   = b_i (Psi + label_bits) / r_i^U    smashed-data uplink (labels: 0 by default)
    T_{s,i} = b_i (Phi^F_s + Phi^B_s) / f_s     server forward + backward
    T_i^G   = b_i Psi / r_i^D                   gradient downlink
    T_i^B   = b_i Phi^B_c / f_i                 client backward
    T_i^U   = Delta / r_i^U,  T_i^D = Delta / r_i^D   client-model upload / download

and a round costs (two barriers, sequential server)::

    T_S = max_i(T_i^F + T_i^A) + sum_i T_{s,i} + max_i(T_i^G + T_i^B)
    T_A = max_i T_i^U + max_i T_i^D            paid every I rounds
    T(R) = R T_S + floor(R / I) T_A

Everything is vectorised with numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, check
from ..fleet import Fleet

__all__ = [
    "CutCosts",
    "StageLatencies",
    "RoundLatency",
    "stage_latencies",
    "round_latency",
    "training_latency",
    "elapsed_after",
]

_COST_FIELDS = (
    "client_fwd_flops",
    "client_bwd_flops",
    "server_fwd_flops",
    "server_bwd_flops",
    "smashed_bits",
    "client_model_bits",
)
_get_costs = attrgetter(*_COST_FIELDS)


@dataclass(frozen=True)
class CutCosts:
    """Costs of one cut. All per sample except ``client_model_bits``.

    Args:
        client_fwd_flops: Phi^F_c, client-side forward FLOPs per sample.
        client_bwd_flops: Phi^B_c, client-side backward FLOPs per sample.
        server_fwd_flops: Phi^F_s, server-side forward FLOPs per sample.
        server_bwd_flops: Phi^B_s, server-side backward FLOPs per sample.
        smashed_bits: Psi, bits of the cut-layer activations per sample (8 x bytes); the gradient
            sent back has the same size.
        client_model_bits: Delta, bits of the whole client-side sub-model.
    """

    client_fwd_flops: float
    client_bwd_flops: float
    server_fwd_flops: float
    server_bwd_flops: float
    smashed_bits: float
    client_model_bits: float

    def __post_init__(self) -> None:
        for name in _COST_FIELDS:
            value = getattr(self, name)
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            check(ok and math.isfinite(value) and value >= 0, f"costs.{name}", value, "a finite number >= 0")


@dataclass(frozen=True)
class StageLatencies:
    """Per-stage latencies in seconds, one array entry per device (docs/hasfl.md section 2.1)."""

    client_fwd: np.ndarray  # T_i^F
    uplink: np.ndarray  # T_i^A
    server: np.ndarray  # T_{s,i}
    downlink: np.ndarray  # T_i^G
    client_bwd: np.ndarray  # T_i^B
    model_up: np.ndarray  # T_i^U
    model_down: np.ndarray  # T_i^D

    @property
    def up_phase(self) -> np.ndarray:
        """T_i^F + T_i^A: when device i's smashed data has reached the server."""
        return self.client_fwd + self.uplink

    @property
    def down_phase(self) -> np.ndarray:
        """T_i^G + T_i^B: gradient download plus client backward."""
        return self.downlink + self.client_bwd

    def as_dict(self) -> dict[str, np.ndarray]:
        """Stage name -> array."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RoundLatency:
    """Latency of one round (docs/hasfl.md section 2.2), in seconds.

    ``split_round`` is T_S = uplink_barrier + server + downlink_barrier; ``aggregation`` is T_A,
    paid only in rounds where client-side aggregation happens. ``straggler_up`` and
    ``straggler_down`` are the indices of the devices that set the two barriers (first on ties).
    """

    uplink_barrier: float
    server: float
    downlink_barrier: float
    split_round: float
    aggregation: float
    stages: StageLatencies
    straggler_up: int
    straggler_down: int

    def to_dict(self) -> dict[str, Any]:
        """The scalar figures (stages left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stages"}


def _batch_array(batch_sizes: Sequence[int], n: int) -> np.ndarray:
    if isinstance(batch_sizes, (int, np.integer)) or np.ndim(batch_sizes) == 0:
        raise ConfigError("plan.batch_size", batch_sizes, f"a list of {n} values (one per device)")
    check(len(batch_sizes) == n, "plan.batch_size", len(batch_sizes), f"a list of {n} values (one per device)")
    b = np.asarray(batch_sizes)
    valid = "integers >= 1 (one per device)"
    if b.dtype.kind in "iu":
        bad = np.flatnonzero(b < 1)
    elif b.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(b) | (b < 1) | (b != np.floor(b)))
    else:  # bools, strings, objects
        bad = [i for i, v in enumerate(batch_sizes)
               if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1]
        if len(bad) == 0:
            b = b.astype(np.int64)
    if len(bad):
        i = int(bad[0])
        raise ConfigError("plan.batch_size", batch_sizes[i], valid, f"device {i}")
    return b.astype(float)


def _cost_matrix(costs: CutCosts | Sequence[CutCosts], n: int) -> np.ndarray:
    """(6, n) array of the cost fields; a single CutCosts is used for every device."""
    if isinstance(costs, CutCosts):
        return np.repeat(np.asarray(_get_costs(costs), dtype=float)[:, None], n, axis=1)
    check(len(costs) == n, "plan.cut", len(costs), f"a list of {n} cut costs (one per device)")
    try:
        return np.array([_get_costs(c) for c in costs], dtype=float).T
    except AttributeError:
        bad = next(i for i, c in enumerate(costs) if not isinstance(c, CutCosts))
        raise ConfigError("plan.cut", costs[bad], "CutCosts for every device", f"device {bad}") from None


def stage_latencies(
    fleet: Fleet,
    batch_sizes: Sequence[int],
    costs: CutCosts | Sequence[CutCosts],
    *,
    label_bits: float = 0.0,
) -> StageLatencies:
    """Per-stage latencies T_i^F, T_i^A, T_{s,i}, T_i^G, T_i^B, T_i^U, T_i^D of every device.

    Args:
        fleet: the devices and the server.
        batch_sizes: b_i, one integer >= 1 per device.
        costs: the cost of each device's cut, one per device (a single CutCosts = same cut for all).
        label_bits: bits per sample of the labels sent with the smashed data (docs/hasfl.md: negligible,
            default 0).
    """
    n = fleet.num_devices
    b = _batch_array(batch_sizes, n)
    cf, cb, sf, sb, psi, delta = _cost_matrix(costs, n)
    check(math.isfinite(label_bits) and label_bits >= 0, "label_bits", label_bits, "a finite number >= 0")
    f, r_up, r_down = fleet.flops, fleet.uplink_bps, fleet.downlink_bps
    return StageLatencies(
        client_fwd=b * cf / f,
        uplink=b * (psi + label_bits) / r_up,
        server=b * (sf + sb) / fleet.server_flops,
        downlink=b * psi / r_down,
        client_bwd=b * cb / f,
        model_up=delta / r_up,
        model_down=delta / r_down,
    )


def round_latency(
    fleet: Fleet,
    batch_sizes: Sequence[int],
    costs: CutCosts | Sequence[CutCosts],
    *,
    label_bits: float = 0.0,
) -> RoundLatency:
    """T_S (with its three parts), T_A and the two stragglers for one round (docs/hasfl.md 2.2)."""
    st = stage_latencies(fleet, batch_sizes, costs, label_bits=label_bits)
    up = st.up_phase
    down = st.down_phase
    i_up = int(np.argmax(up))
    i_down = int(np.argmax(down))
    uplink_barrier = float(up[i_up])
    server = float(st.server.sum())
    downlink_barrier = float(down[i_down])
    return RoundLatency(
        uplink_barrier=uplink_barrier,
        server=server,
        downlink_barrier=downlink_barrier,
        split_round=uplink_barrier + server + downlink_barrier,
        aggregation=float(st.model_up.max() + st.model_down.max()),
        stages=st,
        straggler_up=i_up,
        straggler_down=i_down,
    )


def _check_interval(interval: int) -> int:
    ok = isinstance(interval, (int, np.integer)) and not isinstance(interval, bool) and interval >= 1
    check(ok, "train.agg_interval", interval, "an integer >= 1")
    return int(interval)


def _check_time(value: float, name: str) -> float:
    check(isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and value >= 0,
          name, value, "a finite number of seconds >= 0")
    return float(value)


def elapsed_after(round_t: int, split_round_s: float, aggregation_s: float, interval: int) -> float:
    """Simulated time after round ``round_t`` (1-based; 0 = start).

    Aggregation happens at the end of every round t with t % I == 0, so the result is
    t T_S + floor(t / I) T_A.
    """
    ok = isinstance(round_t, (int, np.integer)) and not isinstance(round_t, bool) and round_t >= 0
    check(ok, "round", round_t, "an integer >= 0")
    interval = _check_interval(interval)
    t_s = _check_time(split_round_s, "split_round_s")
    t_a = _check_time(aggregation_s, "aggregation_s")
    return int(round_t) * t_s + (int(round_t) // interval) * t_a


def training_latency(split_round_s: float, aggregation_s: float, rounds: int, interval: int) -> float:
    """T(R) = R T_S + floor(R / I) T_A (docs/hasfl.md section 2.2)."""
    ok = isinstance(rounds, (int, np.integer)) and not isinstance(rounds, bool) and rounds >= 0
    check(ok, "train.rounds", rounds, "an integer >= 0")
    return elapsed_after(int(rounds), split_round_s, aggregation_s, interval)
