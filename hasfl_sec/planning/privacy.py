"""Measuring what planning under a leakage budget needs: the leakage profile and the noise cost.

Which model leaks? Planning happens before training, and an untrained encoder is not the one an
attacker faces (leakage changes as the client part learns). :func:`privacy_inputs` therefore
profiles a copy of the run's initial model trained centrally for ``privacy.profile_epochs``
epochs (:func:`hasfl_sec.models.central.train_central`, the same training the bare-model audit uses),
on ``privacy.probe_images`` seeded training images (the attacker's victims are training images):

* per cut c, the Jacobian trace tr(J^T J) of the client part once (dFIL at any noise sigma is
  tr(J^T J) / (sigma^2 d) for additive Gaussian noise, Maeng et al., NeurIPS 2023), so the dFIL
  profile over the whole sigma grid costs one :func:`hasfl_sec.metrics.fisher.dfil` call per cut;
* the smashed-data RMS of each cut, the clean per-sample gradient variance V of the run's initial
  model, and a :class:`~.noise_cost.NoiseCost` that measures the variance the noise adds (on the
  initial and the profiled model) at the (cut, noise) pairs the planner asks for.

The dFIL values are reduced over the probe images by ``privacy.reduction``: ``mean`` (the
official code's calibration: the bound at the mean trace) or ``max`` (every probe image within
the budget). With ``privacy.profile`` a CSV path the leakage comes from measured attacks instead
(:meth:`LeakageProfile.read`) and only the noise cost is computed here.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..config import ExperimentConfig
from ..data.datasets import ImageDataset
from ..data.text import TEXT_DATASETS
from ..errors import ConfigError, check
from ..metrics.fisher import dfil
from ..models import SplitModel
from ..models.central import train_central
from ..optimizer.privacy import constrain
from ..privacy.noise_cost import NoiseCost
from ..privacy.profile import LEAKAGE_METRICS, LeakageProfile
from ..seeding import derive_seed, torch_generator

__all__ = ["PrivacyInputs", "DFIL_PROBES", "measure_privacy", "privacy_inputs", "constrained_problem", "device_budgets",
           "check_private_config"]

logger = logging.getLogger(__name__)

_REDUCTIONS = {"mean": np.mean, "max": np.max}
#: Hutchinson probes per image. The exact trace (one JVP per input pixel) took 3-13 s per hecnn cut
#: on 32 digits images (shared 2-core machine, loaded); 16 probes took 0.1-0.2 s and the mean dFIL
#: was within 2% of exact at every cut (the errors of the images average out). 32 keeps a single image's relative stderr <= 25%,
#: which matters for reduction "max" (noisy maxima err high: conservative).
DFIL_PROBES = 32


@dataclass(frozen=True)
class PrivacyInputs:
    """Everything a privacy-constrained plan is made from.

    Attributes:
        profile: leakage per (cut, relative noise).
        cost: the noise cost per cut.
        accuracy: test accuracy of the profiled model (NaN when not trained here).
        seconds: wall time of training and measuring.
    """

    profile: LeakageProfile
    cost: NoiseCost
    accuracy: float = math.nan
    seconds: float = 0.0


def measure_privacy(model: "SplitModel", initial: "SplitModel", x: torch.Tensor, y: torch.Tensor, *,
                    cuts: Sequence[int], sigma_grid: Sequence[float], metric: str | None = "dfil_psnr",
                    reduction: str = "mean", pairs: int = 2, seed: int = 0,
                    probes: int = DFIL_PROBES) -> tuple[LeakageProfile | None, NoiseCost]:
    """The dFIL leakage profile of ``model`` (None when ``metric`` is None) and the noise cost.

    Args:
        model: the profiled split model, used as it is (eval mode inside, flags restored).
        initial: the run's initial model (the reference V and the other state the noise cost
            is maximised over).
        x, y: probe images and labels.
        cuts: the cuts to profile.
        sigma_grid: relative noise levels of the profile.
        metric: a dFIL-based :data:`LEAKAGE_METRICS` name, or None for the noise cost only.
        reduction: ``mean`` or ``max`` of the per-sample dFIL over the probe images.
        pairs: noise pairs per probe image of each noise-cost measurement.
        seed: seeds the Hutchinson probes and the noise draws.
        probes: Hutchinson probes per image for tr(J^T J) (always Hutchinson; see :data:`DFIL_PROBES`).
    """
    check(reduction in _REDUCTIONS, "privacy.reduction", reduction, sorted(_REDUCTIONS))
    grid = np.asarray(list(sigma_grid), dtype=np.float64)
    to_metric = None
    if metric is not None:
        to_metric = LEAKAGE_METRICS.get(metric).from_dfil
        check(to_metric is not None, "privacy.metric", metric, [m for m in LEAKAGE_METRICS.names()
                                                                  if LEAKAGE_METRICS.get(m).from_dfil],
              "a dFIL profile predicts only dFIL metrics; measured metrics need privacy.profile=<leakage.csv>")
    rows = []
    for c in cuts:
        client = model.client_part(c)
        if to_metric is not None:
            gen = torch.Generator().manual_seed(derive_seed(seed, "privacy-dfil", c))
            # sigma = 1 x RMS: the value every other grid level is rescaled from
            at_rms = dfil(client, x, relative_sigma=1.0, generator=gen, exact_max_dim=0, probes=probes)
            base = float(_REDUCTIONS[reduction](at_rms.dfil.detach().cpu().double().numpy()))
            with np.errstate(divide="ignore"):
                # dFIL ~ 1 / sigma^2: r x RMS divides the value at RMS by r^2 (inf without noise)
                rows.append(to_metric(np.where(grid > 0, base / np.where(grid > 0, grid, 1.0) ** 2, np.inf)))
    cost = NoiseCost.measure(initial, model, x, y, cuts, pairs=pairs, seed=seed)
    profile = None if metric is None else LeakageProfile(metric, tuple(int(c) for c in cuts), tuple(grid.tolist()),
                                                         np.array(rows), source="dfil")
    return profile, cost


def check_private_config(config: "ExperimentConfig") -> None:
    """Refuse settings a privacy-constrained plan cannot honour (before any work is done)."""
    if "noise" in config.defense.use:
        raise ConfigError("defense.use", config.defense.use, "no noise defense with a privacy-constrained strategy",
                          "the plan's per-device noise is the run's one noise source; drop noise from defense.use")
    check(config.channel.reoptimize_every == 0, "channel.reoptimize_every", config.channel.reoptimize_every,
          "0 with a privacy-constrained strategy",
          "a re-plan could move a device to a cut whose noise the running defense does not add")
    p = config.privacy
    metric = LEAKAGE_METRICS.get(p.metric)
    check(not (p.profile == "dfil" and config.data.dataset in TEXT_DATASETS), "privacy.profile", p.profile,
          "a leakage CSV of hasfl-sec audit for a text dataset",
          f"data.dataset {config.data.dataset!r} is text: dFIL bounds the reconstruction of real-valued inputs, "
          "not of tokens")
    if p.profile == "dfil":
        check(metric.from_dfil is not None, "privacy.metric", p.metric,
              [m for m in LEAKAGE_METRICS.names() if LEAKAGE_METRICS.get(m).from_dfil],
              f"{p.metric} is measured by attacks: set privacy.profile to a leakage CSV (hasfl-sec audit)")


def privacy_inputs(config: "ExperimentConfig", model: "SplitModel", dataset: "ImageDataset",
                   device: torch.device | str = "cpu") -> PrivacyInputs:
    """Train a copy of ``model`` centrally and measure its leakage profile and noise cost."""
    check_private_config(config)
    p = config.privacy
    started = time.perf_counter()
    measured = None if p.profile == "dfil" else LeakageProfile.read(p.profile, p.metric)
    profiled = copy.deepcopy(model)
    with torch.random.fork_rng():  # profiling must not shift the run's own random streams
        accuracy = train_central(profiled, dataset, epochs=p.profile_epochs, seed=derive_seed(config.seed, "privacy"),
                                 device=torch.device(device)) if p.profile_epochs > 0 else math.nan
    profiled = profiled.cpu().eval()
    take = torch.randperm(len(dataset.y_train), generator=torch_generator(config.seed, "privacy-probe"))
    take = take[:p.probe_images]
    x, y = dataset.x_train[take], dataset.y_train[take]
    initial = copy.deepcopy(model).cpu().eval()
    profile, cost = measure_privacy(profiled, initial, x, y, cuts=model.legal_cuts, sigma_grid=p.sigma_grid,
                                    metric=None if measured is not None else p.metric, reduction=p.reduction,
                                    pairs=p.noise_pairs, seed=config.seed)
    seconds = time.perf_counter() - started
    logger.info("privacy profile (%s, model trained %d epochs to accuracy %.3f) in %.1f s; clean variance %.4g",
                measured.source if measured else "dfil", p.profile_epochs, accuracy, seconds, cost.clean_variance)
    return PrivacyInputs(profile=measured or profile, cost=cost, accuracy=accuracy, seconds=seconds)


def device_budgets(budget: float | list[float], n: int) -> np.ndarray:
    """``privacy.budget`` as one budget per device."""
    values = budget if isinstance(budget, list) else [budget] * n
    check(len(values) == n, "privacy.budget", budget, f"one number, or a list of {n} (one per device)")
    return np.asarray(values, dtype=np.float64)


def constrained_problem(config: "ExperimentConfig", problem: Any, inputs: PrivacyInputs) -> Any:
    """The privacy-constrained :class:`~hasfl_sec.optimizer.Problem` of ``problem`` and ``config``."""
    p = config.privacy
    grid = list(p.sigma_grid)
    cost = inputs.cost
    started = time.perf_counter()
    out = constrain(problem, leakage=inputs.profile.table(problem.cuts, grid), sigma_grid=grid,
                    budget=device_budgets(p.budget, problem.num_devices),
                    multiplier=lambda j, r: cost.multiplier(problem.cuts[j], r),
                    rms=[cost.activation_rms[c] for c in problem.cuts], metric=p.metric)
    logger.info("privacy: noise cost of %d (cut, noise) pairs measured in %.1f s", cost.measured,
                time.perf_counter() - started)
    return out
