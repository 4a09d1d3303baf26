"""Feature-space hijacking by a malicious edge server (FSHA; Pasquini, Ateniese and Bernaschi, CCS 2021).

The honest edge server returns to each device the gradient of the task loss at the cut. A
hijacking server returns instead the gradient of an adversarial loss that drives the device's
client part f into the feature space of a *pilot* network f~ the server trains on its own data,
together with a decoder f~^-1 that inverts it (section 3.1 of the paper). Once f has been steered
there, f~^-1(f(x)) reconstructs the device's private inputs from the smashed data alone.

Per step, with the device's smashed data z = f(x_priv) and a batch x_pub of the attacker's own
data (same distribution, disjoint from the victims'):

* reply to the device: the gradient of ``mean D(z)`` with respect to z (the device minimises its
  critic score, i.e. makes its features look like the pilot's);
* pilot and decoder: one step on ``mean (f~^-1(f~(x_pub)) - x_pub)^2``;
* critic D: one step on the Wasserstein loss ``mean D(f~(x_pub)) - mean D(z) + lambda * GP``
  with the gradient penalty of Gulrajani et al. (NeurIPS 2017) on interpolates of the two.

Each player's gradient is taken with :func:`torch.autograd.grad` with respect to that player's
parameters (or the device's z) only: no player's loss reaches another's ``.grad`` (a known bug
class of public ports, tests/test_fsha.py checks it network by network).

In SFL (docs/hasfl.md section 1.2) the server hijacks the devices chosen by ``devices`` from
``start_round`` on; with heterogeneous cuts it keeps one (pilot, decoder, critic) per distinct
cut, and all hijacked devices at one cut make one attacker step per round. ``task_on_others``
says whether the server still trains the task on the other devices (a hijacked device's batch
never trains it). The paper's MNIST settings are kept where they carry over -- Adam for the
attacker's networks, batch 64, gradient-penalty weight 500, a critic learning rate ten times the
pilot's -- but its learning rates (1e-5 and 1e-4) are for 10,000 iterations, while an SFL run has a
few hundred rounds: the defaults are 1e-3 and 1e-2 (both settable). Over 1,000 rounds of one
device the defaults oscillated after round 400 while the paper's rates fell steadily
(benchmarks/RESULTS.md): for long runs the paper's rates are the stronger attacker.
The device keeps its own optimizer (the run's SGD), so the attacker also chooses the scale of what
it returns, ``reply_scale`` (default 0.1): at 1 the game between the device and the critic
oscillated on the bundled digits, at 0.1 it converged (docs/privacy.md, "Active attacks", has the
measurements).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..defenses.params import check_fields, count, flag, nonnegative, positive, rng_seed
from ..errors import ConfigError
from ..seeding import derive_seed, isolated_rng, torch_generator
from .base import ThreatModel
from .hijack_nets import decoder, discriminator
from .registry import ACTIVE_ATTACKS

__all__ = ["FeatureSpaceHijacking", "Players", "gradient_penalty"]

logger = logging.getLogger(__name__)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator
                     ) -> torch.Tensor:
    """``mean (||grad D(mix)||_2 - 1)^2`` on random interpolates of paired rows (WGAN-GP, eq. 3)."""
    n = min(len(real), len(fake))
    eps = torch.rand((n,) + (1,) * (real.dim() - 1), generator=generator).to(real.device)
    mix = (eps * real[:n] + (1 - eps) * fake[:n]).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


@dataclass
class Players:
    """The attacker's networks at one cut and their optimizers."""

    shape: tuple[int, ...]  # of the smashed data at this cut, without the batch
    pilot: nn.Module
    decoder: nn.Module
    critic: nn.Module
    opt_pilot: torch.optim.Optimizer
    opt_critic: torch.optim.Optimizer

    def modules(self) -> dict[str, nn.Module]:
        return {"pilot": self.pilot, "decoder": self.decoder, "critic": self.critic}


@ACTIVE_ATTACKS.register("fsha", help="feature-space hijacking by a malicious edge server (Pasquini et al., CCS 2021)")
class FeatureSpaceHijacking:
    """A :class:`~hasfl_sec.sfl.parties.ServerBehaviour` that hijacks the devices' client parts.

    Args:
        params: the attack's settings (:class:`FeatureSpaceHijacking.Params`).
        public: the attacker's own inputs ``[n, C, H, W]`` in [0, 1] (disjoint from the victims').
        fresh_client: builds the client part up to a cut with fresh weights (the pilot's architecture).
        num_devices: N, to check ``devices``.
        device: where the attacker computes.
        run_seed: the run's seed, mixed with ``Params.seed`` into the attacker's random streams
            (its networks' initial weights, its batches), so that each seed of a study is its own draw.
    """

    @dataclass
    class Params:
        devices: list[int] | None = count(None, low=0, note="a list of device ids, or null for every device")
        start_round: int = count(1)  # the round the hijacking starts (the paper: from the first step)
        task_on_others: bool = flag(True)
        public_samples: int | None = count(None, low=2, note="or null for all the attacker's data")
        batch_size: int = count(64)
        lr_pilot: float = positive(1e-3)  # pilot and decoder, Adam (the paper's lr_tilde: 1e-5)
        lr_critic: float = positive(1e-2)  # the paper's lr_D: 1e-4 (ten times lr_tilde, kept)
        gradient_penalty: float = nonnegative(500.0)  # the paper's weight
        reply_scale: float = positive(0.1)
        width: int = count(64, high=4096)
        seed: int = rng_seed(0)

    name = "fsha"
    # the instance's threat model counts the attacker's own samples (the held-out split)
    threat_model = ThreatModel("edge-server", frozenset({"smashed", "labels"}), client_architecture=True, active=True)

    def __init__(self, params: "FeatureSpaceHijacking.Params | None", *, public: torch.Tensor,
                 fresh_client: Callable[[int], nn.Module], num_devices: int,
                 device: torch.device | str = "cpu", run_seed: int = 0) -> None:
        self.params = p = params if params is not None else self.Params()
        check_fields(p, "attack.fsha.")
        bad = [d for d in (p.devices or []) if d >= num_devices]
        if bad:
            raise ConfigError("attack.fsha.devices", p.devices, f"device ids below {num_devices}, the fleet's size")
        self.targets = frozenset(range(num_devices) if p.devices is None else p.devices)
        self.public = public[: p.public_samples].to(device)
        if len(self.public) < 2:
            raise ConfigError("attack.fsha.public_samples", len(self.public),
                              "at least 2 samples of the attacker's own")
        self.threat_model = dataclasses.replace(type(self).threat_model, auxiliary_samples=len(self.public))
        self.fresh_client = fresh_client
        self.device = torch.device(device)
        self.run_seed = run_seed
        self.generator = torch_generator(p.seed, "fsha", run_seed, "batches")
        self.players: dict[int, Players] = {}
        self._pending: dict[int, list[torch.Tensor]] = {}
        #: one row per round and cut: the players' losses (what the attacker itself can monitor)
        self.history: list[dict[str, float]] = []

    # the ServerBehaviour protocol (hasfl_sec.sfl.parties) ------------------------------------------
    def replaces(self, round: int, device: int) -> bool:
        return device in self.targets and round >= self.params.start_round

    def trains_task(self, round: int, device: int) -> bool:
        # before the hijacking starts the server is honest to everyone
        return not self.replaces(round, device) and (self.params.task_on_others or round < self.params.start_round)

    def reply(self, round: int, device: int, cut: int, smashed: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The gradient of the critic's mean score at the device's smashed data (and nothing else)."""
        if len(smashed) == 0:  # an empty batch (Poisson sampling): nothing to steer or learn from
            return torch.zeros_like(smashed)
        players = self.players_at(cut, tuple(smashed.shape[1:]))
        z = smashed.detach().to(self.device).requires_grad_(True)
        (g,) = torch.autograd.grad(players.critic(z).mean(), z)  # with respect to z only: no critic .grad
        self._pending.setdefault(cut, []).append(z.detach())
        return (g * self.params.reply_scale).to(smashed.device)

    def end_round(self, round: int) -> None:
        """One attacker step per cut that hijacked a batch this round."""
        for cut in sorted(self._pending):
            # what the pilot's forward passes draw (dropout) is the attacker's own, keyed by round
            with isolated_rng(derive_seed(self.params.seed, "fsha", self.run_seed, "step", round, cut)):
                losses = self.step(cut, torch.cat(self._pending[cut]))
            self.history.append({"round": round, "cut": cut, **losses})
        self._pending.clear()

    # the attacker's own training -------------------------------------------------------------------
    def players_at(self, cut: int, smashed_shape: tuple[int, ...]) -> Players:
        """The (pilot, decoder, critic) of ``cut``, built on first use from the attacker's seed."""
        if cut not in self.players:
            p = self.params
            # fresh weights from the attacker's seed, not the run's stream
            with isolated_rng(derive_seed(p.seed, "fsha", self.run_seed, "init", cut)):
                pilot = self.fresh_client(cut).to(self.device).train()
                dec = decoder(smashed_shape, tuple(self.public.shape[1:]), p.width).to(self.device)
                critic = discriminator(smashed_shape, p.width).to(self.device)
            with torch.no_grad():  # in eval mode: a shape check must not move running statistics
                out = tuple(pilot.eval()(self.public[:2]).shape[1:])
            pilot.train()
            if out != smashed_shape:
                raise ValueError(f"the pilot at cut {cut} outputs {list(out)}, the device sends {list(smashed_shape)}")
            tilde = [*pilot.parameters(), *dec.parameters()]
            self.players[cut] = Players(smashed_shape, pilot, dec, critic, torch.optim.Adam(tilde, lr=p.lr_pilot),
                                        torch.optim.Adam(critic.parameters(), lr=p.lr_critic))
        return self.players[cut]

    def step(self, cut: int, private: torch.Tensor) -> dict[str, float]:
        """One update of the pilot and decoder (reconstruction of public data) and of the critic
        (Wasserstein loss with gradient penalty between ``private`` and the pilot's features)."""
        pl = self.players[cut]
        idx = torch.randperm(len(self.public), generator=self.generator)[: self.params.batch_size]
        x_pub = self.public[idx.to(self.device)]
        z_pub = pl.pilot(x_pub)
        rec_loss = F.mse_loss(pl.decoder(z_pub), x_pub)
        tilde = [*pl.pilot.parameters(), *pl.decoder.parameters()]
        tilde_grads = torch.autograd.grad(rec_loss, tilde)
        fake = z_pub.detach()  # the critic's loss never reaches the pilot
        critic_loss = pl.critic(fake).mean() - pl.critic(private).mean()
        penalty = gradient_penalty(pl.critic, private, fake, self.generator)
        total = critic_loss + self.params.gradient_penalty * penalty
        critic_grads = torch.autograd.grad(total, list(pl.critic.parameters()))
        for params, grads, opt in ((tilde, tilde_grads, pl.opt_pilot),
                                   (list(pl.critic.parameters()), critic_grads, pl.opt_critic)):
            for q, g in zip(params, grads):
                q.grad = g.detach()
            opt.step()
        return {"public_reconstruction_mse": rec_loss.item(), "critic_loss": critic_loss.item(),
                "gradient_penalty": penalty.item(), "private_score": pl.critic(private).mean().item()}

    @torch.no_grad()
    def invert(self, cut: int, smashed: torch.Tensor) -> torch.Tensor | None:
        """f~^-1(z): the attacker's reconstruction of the inputs behind ``smashed`` at ``cut``
        (in [0, 1]), or None before the attacker has networks at that cut."""
        pl = self.players.get(cut)
        if pl is None:
            return None
        return pl.decoder(smashed.to(self.device)).cpu()

    # checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "players": {cut: {"smashed_shape": list(pl.shape),
                              **{k: m.state_dict() for k, m in pl.modules().items()},
                              "opt_pilot": pl.opt_pilot.state_dict(), "opt_critic": pl.opt_critic.state_dict()}
                        for cut, pl in self.players.items()},
            "generator": self.generator.get_state(),
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for cut, s in state["players"].items():
            pl = self.players_at(int(cut), tuple(s["smashed_shape"]))
            for k, m in pl.modules().items():
                m.load_state_dict(s[k])
            pl.opt_pilot.load_state_dict(s["opt_pilot"])
            pl.opt_critic.load_state_dict(s["opt_critic"])
        self.generator.set_state(state["generator"])
        self.history = list(state["history"])

