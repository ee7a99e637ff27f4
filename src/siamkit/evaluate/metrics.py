"""Pure verification and retrieval metrics (SPEC §7–8). ROC comes from scikit-learn.

Scores follow one convention: higher means "same" (pass ``-distance``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from siamkit.distances import Distance, SquaredEuclidean, as_dissimilarity, verification_accuracy

DEFAULT_FPRS = (0.5, 0.1, 0.01, 0.001)


@dataclass
class TprAtFpr:
    """TPR at a target FPR: interpolated on the ROC (slightly optimistic) and conservative (best TPR of a
    real threshold whose FPR ≤ target), with the number of impostor pairs behind it."""

    fpr: float
    tpr_interpolated: float
    tpr_conservative: float
    n_impostor: int
    reliable: bool
    """False when the target FPR is below 3 / n_impostor: too few (distinct) impostors for it to mean anything."""

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels).astype(np.int64).ravel(), np.asarray(scores, np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if not ((labels == 1).any() and (labels == 0).any()):
        raise ValueError("need both genuine (1) and impostor (0) pairs")
    return labels, scores


def roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of scikit-learn's ``roc_curve`` with every threshold kept."""
    labels, scores = _check(labels, scores)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr, thr


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels, scores = _check(labels, scores)
    return float(roc_auc_score(labels, scores))


def tpr_at_fpr(
    labels: np.ndarray, scores: np.ndarray, fprs: tuple[float, ...] = DEFAULT_FPRS, n_distinct: int | None = None
) -> list[TprAtFpr]:
    """TPR (TAR) at each target FPR (FAR), interpolated and conservative. ``n_distinct``: how many of the impostor
    rows are distinct pairs (default: all of them); ``reliable`` rests on that count, since a repeated pair adds
    no evidence."""
    fpr, tpr, _ = roc(labels, scores)
    n_imp = int((np.asarray(labels) == 0).sum()) if n_distinct is None else int(n_distinct)
    out = []
    for t in fprs:
        ok = fpr <= t + 1e-12
        out.append(
            TprAtFpr(
                fpr=float(t),
                tpr_interpolated=float(np.interp(t, fpr, tpr)),
                tpr_conservative=float(tpr[ok].max()) if ok.any() else 0.0,
                n_impostor=n_imp,
                reliable=bool(n_imp * t >= 3),
            )
        )
    return out


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate: the FPR where FPR = 1 − TPR (linear interpolation between ROC points)."""
    fpr, tpr, _ = roc(labels, scores)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # decreasing from 1 to -1 along the curve
    i = int(np.flatnonzero(diff <= 0)[0])
    if i == 0 or diff[i] == 0:
        return float(fpr[i])
    w = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def best_threshold(distances: np.ndarray, labels: np.ndarray) -> float:
    """The distance threshold maximising verification accuracy (``same`` iff distance ≤ threshold), placed
    halfway between neighbouring sorted distances."""
    labels, d = _check(labels, distances)
    order = np.argsort(d, kind="stable")
    d, y = d[order], labels[order]
    # accepting the first k items (k = 0..n): correct = genuine among them + impostors after them
    correct = np.concatenate([[0], np.cumsum(y)]) + (len(y) - y.sum()) - np.concatenate([[0], np.cumsum(1 - y)])
    valid = np.ones(len(d) + 1, bool)
    valid[1:-1] = d[1:] > d[:-1]  # cannot split between equal distances
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        return float(d[0] - 1e-6)
    if k == len(d):
        return float(d[-1])
    return float((d[k - 1] + d[k]) / 2.0)


def similarity_accuracy(d_ap: np.ndarray, d_an: np.ndarray) -> float:
    """Share of triplets with d(a, p) < d(a, n)."""
    return float((np.asarray(d_ap) < np.asarray(d_an)).mean())


def retrieval_metrics(
    embeddings: torch.Tensor, labels: np.ndarray, recall_at: tuple[int, ...] = (1, 5, 10), chunk: int = 1024,
    distance: Distance | None = None,
) -> dict[str, float]:  # fmt: skip
    """Leave-one-out retrieval (Musgrave et al. 2020): each item queries all the others, ranked by
    ``distance`` (Euclidean by default; a similarity ranks largest first).

    Returns precision@1, R-precision, MAP@R (R = number of other same-class items) and recall@k (share of
    queries with a same-class item among their k nearest). Queries whose class has no other item are left
    out. Ties are broken against the query: among items at exactly the same distance, those of another class
    rank first, so the figures never depend on the order of the items (and a collapsed embedding, where every
    distance ties, scores 0 rather than whatever the storage order gives).
    """
    emb = embeddings.float()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n = len(y)
    counts = torch.bincount(y - y.min())[y - y.min()] - 1  # R per query
    max_k = max(max(recall_at), int(counts.max()))
    max_k = min(max_k, n - 1)
    sums = {"p1": 0.0, "r_prec": 0.0, "map_r": 0.0, **{f"r{k}": 0.0 for k in recall_at}}
    valid = 0
    dist = distance or SquaredEuclidean()  # the same ranking as Euclidean, without the square root
    for start in range(0, n, chunk):
        q = slice(start, min(start + chunk, n))
        d = as_dissimilarity(dist.matrix(emb[q], emb), dist)
        rows = torch.arange(q.start, q.stop)
        d[torch.arange(len(rows)), rows] = float("inf")  # leave the query itself out
        hits = _ranked_hits(d, y, rows, max_k)  # (q, max_k)
        r = counts[rows]
        keep = r > 0
        if not keep.any():
            continue
        hits, r = hits[keep], r[keep]
        valid += int(keep.sum())
        pos = torch.arange(1, max_k + 1, dtype=torch.float32)
        within_r = (pos[None, :] <= r[:, None]).float()
        sums["p1"] += float(hits[:, 0].sum())
        sums["r_prec"] += float(((hits * within_r).sum(1) / r).sum())
        precision_at_i = hits.cumsum(1) / pos[None, :]
        sums["map_r"] += float(((precision_at_i * hits * within_r).sum(1) / r).sum())
        for k in recall_at:
            sums[f"r{k}"] += float((hits[:, :k].sum(1) > 0).sum())
    if valid == 0:
        raise ValueError("no query has another item of its class: retrieval metrics are undefined")
    out = {
        "precision_at_1": sums["p1"] / valid,
        "r_precision": sums["r_prec"] / valid,
        "map_at_r": sums["map_r"] / valid,
    }
    out.update({f"recall_at_{k}": sums[f"r{k}"] / valid for k in recall_at})
    out["n_queries"] = float(valid)
    return out


def _ranked_hits(d: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """Whether each of the ``k`` nearest items (by dissimilarity ``d`` ``(q, n)``, the query itself at +inf) has
    the query's class ``(q, k)``, ties broken against the query: wrong-class items first within a run of equal
    distances, including the run cut by the k-th place (filled by its wrong-class members first)."""
    vals, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
    hits = (y[idx] == y[rows, None]).to(torch.int8)
    by_hit = torch.sort(hits, dim=1, stable=True).indices  # misses first, then a stable sort by distance
    order = by_hit.gather(1, torch.sort(vals.gather(1, by_hit), dim=1, stable=True).indices)
    vals, hits = vals.gather(1, order), hits.gather(1, order)
    edge = vals[:, -1:]  # the run of ties that the k-th place cuts
    in_edge = vals == edge
    misses_at_edge = ((d == edge) & (y[None, :] != y[rows, None])).sum(1, keepdim=True)
    rank_in_edge = in_edge.cumsum(1) - 1
    hits = torch.where(in_edge, (rank_in_edge >= misses_at_edge).to(torch.int8), hits)
    return hits.float()


def threshold_at_fpr(distances: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """The largest distance threshold whose false-accept rate on these pairs is at most ``fpr`` (``same`` iff
    distance ≤ threshold): it admits at most ⌊fpr · n_impostor⌋ impostors, and sits halfway between the last
    admitted impostor distance and the first refused one."""
    labels, d = _check(labels, distances)
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"a false-accept rate is in [0, 1], got {fpr}")
    imp = np.sort(d[labels == 0])
    allowed = int(np.floor(fpr * len(imp) + 1e-9))
    if allowed >= len(imp):
        return float(d.max())
    first_refused = imp[allowed]
    below = imp[imp < first_refused]  # ties with the first refused impostor are refused with it
    if len(below):
        return float((below[-1] + first_refused) / 2.0)
    return float(np.nextafter(first_refused, -np.inf))


def rates_at(distances: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-accept rate, false-reject rate) of ``same = distance ≤ threshold`` on these pairs."""
    labels, d = _check(labels, distances)
    accept = d <= threshold
    return float(accept[labels == 0].mean()), float((~accept[labels == 1]).mean())


def kfold_verification_accuracy(
    distances: np.ndarray, labels: np.ndarray, folds: int = 10, seed: int = 0
) -> dict[str, Any]:
    """The LFW protocol (Huang et al. 2007; SPEC §8): the pairs in ``folds`` folds (seeded, genuine and impostor
    pairs spread evenly); for each fold the best-accuracy threshold is chosen on the other folds and the accuracy
    measured on it. Returns the mean, the standard deviation and the per-fold accuracies."""
    labels, d = _check(labels, distances)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(d), np.int64)
    for tag in (0, 1):  # stratified: each fold holds a share of the genuine and of the impostor pairs
        rows = rng.permutation(np.flatnonzero(labels == tag))
        fold_of[rows] = np.arange(len(rows)) % folds
    accs = []
    for f in range(folds):
        test, train = fold_of == f, fold_of != f
        if not test.any() or len(np.unique(labels[train])) < 2:
            continue
        thr = best_threshold(d[train], labels[train])
        accs.append(verification_accuracy(d[test], labels[test], thr))
    if not accs:
        raise ValueError("too few pairs for a k-fold verification accuracy")
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "folds": [float(a) for a in accs]}
