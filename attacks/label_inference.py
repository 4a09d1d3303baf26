"""Label inference from the cut-layer gradients the edge server returns.

When the devices keep their labels (``train.share_labels`` false), the server still sends every
device the gradient of its loss with respect to the smashed data. For cross-entropy that gradient
is ``J(a)^T (softmax(z) - e_y)``: the label enters through ``e_y``, so its direction and size leak
it. Three passive attacks by an honest-but-curious edge server, each on one device's exchanges of
one round, observing only the returned gradients:

``label-norm`` -- norm scoring of Li et al., "Label Leakage and Protection in Two-party Split
Learning", ICLR 2022 (arXiv 2102.08504): on a binary task whose positive class is the minority, the
model is less confident on positives, ``|1 - p_y|`` is larger for them, and so is the gradient
norm. The log-norm is the class-1 score (leak-AUC); labels come from an exact 1-D 2-means split of
the log-norms. No side information; binary tasks only.

``label-direction`` -- Li et al.'s direction (cosine) scoring, generalised to K
classes with a sybil device: the attacker also controls a participating device holding labelled
data of its own, pushes it through the victim's split step (same cut, same current weights) and
gets back per-sample cut gradients. Class prototypes are the means of the unit-normalised sybil
gradients of each class; a victim gradient is scored by its cosine similarity to each prototype
and labelled with the best.

``label-cluster`` -- the clustering variant of Liu, Lyu, Cui & Tao, "Similarity-based Label Inference
Attack against Training and Inference of Split Learning", IEEE TIFS 2024 (arXiv 2203.05222):
k-means with K clusters on the unit-normalised gradients of the victims and the sybil's anchors
together; each cluster takes the majority label of the anchors in it (a cluster without anchors
takes the class of the nearest prototype), and a victim takes its cluster's label. Same sybil
threat model as ``label-direction``.

Adaptive variants (``adaptive``, default True, when the defense is known): the sybil follows the
devices' defense -- its smashed data pass through the defense's ``transform_smashed`` and the
gradient it gets back through ``transform_grad``, with the attacker's own random draws -- so its
prototypes and anchors come from the same distribution as the victims' gradients. ``label-norm``
has no adaptive variant: it uses no reference data, only the ranking of the victims' own gradient
norms, which knowing the defense does not change.

All three return a :class:`~hasfl_sec.attacks.base.Reconstruction` with ``labels`` ``[n]`` and
``label_scores`` ``[n, K]`` aligned with the exchanges given (``inputs`` None). Gradients are
flattened per sample, so any cut and any batch size is accepted.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from ..defenses.base import Defense
from ..defenses.params import choice, count, flag
from ..sfl.protocol import Exchange
from .adaptive import changes_grad, changes_smashed
from .base import Attack, AttackContext, Observations, Reconstruction, ThreatModel
from .registry import ATTACKS

__all__ = ["LabelNorm", "LabelDirection", "LabelCluster", "split_two_means", "class_prototypes",
           "ABSENT_SCORE"]

#: Score given to a class the attacker has no reference for (absent from the sybil's data):
#: below every attainable cosine (>= -1) and every negated distance between points of the unit
#: ball (>= -2), yet finite so that leak-AUC stays defined (a constant column gives AUC 0.5).
ABSENT_SCORE = -3.0

_EPS = 1e-12


# ------------------------------------------------------------------------------------- helpers


def _flat_grads(exchanges: Sequence[Exchange], name: str) -> tuple[torch.Tensor, list[int]]:
    """Per-sample flattened gradients ``[n, D]`` (float64) of all exchanges, and each batch size."""
    flats, sizes, dim = [], [], None
    for ex in exchanges:
        g = ex.grad
        if g is None:
            raise ValueError(f"{name} needs the returned cut-layer gradients (exchange {ex.key} has none)")
        if g.ndim < 1:
            raise ValueError(f"{name}: exchange {ex.key} has a gradient without a batch dimension")
        f = _per_sample(g)
        if dim is not None and f.shape[1] != dim and len(f):
            raise ValueError(f"{name}: exchanges with different cut-layer sizes ({dim} and {f.shape[1]} values "
                             f"per sample); give one device's exchanges at one cut")
        if len(f):
            dim = f.shape[1]
        flats.append(f)
        sizes.append(len(f))
    nonempty = [f for f in flats if len(f)]
    grads = torch.cat(nonempty) if nonempty else torch.empty(0, 0, dtype=torch.float64)
    return grads, sizes


def _per_sample(g: torch.Tensor) -> torch.Tensor:
    """``[b, *shape]`` -> ``[b, prod(shape)]`` float64 on the CPU (also for b = 0)."""
    return g.detach().reshape(g.shape[0], math.prod(g.shape[1:])).to(torch.float64).cpu()


def _unit(g: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (an all-zero row stays zero)."""
    return g / g.norm(dim=1, keepdim=True).clamp_min(_EPS)


def _result(exchanges: Sequence[Exchange], sizes: list[int], scores: torch.Tensor,
            **stats: object) -> Reconstruction:
    """Keys and positions as :meth:`Reconstruction.from_images` builds them; labels = argmax of scores."""
    keys = [ex.key for ex, b in zip(exchanges, sizes) for _ in range(b)]
    positions = [k for b in sizes for k in range(b)]
    scores = scores.to(torch.float32).cpu()
    labels = scores.argmax(dim=1) if len(scores) else torch.empty(0, dtype=torch.long)
    return Reconstruction(keys, positions, labels=labels.to(torch.long), label_scores=scores, stats=dict(stats))


def split_two_means(values: torch.Tensor) -> tuple[float, float, float]:
    """Exact 1-D 2-means of ``values``: ``(threshold, low_centre, high_centre)``.

    Scans every split of the sorted values for the least within-group sum of squares; the
    threshold is the midpoint of the two centres (so the split is the nearest-centre rule).
    Fewer than two distinct values: one group, threshold +inf (everything falls below it).
    """
    v = torch.sort(values.to(torch.float64).reshape(-1)).values
    n = len(v)
    if n < 2 or float(v[-1] - v[0]) <= 0.0:
        centre = float(v.mean()) if n else 0.0
        return float("inf"), centre, centre
    csum = torch.cumsum(v, 0)
    csq = torch.cumsum(v * v, 0)
    k = torch.arange(1, n, dtype=torch.float64)  # size of the low group
    low_sum, low_sq = csum[:-1], csq[:-1]
    high_sum, high_sq = csum[-1] - low_sum, csq[-1] - low_sq
    sse = (low_sq - low_sum ** 2 / k) + (high_sq - high_sum ** 2 / (n - k))
    sse[v[1:] == v[:-1]] = float("inf")  # never split between equal values
    best = int(torch.argmin(sse))
    lo, hi = float(low_sum[best] / k[best]), float(high_sum[best] / (n - k[best]))
    return (lo + hi) / 2.0, lo, hi


def class_prototypes(unit_grads: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean of unit-normalised gradients, re-normalised: ``([K, D], present [K] bool)``.

    A class without samples gets a zero prototype and ``present`` False.
    """
    labels = labels.reshape(-1).long().cpu()
    protos = torch.zeros(num_classes, unit_grads.shape[1], dtype=unit_grads.dtype)
    protos.index_add_(0, labels, unit_grads)
    counts = torch.bincount(labels, minlength=num_classes)
    present = counts > 0
    return _unit(protos), present


def _sybil_gradients(context: AttackContext, limit: int, name: str,
                     adaptive: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The sybil's labelled auxiliary batch through the victim's split step: ``(unit grads [m, D], labels [m])``.

    ``adaptive`` and a known defense: through the defended split step (see the module docstring).
    """
    reason = _sybil_missing(context, name)
    if reason:
        raise ValueError(reason)
    x = context.auxiliary[:limit]
    y = context.auxiliary_labels[: len(x)].reshape(-1).long()
    if len(y) != len(x) or len(x) == 0:
        raise ValueError(f"{name}: {len(x)} auxiliary samples with {len(y)} labels")
    if int(y.min()) < 0 or int(y.max()) >= context.num_classes:
        raise ValueError(f"{name}: auxiliary labels must lie in 0..{context.num_classes - 1}")
    if adaptive and context.defense is not None:
        g = context.sybil_grad(x.to(context.device), y.to(context.device), defense=context.defense)
    else:
        g = context.sybil_grad(x.to(context.device), y.to(context.device))
    if g.ndim < 1 or len(g) != len(x):
        raise ValueError(f"{name}: the sybil step returned gradients of shape {tuple(g.shape)} for {len(x)} samples")
    return _unit(_per_sample(g)), y.cpu()


def _sybil_missing(context: AttackContext, name: str) -> str | None:
    if context.num_classes < 2:
        return f"{name} needs a classification task with at least two classes"
    if context.sybil_grad is None:
        return f"{name} needs a sybil device's split step (its threat model grants one)"
    if context.auxiliary is None or context.auxiliary_labels is None:
        return f"{name} needs the sybil's labelled auxiliary data"
    return None


def _check_dims(victims: torch.Tensor, anchors: torch.Tensor, name: str) -> None:
    if len(victims) and victims.shape[1] != anchors.shape[1]:
        raise ValueError(f"{name}: victim gradients have {victims.shape[1]} values per sample, the sybil's "
                         f"{anchors.shape[1]}; the sybil must use the victim's cut")


# ------------------------------------------------------------------------------------- attacks


@ATTACKS.register("label-norm", help="binary label inference from cut-gradient norms (Li et al. 2022)")
class LabelNorm(Attack):
    """Li et al. (2022) norm scoring: larger cut-gradient norm -> the positive (minority) class.

    Params:
        larger_norm_class: the class assumed to get the larger gradient norms (default 1, the
            positive class; Li et al. observe this for an imbalanced task where the positive
            class is the minority, because the model is less confident on it). On a balanced task
            the larger norms go to whichever class the model currently under-predicts, so the
            norm may still separate the classes but in either direction (leak-AUC far from 0.5 on
            either side): the attack has no way to tell which without side information.

    Scores: ``label_scores[:, c] = s`` for ``c = larger_norm_class`` and ``-s`` for the other
    class, with ``s = log ||g|| - threshold``; the threshold is the midpoint of the two centres of
    an exact 1-D 2-means on the log-norms of all the samples given (one round of one device), so
    the predicted label (the argmax) is the 2-means group. If all norms are equal there is one
    group and every sample gets the other (smaller-norm) class. ``stats`` has the threshold and
    the two centres (log-norms).

    Shapes: gradients ``[b, *smashed]`` per exchange, flattened per sample; any batch sizes.
    """

    @dataclass
    class Params:
        # a class of the binary task: Li et al. (ICLR 2022) define the norm attack for two classes
        larger_norm_class: int = choice(1, (0, 1))

    name = "label-norm"
    unit = "round"
    recovers = "labels"
    threat_model = ThreatModel(position="edge-server", observes=frozenset({"grad"}))

    def applies(self, context: AttackContext) -> str | None:
        if (other := super().applies(context)) is not None:
            return other
        if context.num_classes != 2:
            return f"label-norm is for binary tasks; this one has {context.num_classes} classes"
        if self.params.larger_norm_class not in (0, 1):
            return f"larger_norm_class must be 0 or 1, not {self.params.larger_norm_class}"
        return None

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        reason = self.applies(context)
        if reason:
            raise ValueError(reason)
        exchanges = observations.exchanges
        grads, sizes = _flat_grads(exchanges, self.name)
        log_norm = grads.norm(dim=1).clamp_min(1e-300).log() if len(grads) else torch.empty(0, dtype=torch.float64)
        threshold, low, high = split_two_means(log_norm)
        s = log_norm - threshold if math.isfinite(threshold) else torch.full_like(log_norm, -1.0)
        c = self.params.larger_norm_class
        scores = torch.stack([-s, s] if c == 1 else [s, -s], dim=1) if len(s) else torch.empty(0, 2)
        return _result(exchanges, sizes, scores, threshold=threshold, low_centre=low, high_centre=high)


class _SybilLabelAttack(Attack):
    """Shared by the sybil-anchored label attacks: the threat model, ``applies``, and the victims'
    and anchors' unit gradients with the class prototypes."""

    unit = "round"
    recovers = "labels"
    threat_model = ThreatModel(position="edge-server", observes=frozenset({"grad"}), auxiliary_samples=64, sybil=True,
                               knows_defense=True)

    def applies(self, context: AttackContext) -> str | None:
        return super().applies(context) or _sybil_missing(context, self.name)

    def adapts_to(self, defense: Defense | None) -> bool:
        return changes_smashed(defense) or changes_grad(defense)

    def _anchored(self, observations: Observations, context: AttackContext
                  ) -> tuple[torch.Tensor, list[int], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Victim gradients (flat), batch sizes, unit anchor gradients and labels, prototypes, classes present."""
        grads, sizes = _flat_grads(observations.exchanges, self.name)
        anchors, anchor_labels = _sybil_gradients(context, self.params.auxiliary_samples, self.name,
                                                  adaptive=self.params.adaptive)
        _check_dims(grads, anchors, self.name)
        protos, present = class_prototypes(anchors, anchor_labels, context.num_classes)
        return grads, sizes, anchors, anchor_labels, protos, present


@ATTACKS.register("label-direction", help="cosine label inference against a sybil's class prototypes (Li et al. 2022)")
class LabelDirection(_SybilLabelAttack):
    """Li et al. (2022) direction scoring, K classes, prototypes from a sybil device's gradients.

    Params:
        auxiliary_samples: labelled samples the sybil pushes through the victim's split step in
            one batch (default 64); the instance's ``threat_model`` grants this many.
        adaptive: the sybil follows the known defense (default True).

    Scores: ``label_scores[i, c]`` is the cosine between victim gradient i and the prototype of
    class c (the re-normalised mean of the sybil's unit gradients of class c); a class absent
    from the sybil's data scores :data:`ABSENT_SCORE`. Labels are the argmax. ``stats`` lists the
    classes the sybil covered.

    Shapes: gradients ``[b, *smashed]`` per exchange, flattened per sample; the sybil's must have
    the same number of values per sample (same cut).
    """

    @dataclass
    class Params:
        auxiliary_samples: int = count(64)  # capped (with a warning) at what the task holds out
        adaptive: bool = flag(True)

    name = "label-direction"

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        exchanges = observations.exchanges
        grads, sizes, anchors, _, protos, present = self._anchored(observations, context)
        scores = _unit(grads) @ protos.T if len(grads) else torch.empty(0, context.num_classes, dtype=torch.float64)
        scores[:, ~present] = ABSENT_SCORE
        return _result(exchanges, sizes, scores, sybil_samples=len(anchors),
                       sybil_classes=present.nonzero().reshape(-1).tolist())


@ATTACKS.register("label-cluster", help="k-means label inference with a sybil's labelled anchors (Liu & Lyu 2024)")
class LabelCluster(_SybilLabelAttack):
    """Liu & Lyu et al. (2024) clustering label inference with a sybil device's anchors.

    Params:
        auxiliary_samples: labelled samples the sybil pushes through the victim's split step in
            one batch (default 64); the instance's ``threat_model`` grants this many.
        n_init: k-means restarts (sklearn ``KMeans``, seeded from the context's generator; default 10).
        adaptive: the sybil follows the known defense (default True).

    K-means with K clusters (fewer if there are fewer points) runs on the unit-normalised victim
    and sybil gradients together. A cluster's class is the majority label of the anchors in it
    (ties go to the tied class whose prototype is nearest the centre); a cluster without anchors
    takes the class of the nearest prototype (cosine). Scores: ``label_scores[i, c]`` is minus the
    Euclidean distance from victim i to the nearest centre of a cluster of class c, or
    :data:`ABSENT_SCORE` if no cluster has class c; the argmax is the victim's cluster's class.
    ``stats`` has the clusters' classes and how many were labelled by anchors.

    Shapes: as for ``label-direction``.
    """

    @dataclass
    class Params:
        auxiliary_samples: int = count(64)  # capped (with a warning) at what the task holds out
        n_init: int = count(10)  # sklearn's KMeans needs at least one initialisation
        adaptive: bool = flag(True)

    name = "label-cluster"

    def reconstruct(self, observations: Observations, context: AttackContext) -> Reconstruction:
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

        exchanges = observations.exchanges
        k = context.num_classes
        grads, sizes, anchors, anchor_labels, protos, present = self._anchored(observations, context)
        victims = _unit(grads) if len(grads) else torch.empty(0, anchors.shape[1], dtype=torch.float64)
        points = torch.cat([victims, anchors]).numpy()
        n_clusters = min(k, len(points))
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=context.generator))
        # A few hundred points: one thread. OpenMP's worker threads cost far more than the work here
        # (seconds instead of milliseconds on a loaded machine).
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore")  # fewer distinct points than clusters: sklearn warns, still fine
            km = KMeans(n_clusters=n_clusters, n_init=self.params.n_init, random_state=seed).fit(points)
        centres = torch.from_numpy(km.cluster_centers_).to(torch.float64)
        assign = torch.from_numpy(km.labels_).long()
        anchor_assign = assign[len(victims):]

        # each cluster's class: majority of its anchors, else the nearest prototype
        centre_cos = _unit(centres) @ protos.T
        centre_cos[:, ~present] = -float("inf")
        cluster_class, by_anchor = [], 0
        for j in range(n_clusters):
            votes = torch.bincount(anchor_labels[anchor_assign == j], minlength=k)
            if int(votes.max()) > 0:
                tied = votes == votes.max()
                cluster_class.append(int(torch.where(tied, centre_cos[j], -float("inf")).argmax()))
                by_anchor += 1
            else:
                cluster_class.append(int(centre_cos[j].argmax()))

        dist = torch.cdist(victims, centres) if len(victims) else torch.empty(0, n_clusters, dtype=torch.float64)
        scores = torch.full((len(victims), k), ABSENT_SCORE, dtype=torch.float64)
        for j, c in enumerate(cluster_class):
            scores[:, c] = torch.maximum(scores[:, c], -dist[:, j])
        return _result(exchanges, sizes, scores, sybil_samples=len(anchors), cluster_classes=cluster_class,
                       clusters_with_anchors=by_anchor, inertia=float(km.inertia_))
