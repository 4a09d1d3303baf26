"""Text leakage metrics: what an attacker recovered of a sequence of characters.

* ``token_accuracy`` -- the fraction of positions whose character is recovered exactly (the metric
  of embedding-inversion attacks on split language models);
* ``rouge_l`` -- ROUGE-L F-measure (Lin, "ROUGE: a package for automatic evaluation of summaries",
  ACL workshop 2004, section 3): from the longest common subsequence of the two sequences,
  ``P = LCS / len(recovered)``, ``R = LCS / len(truth)``, ``F = (1 + b^2) P R / (R + b^2 P)`` with
  ``b = 1`` (the F1 form most toolkits report). It credits characters recovered in order even when
  others are wrong or shifted;
* ``secret_recovery`` -- of the planted secrets (names, card numbers, PINs, dates) that appear in
  the sequences, the fraction recovered character for character: exact leakage of the records
  :mod:`hasfl_sec.data.text` plants.

Each takes ``[n, T]`` integer ids (numpy or torch) and returns one value per sequence, except
``secret_recovery``, which returns one value per secret. Written here: the maintained ROUGE
packages tokenise English words and some download data at run time; over characters, the
measure is a dozen lines.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["token_accuracy", "rouge_l", "lcs_length", "secret_spans", "secret_recovery", "text_report",
           "match_sequences"]


def _ids(a: Any) -> np.ndarray:
    arr = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def token_accuracy(recon: Any, truth: Any) -> np.ndarray:
    """Per sequence: the fraction of positions where ``recon`` equals ``truth``."""
    r, t = _ids(recon), _ids(truth)
    if r.shape != t.shape:
        raise ValueError(f"recovered {r.shape} and true {t.shape} sequences differ in shape")
    return (r == t).mean(axis=1)


def match_sequences(recon: Any, truth: Any) -> np.ndarray:
    """Permutation ``perm`` such that ``recon[perm[k]]`` is the best match of ``truth[k]``: the
    assignment with the most positions in agreement (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``), the text counterpart of
    :func:`hasfl_sec.metrics.image.match_batch` for a jointly reconstructed batch, whose order is
    unknown. ``recon`` may hold more sequences than ``truth``."""
    from scipy.optimize import linear_sum_assignment

    r, t = _ids(recon), _ids(truth)
    if r.shape[1:] != t.shape[1:] or len(r) < len(t):
        raise ValueError(f"cannot match {r.shape} recovered sequences to {t.shape} true ones")
    agree = (t[:, None, :] == r[None, :, :]).sum(-1)  # [n_truth, n_recon]
    truth_idx, recon_idx = linear_sum_assignment(-agree)
    perm = np.empty(len(t), dtype=np.int64)
    perm[truth_idx] = recon_idx
    return perm


def lcs_length(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common subsequence of two 1-D sequences (dynamic programming, one row
    at a time: O(len(a) len(b)) time, O(len(b)) memory)."""
    prev = np.zeros(len(b) + 1, dtype=np.int64)
    for x in a:
        # row[j] = prev[j-1] + 1 where a_i == b_j, else max(prev[j], row[j-1]); the running max
        # over j resolves the row[j-1] dependence.
        match = np.concatenate([[0], np.where(np.asarray(b) == x, prev[:-1] + 1, 0)])
        row = np.maximum(match, prev)
        prev = np.maximum.accumulate(row)
    return int(prev[-1])


def rouge_l(recon: Any, truth: Any, beta: float = 1.0) -> np.ndarray:
    """Per sequence: the ROUGE-L F-measure of ``recon`` against ``truth`` (Lin 2004, section 3)."""
    r, t = _ids(recon), _ids(truth)
    if len(r) != len(t):
        raise ValueError(f"{len(r)} recovered sequences for {len(t)} true ones")
    out = np.zeros(len(r))
    for i, (a, b) in enumerate(zip(r, t)):
        lcs = lcs_length(a, b)
        if lcs == 0:
            continue
        p, rec = lcs / len(a), lcs / len(b)
        out[i] = (1 + beta**2) * p * rec / (rec + beta**2 * p)
    return out


def secret_spans(mask: Any) -> list[tuple[int, int, int]]:
    """The maximal runs of True in an ``[n, T]`` mask: ``(sequence, start, end)`` per secret.

    A secret cut by the sequence's start or end counts as the part inside it.
    """
    m = _ids(mask).astype(bool)
    spans = []
    for i, row in enumerate(m):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        spans += [(i, int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
    return spans


def _per_secret(recon: Any, truth: Any, mask: Any) -> np.ndarray:
    """Per planted secret, the fraction of its characters recovered."""
    r, t = _ids(recon), _ids(truth)
    return np.array([float((r[i, a:b] == t[i, a:b]).mean()) for i, a, b in secret_spans(mask)])


def secret_recovery(recon: Any, truth: Any, mask: Any) -> np.ndarray:
    """Per planted secret (a run of True in ``mask``): 1.0 if every one of its characters was
    recovered, else 0.0. Empty when the sequences hold no secret."""
    return (_per_secret(recon, truth, mask) == 1.0).astype(float)


def text_report(recon: Any, truth: Any, mask: Any | None = None) -> dict[str, np.ndarray]:
    """``token_accuracy`` and ``rouge_l`` per sequence and, given the secret mask, ``secret_recovery``
    per secret and ``secret_token_accuracy`` per secret (the fraction of its characters recovered)."""
    out = {"token_accuracy": token_accuracy(recon, truth), "rouge_l": rouge_l(recon, truth)}
    if mask is not None:
        per_secret = _per_secret(recon, truth, mask)
        out["secret_recovery"] = (per_secret == 1.0).astype(float)
        out["secret_token_accuracy"] = per_secret
    return out
