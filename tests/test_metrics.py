"""Metrics against hand-computed tiny cases, scikit-learn and brute-force loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from siamkit.distances import verification_accuracy
from siamkit.evaluate import metrics as M


def test_tpr_at_fpr_hand_case():
    # 4 impostors with scores 0.9, 0.4, 0.3, 0.1; 4 genuine with 0.8, 0.7, 0.35, 0.2
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.9, 0.4, 0.3, 0.1, 0.8, 0.7, 0.35, 0.2])
    (half,) = M.tpr_at_fpr(labels, scores, (0.5,))
    # thresholds with FPR ≤ 0.5: accept ≥ 0.35 → FPR 0.25 (0.9), TPR 0.75; accept ≥ 0.3 → FPR .5, TPR .75
    assert half.tpr_conservative == pytest.approx(0.75)
    assert half.tpr_interpolated == pytest.approx(0.75)
    assert half.n_impostor == 4 and half.reliable is False  # 4 × 0.5 < 3
    (zero,) = M.tpr_at_fpr(labels, scores, (0.1,))
    # conservative: nothing real below FPR .25 but the empty threshold → TPR 0; interpolated 0
    assert zero.tpr_conservative == 0.0


def test_interpolated_is_not_below_conservative_and_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(labels * 1.0, 1.0)
    for t in M.tpr_at_fpr(labels, scores):
        assert t.tpr_interpolated >= t.tpr_conservative - 1e-12
    assert M.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_eer_closed_form():
    # perfectly separated → 0; fully reversed → 1; symmetric overlap of one item each side
    assert M.eer(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert M.eer(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(1.0)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.75, 0.7, 0.8, 0.85, 0.9])
    assert M.eer(labels, scores) == pytest.approx(0.25)


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(1)
    d = np.round(rng.uniform(0, 2, 60), 2)  # with ties
    y = (d + rng.normal(0, 0.4, 60) < 1.0).astype(int)
    thr = M.best_threshold(d, y)
    best = max(verification_accuracy(d, y, t) for t in np.concatenate([[-1.0], np.unique(d)]))
    assert verification_accuracy(d, y, thr) == pytest.approx(best)


def test_similarity_accuracy():
    assert M.similarity_accuracy(np.array([0.1, 0.5, 0.3]), np.array([0.2, 0.4, 0.3])) == pytest.approx(1 / 3)


def loop_retrieval(emb, labels, ks):
    """Plain loop; ties broken against the query: sorted by (distance, same class) — misses first."""
    n = len(labels)
    res = {"precision_at_1": [], "r_precision": [], "map_at_r": [], **{f"recall_at_{k}": [] for k in ks}}
    for q in range(n):
        others = [j for j in range(n) if j != q]
        d = [float(((emb[q] - emb[j]) ** 2).sum()) for j in others]
        ranked = sorted(others, key=lambda j: (d[others.index(j)], labels[j] == labels[q]))
        correct = [labels[j] == labels[q] for j in ranked]
        r = sum(labels[j] == labels[q] for j in others)
        if r == 0:
            continue
        res["precision_at_1"].append(float(correct[0]))
        res["r_precision"].append(sum(correct[:r]) / r)
        ap = sum(sum(correct[: i + 1]) / (i + 1) for i in range(r) if correct[i]) / r
        res["map_at_r"].append(ap)
        for k in ks:
            res[f"recall_at_{k}"].append(float(any(correct[:k])))
    return {k: float(np.mean(v)) for k, v in res.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_retrieval_matches_loop(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 40)
    labels[0] = 9  # a singleton class: skipped as a query
    emb = torch.from_numpy(rng.normal(size=(40, 3)) + labels[:, None] * 0.5).float()
    got = M.retrieval_metrics(emb, labels, (1, 2, 5), chunk=7)
    want = loop_retrieval(emb.numpy(), labels, (1, 2, 5))
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    assert got["n_queries"] == 39


def test_map_at_r_hand_case():
    # class A at 0, 1, 10; class B at 2.5 (no ties)
    emb = torch.tensor([[0.0], [1.0], [10.0], [2.5]])
    labels = np.array([0, 0, 0, 1])
    got = M.retrieval_metrics(emb, labels, (1,))
    # queries: 0 → [1 A, 3 B]: AP .5 ; 1 → [0 A, 3 B]: .5 ; 2 → [3 B, 1 A]: P(2)=.5 → .25; 3 has no class mate
    assert got["map_at_r"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
    assert got["precision_at_1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_with_ties_is_order_independent_and_matches_loop(seed):
    # embeddings on a coarse grid: many exactly tied distances, inside the top R and across its edge
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 30)
    emb = torch.from_numpy(rng.integers(0, 2, (30, 2)).astype(np.float32))
    got = M.retrieval_metrics(emb, labels, (1, 3), chunk=8)
    want = loop_retrieval(emb.numpy(), labels, (1, 3))
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    perm = rng.permutation(30)
    shuffled = M.retrieval_metrics(emb[perm], labels[perm], (1, 3), chunk=8)
    for k in want:
        assert shuffled[k] == pytest.approx(got[k], abs=1e-6), k


def test_identical_embeddings_score_zero_in_any_order():
    labels = np.repeat(np.arange(4), 5)
    emb = torch.ones(20, 8)
    for order in (np.arange(20), np.random.default_rng(0).permutation(20)):
        got = M.retrieval_metrics(emb[order], labels[order], (1,))
        assert got["map_at_r"] == 0.0 and got["precision_at_1"] == 0.0


def test_reliable_rests_on_distinct_impostors():
    from siamkit.evaluate.evaluator import PairScores, verification_metrics

    rng = np.random.default_rng(0)
    # 4,000 impostor rows that are only 100 distinct pairs, repeated (as a CSV with repeated rows would give)
    imp = np.tile(np.stack([np.arange(100), np.arange(100) + 100], 1), (40, 1))
    gen = np.stack([np.arange(50), np.arange(50) + 300], 1)
    index = np.concatenate([gen, imp])
    labels = np.r_[np.ones(50, int), np.zeros(len(imp), int)]
    m = verification_metrics(PairScores(rng.random(len(labels)), labels, index), None)
    assert m["n_impostor"] == 4000 and m["n_impostor_distinct"] == 100 and m["n_genuine_distinct"] == 50
    at = {t["fpr"]: t for t in m["tpr_at_fpr"]}
    assert at[0.1]["reliable"] and not at[0.01]["reliable"]  # 100 × 0.01 < 3 although 4,000 × 0.01 ≥ 3
    assert at[0.01]["n_impostor"] == 100


def test_threshold_at_fpr_hand_case_and_brute_force():
    # impostors at 1..10, genuine at 0.5, 2.5, 2.9: FPR ≤ 0.2 admits 2 impostors → the largest threshold below the
    # third (3.0), which accepts the genuine pair at 2.9 (a midpoint, 2.5, refused it though the target allows it)
    d = np.r_[np.arange(1.0, 11.0), 0.5, 2.5, 2.9]
    y = np.r_[np.zeros(10, int), 1, 1, 1]
    thr = M.threshold_at_fpr(d, y, 0.2)
    assert 2.9 < thr < 3.0 and thr == np.nextafter(3.0, -np.inf)
    assert M.rates_at(d, y, thr) == (0.2, 0.0)
    assert M.threshold_at_fpr(d, y, 0.0) < 1.0 and M.rates_at(d, y, M.threshold_at_fpr(d, y, 0.0))[0] == 0.0
    assert M.threshold_at_fpr(d, y, 1.0) == 10.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = np.round(rng.random(300), 2)  # ties
        y = rng.integers(0, 2, 300)
        for target in (0.001, 0.05, 0.3):
            thr = M.threshold_at_fpr(d, y, target)
            far = M.rates_at(d, y, thr)[0]
            assert far <= target + 1e-12
            # no larger candidate threshold (any distance value above it) keeps the FPR within the target
            bigger = np.unique(d[d > thr])
            assert all(M.rates_at(d, y, t)[0] > target for t in bigger[:1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_at_fpr_is_the_largest_within_the_target_off_any_grid(seed):
    """Continuous distances (no grid, no ties): the threshold keeps the FPR within the target, every genuine pair
    nearer than the first impostor it must refuse is accepted, and nothing above it keeps the target."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 2000)
    d = rng.normal(1.0 - 0.5 * y, 0.3) * np.pi  # off any decimal grid
    for target in (0.001, 0.013, 0.1, 0.37):
        thr = M.threshold_at_fpr(d, y, target)
        imp = np.sort(d[y == 0])
        first_refused = imp[int(np.floor(target * len(imp) + 1e-9))]
        assert M.rates_at(d, y, thr)[0] <= target
        assert (d[(y == 1) & (d < first_refused)] <= thr).all()  # no genuine pair the target allows is refused
        assert M.rates_at(d, y, float(first_refused))[0] > target  # the next candidate breaks the target
        assert thr < first_refused and np.nextafter(thr, np.inf) == first_refused


def test_retrieval_refuses_non_finite_embeddings():
    labels = np.repeat(np.arange(4), 5)
    for bad in (float("nan"), float("inf")):
        emb = torch.full((20, 8), bad)  # all-NaN embeddings gave P@1 = 1.0, which the checkpoint monitor trusted
        with pytest.raises(ValueError, match="NaN or infinite"):
            M.retrieval_metrics(emb, labels)
    emb = torch.randn(20, 8)
    emb[3, 2] = float("nan")
    with pytest.raises(ValueError, match="1 of 20"):
        M.retrieval_metrics(emb, labels, method="dense")


def _exact_p1_map(emb: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """P@1 and MAP@R by a float64 loop over exact squared differences (no |a|² + |b|² − 2a·b)."""
    x = emb.astype(np.float64)
    p1, maps = [], []
    for q in range(len(x)):
        d = ((x - x[q]) ** 2).sum(1)
        d[q] = np.inf
        order = np.argsort(d, kind="stable")
        r = int((labels == labels[q]).sum()) - 1
        hit = labels[order[:r]] == labels[q]
        p1.append(float(hit[0]))
        maps.append(float((np.cumsum(hit) / np.arange(1, r + 1) * hit).sum() / r))
    return float(np.mean(p1)), float(np.mean(maps))


@pytest.mark.parametrize("method", ["dense", "knn"])
def test_retrieval_keeps_exact_ranks_far_from_the_origin(method):
    # un-normalised embeddings around 1e4 whose classes differ by 0.05: float32's |a|² + |b|² − 2a·b loses every
    # digit of those differences (P@1 0.000 where the exact answer is far above chance)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 12)
    centres = rng.normal(0, 0.05, (10, 16))
    x = (1e4 + centres[labels] + rng.normal(0, 0.03, (120, 16))).astype(np.float32)
    want_p1, want_map = _exact_p1_map(x, labels)
    assert want_p1 > 0.5
    got = M.retrieval_metrics(torch.from_numpy(x), labels, method=method)
    assert got["precision_at_1"] == pytest.approx(want_p1, abs=1e-9)
    assert got["map_at_r"] == pytest.approx(want_map, abs=1e-6)


def test_kfold_folds_are_identity_disjoint_when_pairs_name_their_identities():
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 40, (3000, 2))
    y = (ids[:, 0] == ids[:, 1]).astype(int)
    y[:600] = 1
    ids[:600, 1] = ids[:600, 0]
    d = rng.normal(1.0 - 0.6 * y, 0.4)
    got = M.kfold_verification_accuracy(d, y, folds=10, seed=1, groups=ids)
    assert got["folds_by"] == "identity" and len(got["folds"]) == 10
    # the folds it used: every identity in one fold, no pair spanning two; recomputed here from the same seed
    fold_of, how = M._identity_folds(ids, y, 10, np.random.default_rng(1))
    assert how == "identity" and fold_of is not None and got["pairs_used"] == int((fold_of >= 0).sum())
    used = fold_of >= 0
    for f in range(10):
        inside = set(ids[fold_of == f].ravel())
        outside = set(ids[used & (fold_of != f)].ravel())
        assert inside and not inside & outside  # a threshold chosen on 9 folds never saw the 10th's people
    # too few identities for 10 disjoint folds: the pairs are dealt into folds, and it says so
    few = M.kfold_verification_accuracy(d, y, folds=10, seed=1, groups=ids % 12)
    assert few["folds_by"] == "pairs" and few["pairs_used"] == len(d)


def test_kfold_verification_accuracy_matches_a_loop():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    d = rng.normal(1.0 - 0.6 * y, 0.4)
    got = M.kfold_verification_accuracy(d, y, folds=10, seed=5)
    # the same stratified fold assignment, then a brute-force best threshold per 9 folds
    fold_rng = np.random.default_rng(5)
    fold_of = np.empty(400, int)
    for tag in (0, 1):
        rows = fold_rng.permutation(np.flatnonzero(y == tag))
        fold_of[rows] = np.arange(len(rows)) % 10
    accs = []
    for f in range(10):
        tr, te = fold_of != f, fold_of == f
        cands = np.r_[d[tr].min() - 1, (np.sort(d[tr])[1:] + np.sort(d[tr])[:-1]) / 2, d[tr].max()]
        best = max(cands, key=lambda t: ((d[tr] <= t) == (y[tr] == 1)).mean())
        accs.append(((d[te] <= best) == (y[te] == 1)).mean())
    assert got["mean"] == pytest.approx(np.mean(accs), abs=0.005)
    assert len(got["folds"]) == 10 and got["std"] == pytest.approx(np.std(got["folds"]))


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "cosine_similarity"])
def test_knn_retrieval_equals_the_dense_ranking(distance):
    from siamkit.distances import get_distance

    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((1500, 12)).astype(np.float32))
    y = rng.integers(0, 40, 1500)
    dense = M.retrieval_metrics(x, y, (1, 5), distance=get_distance(distance), method="dense")
    knn = M.retrieval_metrics(x, y, (1, 5), distance=get_distance(distance), method="knn")
    assert knn == pytest.approx(dense, abs=1e-7)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: np.repeat(rng.standard_normal((60, 4)), 5, axis=0),  # exact duplicates: ties at 0
        lambda rng: np.zeros((300, 4)),  # a collapsed embedding: every distance ties
        lambda rng: rng.integers(0, 3, (400, 2)).astype(float),  # a grid: long runs of equal distances
    ],
)
def test_knn_retrieval_keeps_the_tie_rule(make):
    rng = np.random.default_rng(4)
    x = torch.from_numpy(make(rng).astype(np.float32))
    y = rng.integers(0, 4, len(x))
    dense = M.retrieval_metrics(x, y, method="dense")
    assert M.retrieval_metrics(x, y, method="knn") == pytest.approx(dense, abs=1e-7)


def test_large_sets_are_ranked_by_the_knn_index(monkeypatch):
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((600, 6)).astype(np.float32))
    y = rng.integers(0, 10, 600)
    used = []
    real = M._knn_hits
    monkeypatch.setattr(M, "_knn_hits", lambda *a, **k: used.append(1) or real(*a, **k))
    want = M.retrieval_metrics(x, y)  # below KNN_FROM: dense
    assert used == []
    monkeypatch.setattr(M, "KNN_FROM", 500)
    assert M.retrieval_metrics(x, y) == pytest.approx(want, abs=1e-7) and used == [1]
    with pytest.raises(ValueError, match="unknown retrieval method"):
        M.retrieval_metrics(x, y, method="fast")
