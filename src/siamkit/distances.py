"""Distances between embeddings, shared by losses, miners and evaluation.

Each knows whether a larger value means "closer" (``higher_is_closer``): Euclidean, squared Euclidean and
cosine distance are distances (smaller = closer, verification score ``-distance``); cosine similarity is a
similarity (larger = closer). Losses and miners work on ``as_dissimilarity(values)`` so one code path serves
both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from siamkit.errors import ConfigError
from siamkit.registry import Registry


class Distance:
    name = "distance"
    higher_is_closer = False

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise distance ``(B,)`` between ``(B, D)`` and ``(B, D)``."""
        raise NotImplementedError

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """All-pairs distance ``(M, N)`` between ``(M, D)`` and ``(N, D)``."""
        raise NotImplementedError

    def score(self, d: torch.Tensor) -> torch.Tensor:
        """A score where higher means "same" (for ROC)."""
        return d if self.higher_is_closer else -d


DISTANCES: Registry[Distance] = Registry("distance")


@DISTANCES.register("squared_euclidean")
class SquaredEuclidean(Distance):
    name = "squared_euclidean"

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).pow(2).sum(-1)

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # ||a||² + ||b||² − 2ab, clamped: cancellation can give tiny negatives.
        d = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2.0 * a @ b.T
        return d.clamp_min(0.0)


@DISTANCES.register("euclidean")
class Euclidean(SquaredEuclidean):
    name = "euclidean"

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # clamp before sqrt: the gradient of sqrt at 0 is infinite
        return super().pairwise(a, b).clamp_min(1e-12).sqrt()

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return super().matrix(a, b).clamp_min(1e-12).sqrt()


@DISTANCES.register("cosine")
class Cosine(Distance):
    """Cosine distance 1 − cos(a, b), in [0, 2]."""

    name = "cosine"

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.cosine_similarity(a, b, dim=-1)

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def get_distance(name: str | Distance) -> Distance:
    """The distance registered as ``name`` (or a user's ``package.module:Class``); a ``Distance`` object is
    returned as it is, so that Python callers can pass one in (a loss's ``distance`` option takes either).

    Example:
        >>> get_distance("cosine").name, get_distance(Euclidean()).name
        ('cosine', 'euclidean')
    """
    if isinstance(name, Distance):
        return name
    distance = DISTANCES.create(name)
    if not isinstance(distance, Distance):
        raise ConfigError(f"distance {name!r} is a {type(distance).__name__}, not a siamkit.distances.Distance")
    return distance


@DISTANCES.register("cosine_similarity")
class CosineSimilarity(Distance):
    """Cosine similarity cos(a, b) in [−1, 1]: larger means closer (``higher_is_closer``)."""

    name = "cosine_similarity"
    higher_is_closer = True

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(a, b, dim=-1)

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def as_dissimilarity(values: torch.Tensor, distance: Distance) -> torch.Tensor:
    """Values where smaller means closer: distances as they are, similarities negated. Margins then read the
    same for both: ``d(a, p) − d(a, n) + m`` becomes ``s(a, n) − s(a, p) + m`` for a similarity."""
    return -values if distance.higher_is_closer else values


def verification_accuracy(distances: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Share of pairs decided correctly by ``same = distance ≤ threshold``."""
    pred = np.asarray(distances) <= threshold
    return float((pred == (np.asarray(labels) == 1)).mean())
