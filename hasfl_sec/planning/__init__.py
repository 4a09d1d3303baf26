"""Making plans: HASFL's convergence-bound constants (:mod:`.bound`), the warm-up that estimates them
(:mod:`.warmup`) and their calibration to a target accuracy (:mod:`.calibrate`), the leakage
inputs of privacy-constrained planning (:mod:`.privacy`), and the strategy registry with
:func:`~.strategies.make_plan` (:mod:`.strategies`).

This package's ``__init__`` imports nothing, so that the bound's maths (numpy) loads without the
trainer and torch.
"""
