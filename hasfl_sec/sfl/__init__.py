"""Split federated learning under a plan: the engine every run, warm-up and audit trains with.

* :mod:`.plan` -- :class:`~.plan.Plan`, the per-device batch sizes and cuts (the value; the
  strategies that make plans live in :mod:`hasfl_sec.planning`).
* :mod:`.latency` and :mod:`.clock` -- per-round latency of a plan on a fleet and the simulated
  clock built on it (docs/hasfl.md section 2).
* :mod:`.trainer`, :mod:`.sampler`, :mod:`.splitstep` -- the HASFL round (docs/hasfl.md section 1.2).
* :mod:`.protocol` and :mod:`.tap` -- what crosses the cut, and the observer that records it.

This package's ``__init__`` imports nothing, so that the numpy-only optimizer can use ``Plan``
without loading the trainer.
"""
