"""P×K sampler: every image covered each epoch, P distinct classes × K images per batch, small classes drawn
with replacement and reported, seeded plans."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from siamkit.data.samplers import PKSampler
from siamkit.errors import ConfigError, DataError


def check_plan(labels: np.ndarray, batches: list[np.ndarray], p: int, k: int) -> None:
    for b in batches:
        assert len(b) == p * k
        classes, counts = np.unique(labels[b], return_counts=True)
        assert len(classes) == p and (counts == k).all(), (classes, counts)
    assert set(np.concatenate(batches)) == set(range(len(labels)))  # every image at least once


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p,k", [(2, 2), (3, 4), (5, 3)])
def test_every_image_every_epoch_with_p_classes_of_k(seed, p, k):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, 200)
    s = PKSampler(labels, p, k, seed)
    for epoch in (1, 2):
        batches = s.batches(epoch)
        check_plan(labels, batches, p, k)
        # no more than one extra chunk per class per epoch beyond the images it has, plus the fill-ups
        assert len(batches) <= len(s) + 7


def test_balanced_classes_give_exactly_one_pass():
    labels = np.repeat(np.arange(4), 12)  # 4 classes × 12, K = 4: 3 chunks each, P = 2 → 6 batches
    batches = PKSampler(labels, 2, 4, 0).batches(1)
    assert len(batches) == 6
    assert sorted(np.concatenate(batches).tolist()) == list(range(48))  # each image exactly once


def test_small_classes_are_drawn_with_replacement_and_reported(caplog):
    labels = np.array([0] * 10 + [1] * 10 + [2] * 2 + [3])  # class 2 has 2 < K images, class 3 a single one
    with caplog.at_level(logging.WARNING):
        s = PKSampler(labels, 3, 4, 0)
    assert s.n_small == 2 and s.n_single == 1
    assert "2 of 4 classes have fewer than K=4 images (1 with a single image)" in caplog.text
    batches = s.batches(1)
    check_plan(labels, batches, 3, 4)
    for b in batches:  # a small class fills its K slots from its own images only
        for c in (2, 3):
            if (labels[b] == c).any():
                assert set(b[labels[b] == c]) <= set(np.flatnonzero(labels == c))


def test_chunks_topped_up_without_repeating_inside_a_chunk():
    labels = np.repeat(np.arange(3), [5, 6, 7])  # K = 4 → the last chunk of every class needs a top-up
    for epoch in range(5):
        for b in PKSampler(labels, 2, 4, 0).batches(epoch):
            for c in np.unique(labels[b]):
                members = b[labels[b] == c]
                assert len(set(members.tolist())) == len(members)  # classes ≥ K: no duplicate inside a chunk


def test_plans_are_seeded():
    labels = np.random.default_rng(0).integers(0, 5, 100)
    a, b = PKSampler(labels, 3, 3, 7), PKSampler(labels, 3, 3, 7)
    assert all((x == y).all() for x, y in zip(a.batches(4), b.batches(4)))
    assert any((x != y).any() for x, y in zip(a.batches(4), a.batches(5)))


def test_p_is_capped_at_the_number_of_classes(caplog):
    with caplog.at_level(logging.WARNING):
        s = PKSampler(np.repeat(np.arange(3), 8), 10, 4, 0)
    assert s.p == 3 and "exceeds the 3 classes" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        PKSampler(np.repeat(np.arange(2), 8), 10, 4, 0, "validation")
    assert "sampling.p=10 exceeds the 2 validation classes: using P=2 for the validation batches" in caplog.text


def test_bad_settings_and_data_are_one_line_errors():
    with pytest.raises(ConfigError, match="sampling.k"):
        PKSampler(np.arange(10) % 2, 2, 1)
    with pytest.raises(ConfigError, match="sampling.p"):
        PKSampler(np.arange(10) % 2, 1, 2)
    with pytest.raises(DataError, match="one class"):
        PKSampler(np.zeros(10, np.int64), 2, 2)
    with pytest.raises(DataError, match="no images"):
        PKSampler(np.zeros(0, np.int64), 2, 2)
