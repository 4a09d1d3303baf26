"""Making plans: HASFL's convergence-bound constants (:mod:`.bound`), the warm-up that estimates them
(:mod:`.warmup`) and their calibration to a target accuracy (:mod:`.calibrate`), the leakage
inputs of privacy-constrained planning (:mod:`.privacy`), and the strategy registry with
:func:`make_plan` (:mod:`.strategies`)."""

from .bound import BoundConstants
from .calibrate import calibrate_bound
from .strategies import BOUND_STRATEGIES, PRIVATE_STRATEGIES, STRATEGIES, PlanContext, make_plan
from .warmup import bound_for, estimate_bound

__all__ = ["BoundConstants", "estimate_bound", "bound_for", "calibrate_bound", "PlanContext", "STRATEGIES",
           "BOUND_STRATEGIES", "PRIVATE_STRATEGIES", "make_plan"]
