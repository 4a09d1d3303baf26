"""Why a plan's cuts: the predicted time to target if one device class moved to another cut.

HASFL chooses cuts by trading the latency model (a deeper cut computes more on the device and sends
less) against the convergence bound (a deeper cut puts more layers under periodic aggregation, so
more client-side drift; docs/hasfl.md sections 2-4). When a plan gives every device of a class the
same cut, this table says by how much each alternative would lose, and which side of the trade
decides it: for every device class and every allowed cut, the class's devices are moved to that cut
(their batch sizes kept, clipped to what their memory holds there) while every other device keeps
its plan, and the optimizer's own problem predicts the rounds, the round latency and their product,
the time to target. Ratios are against the plan as made (1 = the plan's own cut).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["cut_sensitivity"]


def cut_sensitivity(problem: Any, batch_sizes: Sequence[int], cuts: Sequence[int],
                    classes: Sequence[str]) -> list[dict[str, Any]]:
    """Rows ``device_class, cut, chosen, rounds, round_s, time_to_target_s`` and their ratios to the
    plan (``rounds_ratio``, ``round_s_ratio``, ``time_ratio``) for every class and allowed cut of
    ``problem`` (a :class:`~hasfl_sec.optimizer.Problem`). A cut no device of the class fits in
    memory, or whose plan misses the bound, has an infinite time."""
    b0, c0 = np.asarray(batch_sizes, dtype=int), np.asarray(cuts, dtype=int)
    base_rounds, base_round = problem.rounds(b0, c0), problem.round_latency(b0, c0).per_round_s
    base_time = base_rounds * base_round
    labels = np.asarray(classes, dtype=object)
    rows = []
    for cls in dict.fromkeys(classes):
        members = np.flatnonzero(labels == cls)
        for j, cut in enumerate(problem.cuts):
            b, c = b0.copy(), c0.copy()
            c[members] = cut
            b[members] = np.minimum(b[members], np.asarray(problem.mcap)[members, j])
            fits = bool((b[members] >= 1).all())
            rounds = problem.rounds(b, c) if fits else math.inf
            round_s = problem.round_latency(b, c).per_round_s if fits else math.inf
            time = rounds * round_s if math.isfinite(rounds) else math.inf
            rows.append({"device_class": cls, "cut": int(cut), "chosen": bool((c0[members] == cut).all()),
                         "rounds": rounds, "round_s": round_s, "time_to_target_s": time,
                         "rounds_ratio": rounds / base_rounds, "round_s_ratio": round_s / base_round,
                         "time_ratio": time / base_time})
    return rows
