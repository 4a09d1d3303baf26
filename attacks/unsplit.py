"""UnSplit: model inversion with a cloned client part, knowing only its architecture.

Erdogan, Küpçü & Çiçek, "UnSplit: Data-Oblivious Model Inversion, Model Stealing, and Label
Inference Attacks Against Split Learning", WPES 2022 (arXiv:2108.09033), section 4. An
honest-but-curious server that sees the smashed data ``a = f_c(x; w)`` and knows the
architecture of the client part ``f_c`` but not its weights ``w`` solves, jointly for the inputs
and a clone ``w'`` of the weights::

    (x*, w'*) = argmin_{x in [0,1], w'} ||f_c(x; w') - a||^2 + lambda TV(x)

The paper alternates blocks of input steps and clone steps from a mid-grey input and a freshly
initialised clone (its code: 100 + 100 Adam steps at lr 1e-3, 1,000 times, with TV and an L2
penalty on x); the clone is shared by every sample, so it is also a stolen copy of the client
part. Threat model: edge server, observes smashed data, knows the client architecture only.

What this implementation changes, each inside that threat model (no weights, ground truth or
auxiliary data); the figures are from seeded runs on 16x16 digits:

* **Fine-grained alternation.** Input and clone take one Adam step each per iteration. With the
  same prior and learning rates, blocks of 20 + 20 steps reached SSIM ~0.37 at cut 2 where
  single alternating steps reach ~0.6, for the same number of passes.
* **A contrast-free TV prior, no L2 prior.** Our models normalise (GroupNorm) right after the
  first conv, so the client part is blind to the input's contrast: a plain TV (or L2) term is
  minimised by fading the image to flat grey at no matching cost. Each image's TV is divided by
  its standard deviation, which penalises texture but not contrast. The paper's L2 term, which
  also quietly prefers dark images, is dropped.
* **Polarity: mirrored twin starts, judged by the matching loss.** Negating the first
  conv/linear layer's weights and adding their sum to its bias gives a clone with
  ``f'(1 - x) = f(x)`` everywhere except where zero padding enters. Intensity-inverted solutions
  (x and 1 - x) are thus almost equally reachable, and a single run lands in either (at cut 1,
  two of six seeded single starts came out contrast-inverted, SSIM ~ -0.6). They do not fit
  equally well: the victim zero-pads its real inputs, and an inverted image cannot reproduce the
  border terms this leaves in the smashed data (at cut 1 the inverted runs ended with a matching
  loss of ~0.08 against ~0.003). So every start is run from both polarities (the clone and its mirror,
  inputs ``x0`` and ``1 - x0``) and the candidate with the lowest matching loss wins. No image
  prior on polarity (such as "dark background") is used.
* **Restarts with early selection.** The outcome depends mostly on the clone's random
  initialisation. ``restarts`` initialisations, each with its twin, all run ``probe_steps``
  iterations; only the one with the lowest matching loss runs on to ``steps``. After 200 steps
  the matching loss ranks the final SSIM well at cut 2 (Spearman rho ~ -0.86 over 24 candidates)
  but barely at cut 3 (~ -0.2), where the attack is correspondingly weaker and less stable.

Adaptive variant (``adaptive``, default True, when the defense is known): the clone's output goes
through the defense's expected transform before matching, ``||E[T(f'(x))] - a||``, as in rMLE
(:func:`hasfl_sec.attacks.adaptive.expected_transform`); identical to the plain attack for
zero-mean noise without a clip.

With the default Params, on the default CNN (``hecnn``, width 16) trained 60 rounds to 98% test
accuracy, batches of 16 digits gave a mean SSIM of 0.99 / 0.79 / 0.52 at cuts 1 / 2 / 3 (a
random image scores ~0.02), in about 4 / 11 / 14 s per batch on one CPU core.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..defenses.base import Defense
from ..defenses.params import count, flag, nonnegative, positive
from .adaptive import Transform, expected_transform
from .base import Attack, AttackContext, Observations, Reconstruction, ThreatModel
from .registry import ATTACKS

__all__ = ["UnSplit", "relative_total_variation", "mirror_first_layer"]


def relative_total_variation(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Per-image anisotropic TV (mean absolute neighbour difference) over the image's standard
    deviation, averaged over the batch: invariant to the image's contrast ``x -> a x + b``."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    return ((dh + dw) / x.flatten(1).std(1).clamp_min(eps)).mean()


def _first_layer(module: nn.Module) -> nn.Module | None:
    for m in module.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            return m
    return None


@torch.no_grad()
def mirror_first_layer(module: nn.Module) -> bool:
    """Make ``module`` compute on ``1 - x`` what it computed on ``x`` (away from zero padding).

    The first conv/linear layer's weights are negated and their sum over the input dimensions is
    added to its bias. Returns False (and leaves ``module`` untouched) if there is no such layer or
    it has no bias; the caller then treats the twin as one more random start.
    """
    layer = _first_layer(module)
    if layer is None or getattr(layer, "bias", None) is None:
        return False
    w = layer.weight
    layer.bias.add_(w.sum(dim=tuple(range(1, w.dim()))))
    w.neg_()
    return True


@torch.no_grad()
def _reinitialise(module: nn.Module, seed: int) -> None:
    """Redraw every parameter with its module's own default initialisation, from ``seed`` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


class _Candidate:
    """One start: a clone, the input logits and their two optimisers."""

    def __init__(self, clone: nn.Module, z: torch.Tensor, input_lr: float, model_lr: float, start: int,
                 mirrored: bool, transform: Transform | None = None) -> None:
        self.clone, self.z = clone, z.requires_grad_(True)
        self.transform = transform
        self.x_opt = torch.optim.Adam([self.z], lr=input_lr)
        self.m_opt = torch.optim.Adam(self.clone.parameters(), lr=model_lr)
        self.start, self.mirrored = start, mirrored

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """What the victim would have sent for ``x`` if the clone were its client part."""
        a = self.clone(x)
        return a if self.transform is None else self.transform(a)

    def run(self, steps: int, target: torch.Tensor, tv_weight: float) -> None:
        for _ in range(steps):
            x = torch.sigmoid(self.z)
            loss = F.mse_loss(self.output(x), target) + tv_weight * relative_total_variation(x)
            self.x_opt.zero_grad(set_to_none=True)
            self.m_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.x_opt.step()
            self.m_opt.step()

    @torch.no_grad()
    def matching_loss(self, target: torch.Tensor) -> float:
        return float(F.mse_loss(self.output(torch.sigmoid(self.z)), target))


@ATTACKS.register("unsplit", help="UnSplit inversion with a cloned client part, architecture only (Erdogan et al. 2022)")
class UnSplit(Attack):
    """Erdogan et al. (2022) UnSplit model inversion (and model stealing) from smashed data.

    Params:
        steps: joint iterations (one Adam step on the inputs and one on the clone each) of the
            selected candidate, counting its probe iterations (default 1200).
        restarts: independent clone initialisations (the template's own, then redrawn ones), each
            also run as its mirrored twin, so ``2 * restarts`` candidates (default 8).
        probe_steps: iterations every candidate runs before all but the best-matching one are
            dropped (default 200; capped at ``steps``).
        input_lr: Adam learning rate on the input logits (default 0.1).
        model_lr: Adam learning rate on the clone's weights (default 1e-3, as in the paper).
        tv_weight: weight lambda of the scale-free total-variation prior (default 0.03).
        init_std: standard deviation of the initial input logits around 0, i.e. mid-grey as in
            the paper, plus a little noise (default 0.1).
        adaptive: match through the defense's expected transform when the defense is known
            (default True).

    Shapes: the exchanges of one call (all the batches of one device at one cut the server saw,
    ``unit = "trace"``; the client changes by one SGD step per round, which the clone absorbs) carry smashed data
    ``[b, ...]``; they are inverted jointly with one shared clone; the reconstruction is
    ``[n, C, H, W]`` in [0, 1], one image per observed sample. Stats: ``final_loss`` (matching
    MSE of the selected candidate), ``relative_loss`` (that over the mean square of the smashed
    data), ``probe_losses`` (every candidate's matching MSE after the probe), ``start`` and
    ``mirrored`` (which candidate won).

    Cost: ``2 * restarts * probe_steps + steps - probe_steps`` forward/backward passes of the client
    part on the whole call's batch (2,600 with the defaults: a few seconds per 16 digits at cut 1,
    about 10 s at cut 3 on one CPU core).

    Example::

        attack = UnSplit(UnSplit.Params(steps=600, restarts=2))
        rec = attack.reconstruct(observe(exchanges, [], attack.threat_model), context)
    """

    @dataclass
    class Params:
        steps: int = count(1200)
        # every candidate (two per restart) keeps its own clone and input batch through the probe
        restarts: int = count(8, high=1024)
        probe_steps: int = count(200, low=0)  # 0: candidates are compared at their start
        input_lr: float = positive(0.1)
        model_lr: float = positive(1e-3)
        tv_weight: float = nonnegative(0.03)  # 0: no prior, matching alone
        init_std: float = nonnegative(0.1)
        adaptive: bool = flag(True)

    name = "unsplit"
    unit = "trace"  # one clone learnt from all the batches the server saw from this device
    recovers = "inputs"
    threat_model = ThreatModel(position="edge-server", observes=frozenset({"smashed"}), client_architecture=True,
                               client_weights=False, knows_defense=True)

    def __init__(self, params: "UnSplit.Params | None" = None) -> None:
        super().__init__(params)
        self.clone: nn.Module | None = None  # the last call's stolen client part (model stealing)

    def adapts_to(self, defense: Defense | None) -> bool:
        return expected_transform(defense) is not None

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        template = context.client_template
        if template is None:
            raise ValueError("unsplit needs the client part's architecture (its threat model grants it)")
        p = self.params
        if p.steps < 1 or p.restarts < 1 or p.probe_steps < 0:
            raise ValueError(f"unsplit needs steps >= 1, restarts >= 1 and probe_steps >= 0; got {p}")
        exchanges = observations.exchanges
        if not exchanges:
            return Reconstruction.from_images(exchanges, [], context.input_shape)
        shapes = {tuple(ex.smashed.shape[1:]) for ex in exchanges}
        if len(shapes) != 1:
            raise ValueError(f"unsplit inverts one device's round at one cut; got smashed shapes {sorted(shapes)}")
        device = context.device
        target = torch.cat([ex.smashed for ex in exchanges]).to(device)
        shape = (len(target), *context.input_shape)

        transform = expected_transform(context.defense, device=context.victim) if p.adaptive else None
        candidates = []
        for start in range(p.restarts):
            base = copy.deepcopy(template).cpu()  # never touch the template: it may share modules
            if start > 0:
                _reinitialise(base, int(torch.randint(2**31 - 1, (1,), generator=context.generator)))
            z0 = torch.randn(shape, generator=context.generator) * p.init_std
            for mirrored in (False, True):
                clone = copy.deepcopy(base)
                flipped = mirrored and mirror_first_layer(clone)
                if mirrored and not flipped:  # no biased first layer: the twin is one more random start
                    _reinitialise(clone, int(torch.randint(2**31 - 1, (1,), generator=context.generator)))
                clone = clone.to(device).eval()
                for q in clone.parameters():
                    q.requires_grad_(True)
                z = (-z0 if mirrored else z0.clone()).to(device)
                candidates.append(_Candidate(clone, z, p.input_lr, p.model_lr, start, flipped, transform))

        probe = min(p.probe_steps, p.steps)
        with torch.enable_grad():
            for cand in candidates:
                cand.run(probe, target, p.tv_weight)
            probe_losses = [c.matching_loss(target) for c in candidates]
            best = candidates[min(range(len(candidates)), key=probe_losses.__getitem__)]
            candidates = []  # free the others
            best.run(p.steps - probe, target, p.tv_weight)

        final = best.matching_loss(target)
        scale = float(target.pow(2).mean())
        images = list(torch.sigmoid(best.z).detach().split([len(ex.smashed) for ex in exchanges]))
        self.clone = best.clone
        return Reconstruction.from_images(
            exchanges, images, context.input_shape, final_loss=final,
            relative_loss=final / scale if scale > 0 else math.nan, probe_losses=probe_losses,
            start=best.start, mirrored=best.mirrored)
