"""How each siamkit distance (a run's ``eval.distance``) is kept in a vector index, in one table for both
backends: which faiss metric and which Qdrant ``Distance`` rank like it, whether vectors are L2-normalised first,
and how an index's raw score becomes the distance ``verify`` reports (smaller = closer).

``euclidean`` (L2 index, square root taken), ``squared_euclidean``, ``cosine`` (1 − cos: inner product of
L2-normalised vectors) and ``cosine_similarity`` (reported negated, like the verification threshold). A name
not in the table is kept as squared Euclidean (L2, raw score as it is).

Example:
    >>> import numpy as np
    >>> to_distance(np.array([4.0, 9.0]), "euclidean").tolist()
    [2.0, 3.0]
    >>> to_distance(np.array([1.0, 0.25]), "cosine").tolist()
    [0.0, 0.75]
    >>> INDEX_METRICS["cosine_similarity"].qdrant, higher_is_closer("cosine_similarity")
    ('COSINE', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class IndexMetric:
    """How one distance is kept in an index."""

    faiss: str
    """The faiss metric constant (``faiss.METRIC_L2``, ``faiss.METRIC_INNER_PRODUCT``) by name."""
    qdrant: str
    """The member of ``qdrant_client.models.Distance`` by name (COSINE normalises by itself)."""
    normalized: bool
    """Vectors are L2-normalised before they are stored or searched."""


L2 = IndexMetric("METRIC_L2", "EUCLID", normalized=False)
INNER_PRODUCT = IndexMetric("METRIC_INNER_PRODUCT", "COSINE", normalized=True)
INDEX_METRICS: dict[str, IndexMetric] = {
    "euclidean": L2,
    "squared_euclidean": L2,
    "cosine": INNER_PRODUCT,
    "cosine_similarity": INNER_PRODUCT,
}
IP_METRICS = tuple(name for name, m in INDEX_METRICS.items() if m is INNER_PRODUCT)
L2_METRICS = tuple(name for name, m in INDEX_METRICS.items() if m is L2)


def index_metric(metric: str) -> IndexMetric:
    """The index form of ``metric`` (L2 for a name not in :data:`INDEX_METRICS`)."""
    return INDEX_METRICS.get(metric, L2)


def higher_is_closer(metric: str) -> bool:
    """Whether the index's raw scores rank larger first (inner products) rather than smaller (squared L2)."""
    return index_metric(metric) is INNER_PRODUCT


def normalized(metric: str) -> bool:
    """Whether a gallery of ``metric`` L2-normalises its vectors."""
    return index_metric(metric).normalized


def faiss_metric(faiss: Any, metric: str) -> Any:
    """The faiss metric constant of ``metric`` (``faiss``: the imported faiss module)."""
    return getattr(faiss, index_metric(metric).faiss)


def qdrant_distance(models: Any, metric: str) -> Any:
    """The ``Distance`` of ``metric`` (``models``: ``qdrant_client.models``)."""
    return getattr(models.Distance, index_metric(metric).qdrant)


def from_qdrant_score(score: float, metric: str) -> float:
    """A Qdrant score as the faiss raw score :func:`to_distance` converts: Qdrant's EUCLID score is the distance
    itself (faiss's L2 is its square), its COSINE score the similarity (faiss's inner product)."""
    return float(score) if higher_is_closer(metric) else float(score) ** 2


def to_distance(raw: np.ndarray, metric: str) -> np.ndarray:
    """faiss raw scores (squared L2, or the inner product of normalised vectors) → the run's dissimilarity."""
    if metric == "euclidean":
        return np.sqrt(np.maximum(raw, 0.0))
    if metric == "cosine":
        return 1.0 - raw
    if metric == "cosine_similarity":
        return -raw
    return raw
