"""Each loss against a plain loop over explicit pairs/triplets, and closed-form cases."""

from __future__ import annotations

import math

import pytest
import torch

from siamkit.distances import get_distance
from siamkit.losses.functional import bce_distance_loss, contrastive_loss, triplet_margin_loss


def loop_contrastive(a, b, y, m, variant, half):
    total = 0.0
    for i in range(len(a)):
        d = math.sqrt(sum((float(a[i, k]) - float(b[i, k])) ** 2 for k in range(a.shape[1])))
        neg = max(0.0, m - d) ** 2 if variant == "hadsell" else max(0.0, m * m - d * d)
        term = float(y[i]) * d * d + (1 - float(y[i])) * neg
        total += 0.5 * term if half else term
    return total / len(a)


def loop_distance(u, v, name):
    if name == "cosine":
        dot = sum(float(x) * float(z) for x, z in zip(u, v))
        nu = math.sqrt(sum(float(x) ** 2 for x in u))
        nv = math.sqrt(sum(float(z) ** 2 for z in v))
        return 1.0 - dot / (nu * nv)
    sq = sum((float(x) - float(z)) ** 2 for x, z in zip(u, v))
    return sq if name == "squared_euclidean" else math.sqrt(sq)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("variant", ["hadsell", "squared-margin"])
@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("half", [False, True])
def test_contrastive_matches_loop(seed, variant, margin, half):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g) * 0.5
    y = (torch.rand(12, generator=g) < 0.5).float()
    d = get_distance("euclidean").pairwise(a, b)
    got = float(contrastive_loss(d, y, margin, variant, half))
    assert got == pytest.approx(loop_contrastive(a, b, y, margin, variant, half), rel=1e-5)


def test_contrastive_closed_forms():
    zero = torch.zeros(4)
    # identical genuine pair → zero loss; impostor at distance ≥ m → zero; impostor at 0 → m² per pair
    assert float(contrastive_loss(zero, torch.ones(4), 1.0)) == 0.0
    assert float(contrastive_loss(torch.full((4,), 2.0), torch.zeros(4), 1.0)) == 0.0
    assert float(contrastive_loss(zero, torch.zeros(4), 1.5)) == pytest.approx(2.25)
    assert float(contrastive_loss(zero, torch.zeros(4), 1.5, "squared-margin", half=True)) == pytest.approx(1.125)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine"])
@pytest.mark.parametrize("margin", [0.1, 0.2, 1.0])
def test_triplet_matches_loop(seed, distance, margin):
    g = torch.Generator().manual_seed(seed)
    a, p, n = (torch.randn(10, 6, generator=g) for _ in range(3))
    dist = get_distance(distance)
    got = float(triplet_margin_loss(dist.pairwise(a, p), dist.pairwise(a, n), margin))
    want = (
        sum(
            max(0.0, loop_distance(a[i], p[i], distance) - loop_distance(a[i], n[i], distance) + margin)
            for i in range(10)
        )
        / 10
    )
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_triplet_easy_is_zero_and_hard_is_positive():
    a = torch.zeros(3, 2)
    p = torch.zeros(3, 2)
    n = torch.full((3, 2), 5.0)
    d = get_distance("euclidean")
    assert float(triplet_margin_loss(d.pairwise(a, p), d.pairwise(a, n), 1.0)) == 0.0
    assert float(triplet_margin_loss(d.pairwise(a, n), d.pairwise(a, p), 1.0)) == pytest.approx(math.sqrt(50) + 1)


def test_bce_matches_formula():
    logits = torch.tensor([2.0, -1.0, 0.5])
    y = torch.tensor([1.0, 0.0, 0.0])
    want = (
        -(
            math.log(1 / (1 + math.exp(-2)))
            + math.log(1 - 1 / (1 + math.exp(1)))
            + math.log(1 - 1 / (1 + math.exp(-0.5)))
        )
        / 3
    )
    assert float(bce_distance_loss(logits, y)) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", ["euclidean", "squared_euclidean", "cosine"])
def test_distance_matrix_agrees_with_pairwise(name):
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(7, 4, generator=g), torch.randn(5, 4, generator=g)
    dist = get_distance(name)
    m = dist.matrix(a, b)
    for i in range(7):
        for j in range(5):
            assert float(m[i, j]) == pytest.approx(loop_distance(a[i], b[j], name), rel=1e-4, abs=1e-5)
    assert dist.higher_is_closer is False
