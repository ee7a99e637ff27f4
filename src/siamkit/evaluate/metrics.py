"""Pure verification and retrieval metrics (SPEC §7–8). ROC comes from scikit-learn.

Scores follow one convention: higher means "same" (pass ``-distance``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from siamkit.distances import Distance, SquaredEuclidean, as_dissimilarity, verification_accuracy
from siamkit.evaluate.fprs import DEFAULT_FPRS


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
    from sklearn.metrics import roc_curve  # imported when first needed: a training run starts without it

    labels, scores = _check(labels, scores)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr, thr


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

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


KNN_FROM = 5_000
"""Sets of at least this many items are ranked by a k-NN index (faiss) instead of the dense distance matrix."""


def retrieval_metrics(
    embeddings: torch.Tensor, labels: np.ndarray, recall_at: tuple[int, ...] = (1, 5, 10), chunk: int = 1024,
    distance: Distance | None = None, *, method: str = "auto",
) -> dict[str, float]:  # fmt: skip
    """Leave-one-out retrieval (Musgrave et al. 2020): each item queries all the others, ranked by
    ``distance`` (Euclidean by default; a similarity ranks largest first).

    Returns precision@1, R-precision, MAP@R (R = number of other same-class items) and recall@k (share of
    queries with a same-class item among their k nearest). Queries whose class has no other item are left
    out. Ties are broken against the query: among items at exactly the same distance, those of another class
    rank first, so the figures never depend on the order of the items (and a collapsed embedding, where every
    distance ties, scores 0 rather than whatever the storage order gives).

    ``method``: ``dense`` ranks each chunk of queries against every item (a ``(chunk, N)`` matrix); ``knn`` asks
    an exact faiss k-NN index for the ``max(R) + 1`` nearest of each query (what large sets need: no ``N``-wide
    rows), and re-ranks densely the rare queries whose run of equal distances crosses that cut, so that the tie
    rule — and every figure — is the dense method's; ``auto`` (default): ``knn`` from ``KNN_FROM`` items.
    """
    if not bool(torch.isfinite(embeddings).all()):
        bad = int((~torch.isfinite(embeddings)).any(1).sum()) if embeddings.ndim == 2 else -1
        raise ValueError(f"{bad} of {len(embeddings)} embeddings hold NaN or infinite values: retrieval metrics of "
                         "them are meaningless (did training diverge? lower train.lr)")  # fmt: skip
    dist = distance or SquaredEuclidean()  # the same ranking as Euclidean, without the square root
    emb = centred(embeddings, dist)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n = len(y)
    counts = torch.bincount(y - y.min())[y - y.min()] - 1  # R per query
    max_k = max(max(recall_at), int(counts.max()))
    max_k = min(max_k, n - 1)
    sums = {"p1": 0.0, "r_prec": 0.0, "map_r": 0.0, **{f"r{k}": 0.0 for k in recall_at}}
    if method == "auto":
        method = "knn" if n >= KNN_FROM and _knn_metric(dist) is not None and _has_faiss() else "dense"
    if method == "knn":
        exact_rows = _knn_hits(emb, y, counts, max_k, dist, sums=sums, recall_at=recall_at)
    elif method == "dense":
        exact_rows = torch.arange(n)
    else:
        raise ValueError(f"unknown retrieval method {method!r}; use auto, dense or knn")
    for start in range(0, len(exact_rows), chunk):
        rows = exact_rows[start : start + chunk]
        d = as_dissimilarity(dist.matrix(emb[rows], emb), dist)
        d[torch.arange(len(rows)), rows] = float("inf")  # leave the query itself out
        vals, idx = torch.topk(d, max_k, dim=1, largest=False, sorted=True)
        hits = (y[idx] == y[rows, None]).to(torch.int8)
        edge = vals[:, -1:]  # topk sorted ascending: the k-th place
        misses_at_edge = ((d == edge) & (y[None, :] != y[rows, None])).sum(1, keepdim=True)
        _accumulate(_ranked_hits(vals, hits, misses_at_edge), counts[rows], sums, recall_at)
    valid = int((counts > 0).sum())
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


CENTRE_FROM = 1e3
"""Euclidean retrieval centres embeddings whose mean's squared norm is at least this many times their spread."""


def centred(embeddings: torch.Tensor, dist: Distance) -> torch.Tensor:
    """``embeddings`` ``(N, D)`` as float32 — for the Euclidean distances, moved to their mean (in float64) when
    they lie far from the origin against their spread (``CENTRE_FROM``): a translation leaves those distances
    unchanged, while the dense ``|a|² + |b|² − 2a·b`` and faiss's L2 lose every digit of the differences of such
    vectors in float32 (a mean of 1e4 left P@1 at 0). Embeddings near the origin are left as given (their exact
    ties stay exact), as are other distances (cosine, dot product: not translation-invariant)."""
    if getattr(dist, "name", "") not in ("euclidean", "squared_euclidean") or len(embeddings) < 2:
        return embeddings.float()
    x = embeddings.double()
    mean = x.mean(0, keepdim=True)
    spread = float(((x - mean) ** 2).sum(1).mean())
    if float((mean**2).sum()) < CENTRE_FROM * spread:
        return embeddings.float()
    return (x - mean).float()


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _knn_metric(dist: Distance) -> str | None:
    """The faiss metric that ranks like ``dist``: L2 for the Euclidean distances, inner product of normalised
    vectors for the cosine ones; None for others."""
    name = getattr(dist, "name", "")
    if name in ("euclidean", "squared_euclidean"):
        return "l2"
    if name in ("cosine", "cosine_similarity"):
        return "ip"
    return None


def _knn_hits(
    emb: torch.Tensor, y: torch.Tensor, counts: torch.Tensor, max_k: int, dist: Distance, *, sums: dict[str, float],
    recall_at: tuple[int, ...], chunk: int = 8192,
) -> torch.Tensor:  # fmt: skip
    """Rank every query by an exact faiss index and add its figures to ``sums``; returns the queries left to rank
    densely (a run of equal distances crossing the ``max_k``-th place, or the query not found among its own
    nearest), whose figures are not added."""
    import faiss

    x = np.ascontiguousarray(emb.numpy(), dtype=np.float32)
    metric = _knn_metric(dist)
    if metric == "ip":
        x = x.copy()
        faiss.normalize_L2(x)
    index: Any = faiss.IndexFlatIP(x.shape[1]) if metric == "ip" else faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    redo: list[torch.Tensor] = []
    want = min(max_k + 2, len(x))  # the query itself, max_k others, and one more to see a tie at the cut
    for start in range(0, len(x), chunk):
        rows = torch.arange(start, min(start + chunk, len(x)))
        raw, found = index.search(x[start : rows[-1] + 1], want)
        vals = torch.from_numpy(-raw if metric == "ip" else raw)
        idx = torch.from_numpy(found)
        own = idx == rows[:, None]
        lost = ~own.any(1)  # the query itself was not among the nearest (more than max_k exact duplicates)
        own[lost, -1] = True  # drop the last column of those rows instead; they are ranked densely
        keep = ~own
        vals = vals[keep].view(len(rows), want - 1)
        idx = idx[keep].view(len(rows), want - 1)
        crossing = (
            (vals[:, max_k - 1] == vals[:, max_k]) if want - 1 > max_k else torch.zeros(len(rows), dtype=torch.bool)
        )
        dense = lost | crossing | (idx[:, :max_k] < 0).any(1)
        ok = ~dense
        vals, idx = vals[ok, :max_k], idx[ok, :max_k]
        hits = (y[idx] == y[rows[ok], None]).to(torch.int8)
        _accumulate(_ranked_hits(vals, hits), counts[rows[ok]], sums, recall_at)  # the k-th place's run is all here
        redo.append(rows[dense])
    return torch.cat(redo) if redo else torch.empty(0, dtype=torch.int64)


def _accumulate(hits: torch.Tensor, r: torch.Tensor, sums: dict[str, float], recall_at: tuple[int, ...]) -> None:
    """Add the figures of queries with ranked ``hits`` ``(q, max_k)`` and ``r`` same-class others to ``sums``
    (queries with ``r = 0`` are left out)."""
    keep = r > 0
    if not keep.any():
        return
    hits, r = hits[keep], r[keep]
    max_k = hits.shape[1]
    pos = torch.arange(1, max_k + 1, dtype=torch.float32)
    within_r = (pos[None, :] <= r[:, None]).float()
    sums["p1"] += float(hits[:, 0].sum())
    sums["r_prec"] += float(((hits * within_r).sum(1) / r).sum())
    precision_at_i = hits.cumsum(1) / pos[None, :]
    sums["map_r"] += float(((precision_at_i * hits * within_r).sum(1) / r).sum())
    for k in recall_at:
        sums[f"r{k}"] += float((hits[:, :k].sum(1) > 0).sum())


def _tie_sorted(vals: torch.Tensor, hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``vals`` ascending with, within equal values, misses before hits (only rows not already in that order are
    sorted: a k-NN index returns its rows ascending, and ties are rare)."""
    step = vals[:, 1:] - vals[:, :-1]
    todo = ((step < 0) | ((step == 0) & (hits[:, 1:] < hits[:, :-1]))).any(1).nonzero().squeeze(1)
    if len(todo) == 0:
        return vals, hits
    v, h = vals[todo], hits[todo]
    by_hit = torch.sort(h, dim=1, stable=True).indices  # misses first, then a stable sort by distance
    order = by_hit.gather(1, torch.sort(v.gather(1, by_hit), dim=1, stable=True).indices)
    vals, hits = vals.clone(), hits.clone()
    vals[todo], hits[todo] = v.gather(1, order), h.gather(1, order)
    return vals, hits


def _ranked_hits(vals: torch.Tensor, hits: torch.Tensor, misses_at_edge: torch.Tensor | None = None) -> torch.Tensor:
    """Whether each of the ``k`` nearest items (dissimilarities ``vals`` ``(q, k)``, same-class flags ``hits``) has
    the query's class, ties broken against the query: wrong-class items first within a run of equal distances,
    including the run cut by the k-th place, filled by its wrong-class members first (``misses_at_edge``: how
    many items of another class, over the whole row, sit at the k-th place's distance; None when that run lies
    wholly within the ``k``, where sorting misses first already places it)."""
    vals, hits = _tie_sorted(vals, hits)
    if misses_at_edge is None:
        return hits.float()
    edge = vals[:, -1:]  # the run of ties that the k-th place cuts
    in_edge = vals == edge
    rank_in_edge = in_edge.cumsum(1) - 1
    hits = torch.where(in_edge, (rank_in_edge >= misses_at_edge).to(torch.int8), hits)
    return hits.float()


def threshold_at_fpr(distances: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """The largest distance threshold whose false-accept rate on these pairs is at most ``fpr`` (``same`` iff
    distance ≤ threshold): it admits at most ⌊fpr · n_impostor⌋ impostors, and sits just below (the next float
    down from) the first impostor distance it must refuse — so every genuine pair nearer than that impostor is
    accepted, which the target allows. Impostors tied with the first refused one are refused with it. With room
    for every impostor, the largest distance."""
    labels, d = _check(labels, distances)
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"a false-accept rate is in [0, 1], got {fpr}")
    imp = np.sort(d[labels == 0])
    allowed = int(np.floor(fpr * len(imp) + 1e-9))
    if allowed >= len(imp):
        return float(d.max())
    return float(np.nextafter(imp[allowed], -np.inf))


def rates_at(distances: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-accept rate, false-reject rate) of ``same = distance ≤ threshold`` on these pairs."""
    labels, d = _check(labels, distances)
    accept = d <= threshold
    return float(accept[labels == 0].mean()), float((~accept[labels == 1]).mean())


def kfold_verification_accuracy(
    distances: np.ndarray, labels: np.ndarray, folds: int = 10, seed: int = 0, groups: np.ndarray | None = None
) -> dict[str, Any]:
    """The LFW protocol (Huang et al. 2007; SPEC §8): the pairs in ``folds`` folds (seeded); for each fold the
    best-accuracy threshold is chosen on the other folds and the accuracy measured on it. Returns the mean, the
    standard deviation, the per-fold accuracies, ``folds_by`` and ``pairs_used``.

    With ``groups`` ``(M, 2)`` (the identity of each pair's two images) and at least ``2 · folds`` identities, the
    folds are identity-disjoint, as LFW's are person-disjoint: each identity belongs to one fold, and a pair
    whose two identities fall in different folds is left out (``folds_by = "identity"``) — the threshold is then
    always scored on people it was not chosen on. Otherwise the pairs are dealt into folds, genuine and impostor
    pairs spread evenly (``folds_by = "pairs"``)."""
    labels, d = _check(labels, distances)
    rng = np.random.default_rng(seed)
    fold_of, how = _identity_folds(groups, labels, folds, rng) if groups is not None else (None, "pairs")
    if fold_of is None:
        fold_of, how = _pair_folds(labels, folds, rng), "pairs"
    accs = []
    for f in range(folds):
        test, train = fold_of == f, (fold_of != f) & (fold_of >= 0)
        if not test.any() or len(np.unique(labels[train])) < 2:
            continue
        thr = best_threshold(d[train], labels[train])
        accs.append(verification_accuracy(d[test], labels[test], thr))
    if not accs:
        raise ValueError("too few pairs for a k-fold verification accuracy")
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "folds": [float(a) for a in accs],
            "folds_by": how, "pairs_used": int((fold_of >= 0).sum())}  # fmt: skip


def _pair_folds(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Each pair's fold, stratified: each fold holds a share of the genuine and of the impostor pairs."""
    fold_of = np.empty(len(labels), np.int64)
    for tag in (0, 1):
        rows = rng.permutation(np.flatnonzero(labels == tag))
        fold_of[rows] = np.arange(len(rows)) % folds
    return fold_of


def _identity_folds(
    groups: np.ndarray, labels: np.ndarray, folds: int, rng: np.random.Generator
) -> tuple[np.ndarray | None, str]:  # fmt: skip
    """Each pair's fold when identities are dealt into ``folds`` folds (−1: its identities are in two folds);
    None when there are fewer than ``2 · folds`` identities or some fold would lack genuine or impostor pairs."""
    g = np.asarray(groups, np.int64).reshape(len(labels), 2)
    ids = np.unique(g)
    if len(ids) < 2 * folds:
        return None, "pairs"
    id_fold = np.empty(len(ids), np.int64)
    id_fold[rng.permutation(len(ids))] = np.arange(len(ids)) % folds
    fa, fb = id_fold[np.searchsorted(ids, g[:, 0])], id_fold[np.searchsorted(ids, g[:, 1])]
    fold_of = np.where(fa == fb, fa, -1)
    for f in range(folds):
        here = labels[fold_of == f]
        if not ((here == 1).any() and (here == 0).any()):
            return None, "pairs"
    return fold_of, "identity"
