"""The HASFL split-federated trainer (docs/hasfl.md section 1.2).

N devices, one edge server, one fed server. Device i holds blocks ``[0, c_i)`` of its own copy of
the model; the edge server holds, per device, the *non-common* blocks ``[c_i, L_c)`` and one
*common* sub-model ``[L_c, L)`` shared by all devices, where ``L_c = max_i c_i``.

One round t (one mini-batch step per device):

1. each device draws b_i samples and runs its client part -> smashed data (uplink defenses apply);
2. smashed data and labels go to the edge server, which runs each device's non-common part and
   the common part, and back-propagates the loss;
3. the common part takes one SGD step on the weighted average of the devices' gradients (this is
   the per-round common-model aggregation, step a6: with SGD, averaging replicas after one step
   equals one step on the averaged gradient);
4. the cut-layer gradient goes back to each device (downlink defenses apply), which
   back-propagates through its client part and steps its own optimizer;
5. every I rounds the fed server averages, layer by layer, all N copies of blocks ``[0, L_c)``:
   client parts from the devices and non-common parts from the edge server.

The arithmetic of steps 1-4 runs in an *execution* (:mod:`.execution`, ``train.execution``):
``batched`` (the default) runs the devices that share a cut and a batch size as one vectorized
computation, ``per-device`` runs one device at a time and is the reference; the trainer falls back
to it where the batched execution cannot run, and says why once in the log.

Weights are 1/N (the paper's objective) or proportional to local data size. Momentum buffers,
when momentum is used, stay per device and are not averaged. The trainer knows nothing about
attacks: observers (the cut-layer tap) receive each exchange and upload through
:meth:`SFLTrainer.add_observer`, and a malicious edge server or a device's detector acts through
the protocols of :mod:`.parties` (``parties=``; honest by default).

Batches have b_i samples unless a defense asks for Poisson sampling (DP-SGD): each sample is then
in the batch with probability q_i, and a batch may be empty. A device's loss is the mean over the
batch it drew; an empty device adds nothing to the common part's gradient, still steps its (DP)
optimizer, is skipped by observers and has a NaN loss, which the round's training loss ignores.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..data.datasets import ImageDataset
from ..defenses.base import Defense, DefenseContext, DefenseStack
from ..models import SplitModel
from .batched import BatchedExecution  # noqa: F401  (registers the batched execution)
from .execution import EXECUTIONS, FALLBACK, Execution, Layout, RoundOutput
from .parties import HONEST, Parties
from .perdevice import PerDeviceExecution  # noqa: F401  (registers the reference execution)
from .plan import Plan
from .protocol import Exchange, GroundTruth, Upload
from .rounds import Clock, RoundRecord
from .sampler import DeviceSampler
from .tap import Observer, ObserverHandle

__all__ = ["SFLTrainer"]

logger = logging.getLogger(__name__)

#: Fallback reasons already logged in this process (the log says each once).
_FALLBACKS_LOGGED: set[str] = set()


class SFLTrainer:
    """Real split-federated training under a :class:`Plan`, with a simulated clock.

    Args:
        model: the initialised split-able model (copied; the argument is not modified).
        dataset: train/test tensors.
        parts: train indices of each device.
        plan: per-device batch sizes and cuts.
        train: loop settings (rounds, lr, aggregation interval, evaluation schedule).
        seed: seeds the per-device samplers.
        clock: simulated seconds of round t under a plan (split training, plus aggregation when
            t % I == 0).
        device: torch device for computation.
        defenses: hooks applied at the exchange points (see :mod:`hasfl_sec.defenses.base`).
        replanner: called with round t every ``replan_every`` rounds (a multiple of I) to get the
            plan for the following rounds, e.g. the optimizer re-solved on the current rates.
        parties: a malicious edge server's behaviour and the devices' monitors
            (:mod:`.parties`); the default is the honest protocol.
    """

    def __init__(
        self,
        model: SplitModel,
        dataset: ImageDataset,
        parts: Sequence[np.ndarray],
        plan: Plan,
        train: TrainConfig,
        *,
        seed: int,
        clock: Clock,
        device: torch.device | str = "cpu",
        defenses: Sequence[Defense] = (),
        replanner: Callable[[int], Plan] | None = None,
        replan_every: int = 0,
        parties: Parties = HONEST,
    ) -> None:
        if len(parts) != plan.num_devices:
            raise ValueError(f"{len(parts)} data partitions for a plan of {plan.num_devices} devices")
        self.cfg = train
        self.clock = clock
        self.replanner = replanner
        self.replan_every = replan_every
        self.device = torch.device(device)
        self.defense = DefenseStack(defenses)
        self.parties = parties
        self.n = plan.num_devices

        self.x_train = dataset.x_train.to(self.device)
        self.y_train = dataset.y_train.to(self.device)
        self.x_test = dataset.x_test.to(self.device)
        self.y_test = dataset.y_test.to(self.device)
        self.samplers = [DeviceSampler(p, seed=seed, device=i) for i, p in enumerate(parts)]

        sizes = np.array([len(p) for p in parts], dtype=np.float64)
        weights = sizes / sizes.sum() if train.agg_weighting == "data" else np.full(self.n, 1.0 / self.n)
        self.weights = [float(w) for w in weights]
        self._part_sizes = tuple(len(p) for p in parts)
        self.execution: Execution | None = None
        # a defense may need another model (DP-SGD: no BatchNorm) before any copy of it exists
        self._model = self.defense.prepare_model(model)
        self._build(plan, list(copy.deepcopy(self._model).to(self.device).blocks))
        self.plan_history: list[tuple[int, Plan]] = [(0, plan)]

        self.observers: list[Observer] = []
        self.round = 0
        self.sim_time_s = 0.0
        self.wall_time_s = 0.0
        self.history: list[RoundRecord] = []

    def _build(self, plan: Plan, blocks: list[nn.Module]) -> None:
        """Lay the model's blocks out for ``plan``: N copies of [0, L_c), one common [L_c, L)."""
        if self.execution is not None:
            self.execution.close()  # defenses unwrap the old layout's clients first
        self.plan = plan
        self.l_c = plan.deepest_cut
        self.cuts = list(plan.cuts)
        self.batch_sizes = list(plan.batch_sizes)
        shared = nn.Sequential(*blocks[: self.l_c])
        # Every device starts from the same global model.
        self.copies: list[nn.Sequential] = [copy.deepcopy(shared) for _ in range(self.n)]
        self.common: nn.Sequential = nn.Sequential(*blocks[self.l_c :])
        self._eval_shared = copy.deepcopy(shared)
        self._eval_model = nn.Sequential(*self._eval_shared, *self.common)
        train = self.cfg
        context = DefenseContext(
            batch_sizes=tuple(self.batch_sizes), cuts=tuple(self.cuts), part_sizes=self._part_sizes,
            rounds=train.rounds, agg_interval=train.agg_interval, model=self._model)
        self.sample_rates = self.defense.sample_rates(context)
        self.defense.prepare(dataclasses.replace(context, sample_rates=self.sample_rates))
        layout = Layout(plan, self.copies, self.common, self.weights, self.sample_rates, self.parties)
        self.execution = self._execution(layout)(layout, self.defense, train, self.x_train, self.y_train)
        # after the execution: the batched one makes each device's parameters views of its stacks
        self.clients, self.noncommon = layout.clients, layout.noncommon

    def _execution(self, layout: Layout) -> type:
        """The execution ``train.execution`` names, or the per-device one where it cannot run
        (said once per reason in the log)."""
        chosen = EXECUTIONS.get(self.cfg.execution)
        reason = chosen.unsupported(layout, self.defense)
        if reason is None:
            return chosen
        if reason not in _FALLBACKS_LOGGED:
            _FALLBACKS_LOGGED.add(reason)
            logger.info("train.execution=%s cannot run this configuration (%s); using %s", self.cfg.execution,
                        reason, FALLBACK)
        return EXECUTIONS.get(FALLBACK)

    def replan(self, plan: Plan) -> None:
        """Switch to a new plan right after an aggregation round (all copies are then identical).

        The aggregated model is laid out again for the new cuts; optimizer state (momentum) restarts.
        """
        if self.round % self.cfg.agg_interval != 0:
            raise RuntimeError(f"replan at round {self.round}: only right after an aggregation round "
                               f"(a multiple of I = {self.cfg.agg_interval})")
        if plan.num_devices != self.n:
            raise ValueError(f"a plan for {plan.num_devices} devices, the trainer has {self.n}")
        self._build(plan, list(self.copies[0]) + list(self.common))
        self.plan_history.append((self.round, plan))

    # observers ------------------------------------------------------------------------------------
    def add_observer(self, observer: Observer) -> ObserverHandle:
        """Register an observer of exchanges and uploads; ``handle.remove()`` detaches it."""
        if observer in self.observers:
            raise RuntimeError("observer already attached")
        self.observers.append(observer)
        return ObserverHandle(self.observers, observer)

    def _observed(self, round: int, device: int, hook: str = "wants") -> list[Observer]:
        """Observers that want this record; an observer without the ``hook`` method wants all."""
        return [o for o in self.observers if getattr(o, hook, lambda r, d: True)(round, device)]

    # one round ------------------------------------------------------------------------------------
    def train_round(self) -> list[float]:
        """Run one round of split training (steps 1-4 above); returns each device's loss."""
        t = self.round + 1
        # evaluation switches the common blocks to eval mode (and nothing else does); only modules
        # out of train mode are walked, since walking N copies every round is slow
        for m in (*self.copies, *self.common):
            if not m.training:
                m.train()
        rates = self.sample_rates or (None,) * self.n
        batches = [s.draw(b, q).to(self.device) for s, b, q in zip(self.samplers, self.batch_sizes, rates)]
        out = self.execution.round(batches, t)
        self._report_exchanges(t, batches, out)
        return out.losses

    def _report_exchanges(self, t: int, batches: Sequence[torch.Tensor], out: RoundOutput) -> None:
        """Hand each device's exchange of round ``t`` (and its ground truth) to the observers that
        asked for it; a device whose batch was empty sent nothing."""
        for i, idx in enumerate(batches):
            observers = self._observed(t, i) if len(idx) else []
            if not observers:
                continue
            y = self.y_train[idx].cpu()
            sent = out.labels[i].cpu() if out.labels is not None else y  # a fake batch's labels, if any
            ex = Exchange(
                round=t, device=i, step=0, cut=self.cuts[i], smashed=out.sent[i].detach().cpu(),
                labels=sent if self.cfg.share_labels else None, grad=out.returned[i].detach().cpu(),
                meta={"loss": out.losses[i]},
            )
            truth = GroundTruth(t, i, 0, self.x_train[idx].cpu(), y, idx.cpu())
            for o in observers:
                o.on_exchange(ex, truth)

    # 5: fed-server aggregation -------------------------------------------------------------------
    @torch.no_grad()
    def aggregate(self) -> None:
        """Average blocks [0, L_c) across all N copies and hand the result back to every copy."""
        t = self.round + 1
        for i in range(self.n):
            observers = [o for o in self._observed(t, i, "wants_upload") if hasattr(o, "on_upload")]
            if observers:
                state = {k: v.detach().cpu().clone() for k, v in self.clients[i].state_dict().items()}
                for o in observers:
                    o.on_upload(Upload(t, i, self.cuts[i], state))
        self.execution.broadcast(self.execution.averaged())

    # evaluation ----------------------------------------------------------------------------------
    def global_model(self) -> nn.Sequential:
        """The aggregated model: averaged blocks [0, L_c) followed by the common part.

        Between aggregations this is the virtual averaged model of the convergence analysis.
        The returned module shares the common part with the trainer; do not train it.
        """
        with torch.no_grad():
            for p, avg in zip(self._eval_shared.parameters(), self.execution.averaged()):
                p.copy_(avg)
        return self._eval_model

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Test loss and accuracy of :meth:`global_model` (per character for text)."""
        model = self.global_model().eval()
        total_loss, correct = 0.0, 0
        for start in range(0, len(self.y_test), self.cfg.eval_batch_size):
            x = self.x_test[start : start + self.cfg.eval_batch_size]
            y = self.y_test[start : start + self.cfg.eval_batch_size]
            logits = model(x)
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        n = self.y_test.numel()  # per image, or per character of next-token targets [n, T]
        return total_loss / n, correct / n

    # the loop ------------------------------------------------------------------------------------
    def step(self) -> RoundRecord:
        """One full round: split training, aggregation when due, evaluation when scheduled."""
        t = self.round + 1
        start = time.perf_counter()
        losses = self.train_round()
        aggregated = t % self.cfg.agg_interval == 0
        if aggregated:
            self.aggregate()
        test_loss = test_acc = float("nan")
        if t % self.cfg.eval_every == 0 or t == self.cfg.rounds:
            test_loss, test_acc = self.evaluate()
        self.round = t
        self.sim_time_s += self.clock(t, self.plan)
        self.wall_time_s += time.perf_counter() - start
        record = RoundRecord(
            round=t, train_loss=self._train_loss(losses), test_loss=test_loss,
            test_accuracy=test_acc, sim_time_s=self.sim_time_s, wall_time_s=self.wall_time_s,
            aggregated=aggregated, device_losses=losses,
        )
        self.history.append(record)
        if self.replanner is not None and self.replan_every and t % self.replan_every == 0 and t < self.cfg.rounds:
            self.replan(self.replanner(t))
        return record

    def _train_loss(self, losses: Sequence[float]) -> float:
        """Weighted mean of the device losses; devices with an empty batch (NaN) are left out."""
        kept = [(w, v) for w, v in zip(self.weights, losses) if not math.isnan(v)]
        if len(kept) == len(losses):
            return float(np.dot(self.weights, losses))
        return float(sum(w * v for w, v in kept) / sum(w for w, _ in kept)) if kept else float("nan")

    def run(self, on_round_end: Callable[["SFLTrainer", RoundRecord], None] | None = None) -> list[RoundRecord]:
        """Train until ``cfg.rounds``; continues from :attr:`round` after a resume."""
        while self.round < self.cfg.rounds:
            record = self.step()
            if on_round_end is not None:
                on_round_end(self, record)
        return self.history

    # checkpointing -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (loadable with ``weights_only=True``)."""
        return {
            "plans": [(r, p.to_dict()) for r, p in self.plan_history],
            "round": self.round,
            "sim_time_s": self.sim_time_s,
            "wall_time_s": self.wall_time_s,
            "copies": [c.state_dict() for c in self.copies],
            "common": self.common.state_dict(),
            "execution": self.execution.name,
            **self.execution.state_dict(),
            "samplers": [s.state_dict() for s in self.samplers],
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "defense": self.defense.state_dict(),
            "history": [vars(r).copy() for r in self.history],
            # an honest run's checkpoint is as before parties existed
            **({} if self.parties.honest else {"parties": self.parties.state_dict()}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (re-laying the model out if the plan had changed)."""
        self.plan_history = [(int(r), Plan.from_dict(p)) for r, p in state["plans"]]
        if self.plan_history[-1][1] != self.plan:
            self._build(self.plan_history[-1][1], list(self.copies[0]) + list(self.common))
        for c, s in zip(self.copies, state["copies"]):
            c.load_state_dict(s)
        self.common.load_state_dict(state["common"])
        self._load_optimizers(state)
        for smp, s in zip(self.samplers, state["samplers"]):
            smp.load_state_dict(s)
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.defense.load_state_dict(state["defense"])
        self.parties.load_state_dict(state.get("parties", {}))
        self.round = int(state["round"])
        self.sim_time_s = float(state["sim_time_s"])
        self.wall_time_s = float(state["wall_time_s"])
        self.history = [RoundRecord(**r) for r in state["history"]]

    def _load_optimizers(self, state: dict[str, Any]) -> None:
        """The optimizer state of a checkpoint written by the same execution. One written by the
        other execution loads only when it holds no state (no momentum buffers): the layouts of
        the two executions' optimizer states differ."""
        written_by = state.get("execution", FALLBACK)  # checkpoints from before the batched execution
        if written_by == self.execution.name:
            self.execution.load_state_dict(state)
            return
        opt_states = [s for k, v in state.items() if k in ("client_opts", "server_opt", "batched_opt")
                      for s in (v if isinstance(v, list) else [v])]
        if any(s["state"] for s in opt_states):
            raise ValueError(f"this checkpoint was written with train.execution={written_by} and holds optimizer "
                             f"state (momentum) that train.execution={self.execution.name} cannot take; resume with "
                             f"--set train.execution={written_by}")
