"""What a loss computes on: one batch embedded once, gathered across ranks once and mined once.

``SiameseLoss.forward`` (``siamkit.losses.base``) does those three steps for every loss and hands the result, an
``Embedded``, to the loss's ``compute``. Fixed pairs and triplets become index tuples over their stacked rows,
exactly like the tuples a miner picks from a labelled batch, so a loss has one code path for both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from siamkit.distances import Distance, as_dissimilarity
from siamkit.errors import ConfigError
from siamkit.losses.miners import PairIndices, TripletIndices
from siamkit.models.siamese import SiameseNet

Gather = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Embedded:
    """One batch as a loss sees it (``N`` rows of every rank).

    - ``model``: the model being trained (for its sigmoid head, ``bce``).
    - ``embeddings`` ``(N, D)``: a labelled batch's images, or a fixed batch's tuples stacked — pairs: the
      first images, then the second ones; triplets: anchors, positives, negatives.
    - ``distance``: the loss's distance object (``siamkit.distances``), the one the miner's matrix used.
    - ``labels`` ``(N,)``: the class labels of a labelled batch (else ``None``).
    - ``pairs`` / ``triplets``: the tuples to score, as positions in ``embeddings`` — fixed, or mined. A pair loss
      gets ``pairs`` (a triplet miner's (a, p) and (a, n) as pairs), a triplet loss ``triplets``; a loss on
      labelled batches (proxies, multi-similarity) neither.
    - ``matrix`` ``(N, N)``: the dissimilarities the miner read (``as_dissimilarity`` of ``distance``), kept with
      their graph so that mined tuples read their distances from it (``None`` without a miner).
    - ``features`` ``(N, F)`` and ``head_weight`` ``(F, D)``: the second-to-last layer's rows and the embedding
      head's weight as in×out, for a loss that lists them in its ``needs`` (FDC/FDT), else ``None``.
    """

    model: SiameseNet
    embeddings: torch.Tensor
    distance: Distance
    labels: torch.Tensor | None = None
    pairs: PairIndices | None = None
    triplets: TripletIndices | None = None
    matrix: torch.Tensor | None = None
    features: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None

    def tuple_count(self) -> int | None:
        """How many pairs or triplets there are to score; ``None`` when the loss takes none (labels only)."""
        tuples = self.pairs if self.pairs is not None else self.triplets
        return None if tuples is None else len(tuples)

    def pair_distances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d, y)``: the dissimilarity ``(M,)`` (smaller = closer) of every pair and its label ``(M,)`` (1 same,
        0 different); read from ``matrix`` when the miner computed it, else ``distance`` on the rows."""
        p = self.pairs
        assert p is not None, "this batch holds no pairs"
        if self.matrix is not None:
            return self.matrix[p.i, p.j], p.y
        return self._dissimilarity(self.embeddings[p.i], self.embeddings[p.j]), p.y

    def triplet_distances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d(a, p), d(a, n))``, each ``(T,)``, of every triplet (dissimilarities, as ``pair_distances``)."""
        t = self.triplets
        assert t is not None, "this batch holds no triplets"
        if self.matrix is not None:
            return self.matrix[t.a, t.p], self.matrix[t.a, t.n]
        e = self.embeddings
        anchors = e[t.a]  # once: both distances then backpropagate into the same rows, as from one tensor
        return self._dissimilarity(anchors, e[t.p]), self._dissimilarity(anchors, e[t.n])

    def _dissimilarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return as_dissimilarity(self.distance.pairwise(a, b), self.distance)


def fixed_pairs(n: int, y: torch.Tensor) -> PairIndices:
    """The pairs ``(k, n + k)`` of ``n`` stacked pairs (first images, then second images), labels ``y`` ``(n,)``."""
    i = torch.arange(n, device=y.device)
    return PairIndices(i, i + n, y)


def fixed_triplets(n: int, device: torch.device) -> TripletIndices:
    """The triplets ``(k, n + k, 2n + k)`` of ``n`` stacked triplets (anchors, positives, negatives)."""
    i = torch.arange(n, device=device)
    return TripletIndices(i, i + n, i + 2 * n)


def gather_rows(gather: Gather | None, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows of every rank (this rank's alone when ``gather`` is ``None``: not distributed)."""
    return tensors if gather is None else tuple(gather(t) for t in tensors)


def projection(model: nn.Module | SiameseNet, who: str = "loss fdt/fdc") -> torch.Tensor:
    """``U`` ``(F, D)``: the embedding head's weight as in×out (``nn.Linear.weight`` is out×in)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ConfigError(
            f"{who} needs a model whose embedding head is an nn.Linear (U = head.weight.T); this model's "
            f"head is {type(head).__name__}: use a SiameseNet or pick another loss"
        )
    return head.weight.T


def empty_loss(reference: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph (nothing was mined: no gradient, but backward still works)."""
    return reference.sum() * 0.0
