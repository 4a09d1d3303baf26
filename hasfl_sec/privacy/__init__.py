"""Privacy-constrained HASFL: leakage profiles, the convergence cost of smashed-data noise, and the
inputs of the constrained planner (:mod:`hasfl_sec.optimizer.privacy`).

* :mod:`.profile` -- :class:`LeakageProfile` (leakage per cut and relative noise level, from the
  dFIL bound or measured attacks), the metric registry and :func:`rank_agreement`.
* :mod:`.noise_cost` -- the extra gradient variance noise adds (derivation) and its estimate.
* :mod:`.measure` -- profiling a centrally trained copy of the run's model, and the glue from the
  ``privacy`` config section to a constrained optimizer problem.
"""

from .measure import (PrivacyInputs, check_private_config, constrained_problem, device_budgets, measure_privacy,
                      privacy_inputs)
from .noise_cost import GradientNoise, NoiseCost, gradient_noise
from .profile import FRAME_COLUMNS, LEAKAGE_METRICS, LeakageMetric, LeakageProfile, rank_agreement

__all__ = ["LeakageProfile", "LeakageMetric", "LEAKAGE_METRICS", "FRAME_COLUMNS", "rank_agreement", "NoiseCost",
           "GradientNoise", "gradient_noise", "PrivacyInputs", "measure_privacy", "privacy_inputs",
           "constrained_problem", "device_budgets", "check_private_config"]
