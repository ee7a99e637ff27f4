"""Pair/triplet strategies, splits: correctness of labels, balance, seeding, small classes."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from siamkit.config import SamplingConfig
from siamkit.data.splits import split_indices
from siamkit.data.tuples import (
    TupleSampler,
    balanced_pairs,
    coin_flip_pairs,
    combination_triplets,
    distinct_count,
    distinct_pairs,
    fixed_tuples,
    per_image_pairs,
    random_triplets,
)
from siamkit.errors import DataError

LABELS = np.array([0] * 5 + [1] * 7 + [2] * 1 + [3] * 4)  # class 2 has a single image


def _check_pairs(table, labels):
    a, b = table.index.T
    assert (a != b).all()
    assert np.array_equal((labels[a] == labels[b]).astype(int), table.labels)


def test_per_image_pairs(caplog):
    with caplog.at_level(logging.WARNING):
        t = per_image_pairs(LABELS, np.random.default_rng(0))
    _check_pairs(t, LABELS)
    eligible = np.flatnonzero(LABELS != 2)
    assert len(t) == 2 * len(eligible) and t.labels.sum() == len(eligible)
    assert set(t.index[:, 0]) == set(eligible)  # one positive + one negative per image
    assert "1 classes with fewer than 2 images left out" in caplog.text


def test_coin_flip_and_balanced_pairs():
    t = coin_flip_pairs(LABELS, np.random.default_rng(1))
    _check_pairs(t, LABELS)
    b = balanced_pairs(LABELS, 300, 200, np.random.default_rng(2))
    _check_pairs(b, LABELS)
    assert b.labels.sum() == 300 and (b.labels == 0).sum() == 200
    big = coin_flip_pairs(np.repeat(np.arange(10), 100), np.random.default_rng(3))
    assert 0.45 < big.labels.mean() < 0.55


def test_negatives_are_uniform_over_other_classes():
    labels = np.array([0, 0, 1, 2, 2, 2])
    t = balanced_pairs(labels, 0, 60000, np.random.default_rng(0))
    from_class0 = t.index[labels[t.index[:, 0]] == 0, 1]
    counts = np.bincount(from_class0, minlength=6)[2:] / len(from_class0)
    assert np.allclose(counts, 0.25, atol=0.02)


def test_triplets_random_and_combinations():
    t = random_triplets(LABELS, np.random.default_rng(0))
    a, p, n = t.index.T
    assert (LABELS[a] == LABELS[p]).all() and (a != p).all() and (LABELS[a] != LABELS[n]).all()
    full = combination_triplets(LABELS, cap=10_000, rng=np.random.default_rng(0))
    assert len(full) == 10 + 35 + 0 + 4  # C(5,3) + C(7,3) + C(4,3)
    capped = combination_triplets(LABELS, cap=20, rng=np.random.default_rng(0))
    a, p, n = capped.index.T
    assert len(capped) == 20 and (LABELS[a] == LABELS[p]).all() and (a != p).all() and (LABELS[a] != LABELS[n]).all()


def test_sampler_is_seeded_and_regenerates():
    cfg = SamplingConfig(pairs="per-image", regenerate=True)
    s1 = TupleSampler(LABELS, None, "pairs", cfg, seed=5)
    s2 = TupleSampler(LABELS, None, "pairs", cfg, seed=5)
    assert np.array_equal(s1.draw(1).index, s2.draw(1).index)
    assert not np.array_equal(s1.draw(1).index, s1.draw(2).index)
    fixed = TupleSampler(LABELS, None, "pairs", SamplingConfig(regenerate=False), seed=5)
    assert np.array_equal(fixed.draw(1).index, fixed.draw(2).index)


def test_one_class_or_all_singletons_is_an_error():
    with pytest.raises(DataError, match="one class"):
        per_image_pairs(np.zeros(5, int), np.random.default_rng(0))
    with pytest.raises(DataError, match="fewer than 2 images"):
        per_image_pairs(np.arange(5), np.random.default_rng(0))


def test_splits():
    labels = np.repeat(np.arange(10), 20)
    rng = np.random.default_rng(0)
    keep, held = split_indices(labels, "random", 0.2, 0, rng)
    assert len(held) == 40 and len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == 200
    keep, held = split_indices(labels, "per-class", 0.0, 3, rng)
    assert np.bincount(labels[held]).tolist() == [3] * 10
    keep, held = split_indices(labels, "identity", 0.3, 0, rng)
    assert len(set(labels[keep]) & set(labels[held])) == 0 and len(set(labels[held])) == 3
    with pytest.raises(DataError, match="cannot hold out"):
        split_indices(labels, "per-class", 0.0, 20, rng)


def _keys(index):
    return {(min(a, b), max(a, b)) for a, b in index.tolist()}


def test_distinct_pairs_take_every_pair_of_a_small_split():
    labels = np.repeat(np.arange(4), 5)  # 20 images: 40 genuine and 150 impostor pairs in all
    t = fixed_tuples(labels, None, "pairs", 5000, seed=0)
    _check_pairs(t, labels)
    assert t.labels.sum() == 40 and (t.labels == 0).sum() == 150
    assert len(_keys(t.index)) == len(t) == distinct_count(t.index)


@pytest.mark.parametrize("n", [30, 500])
def test_distinct_pairs_are_distinct_when_sampled(n):
    labels = np.repeat(np.arange(10), 30)  # 4,350 genuine and 40,500 impostor pairs
    t = distinct_pairs(labels, n, n, np.random.default_rng(1))
    _check_pairs(t, labels)
    assert t.labels.sum() == n and (t.labels == 0).sum() == n
    assert len(_keys(t.index)) == 2 * n  # no pair twice, in either order
    again = distinct_pairs(labels, n, n, np.random.default_rng(1))
    assert np.array_equal(t.index, again.index)  # seeded


def test_distinct_count_ignores_order():
    assert distinct_count(np.array([[0, 1], [1, 0], [2, 3], [0, 1]])) == 2


def _csv_bundle(n_images=40, n_rows=100, seed=0):
    import torch

    from siamkit.data.imageset import ImageSet, TupleTable
    from siamkit.data.readers import DatasetBundle

    rng = np.random.default_rng(seed)
    images = ImageSet(torch.zeros(n_images, 1, 4, 4, dtype=torch.uint8), np.full(n_images, -1), [])
    i, j = np.triu_indices(n_images, 1)
    index = np.stack([i, j], 1)[rng.permutation(len(i))[:n_rows]]  # distinct rows
    return DatasetBundle("pairs.csv", images, tuples=TupleTable(index, rng.integers(0, 2, n_rows)), layout="pairs-csv")


def test_csv_split_never_makes_test_the_validation_rows():
    from siamkit.config import DataConfig
    from siamkit.data.splits import make_splits
    from siamkit.errors import ConfigError

    s = make_splits(_csv_bundle(), DataConfig(test_fraction=0.2), seed=0)
    rows = [{tuple(r) for r in x.tuples.index.tolist()} for x in (s.train, s.val, s.test)]
    assert len(s.test.tuples) == 20 and not (rows[1] & rows[2])
    with pytest.raises(ConfigError, match="data.test_fraction=0.0 leaves no test rows"):
        make_splits(_csv_bundle(), DataConfig(test_fraction=0.0), seed=0)


def test_csv_split_warns_when_test_images_were_trained_on(caplog):
    from siamkit.config import DataConfig
    from siamkit.data.splits import make_splits

    with caplog.at_level(logging.WARNING):
        s = make_splits(_csv_bundle(), DataConfig(), seed=0)
    shared = np.intersect1d(np.unique(s.test.tuples.index), np.unique(s.train.tuples.index))
    line = [r.getMessage() for r in caplog.records if "also appear in training rows" in r.getMessage()]
    assert len(shared) > 0 and len(line) == 1
    assert f"{len(shared)} of the {len(np.unique(s.test.tuples.index))} images in test rows" in line[0]
