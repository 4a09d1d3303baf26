"""Leakage profiles and the convergence cost of smashed-data noise: the maths privacy-constrained
planning (:mod:`hasfl_sec.planning.privacy`, :mod:`hasfl_sec.optimizer.privacy`) works from.

* :mod:`.profile` -- :class:`~.profile.LeakageProfile` (leakage per cut and relative noise level,
  from the dFIL bound or measured attacks), the metric registry, :func:`~.profile.rank_agreement`
  and the noise-grid check. numpy only: the optimizer and the config import it.
* :mod:`.noise_cost` -- the extra gradient variance noise adds (derivation) and its estimate (torch).

This package's ``__init__`` imports nothing, so that importing the profile does not load torch.
"""
