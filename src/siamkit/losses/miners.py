"""Online miners: pick the informative pairs or triplets of a labelled batch (SPEC §8–9).

A miner reads a ``(B, B)`` dissimilarity matrix (smaller = closer; see ``as_dissimilarity``) and the labels
``(B,)`` and returns index tensors into the batch. Everything is masked tensor algebra: no Python loop over
samples. Mining never needs gradients, so callers pass ``dist.detach()``.

Triplet miners (``TripletIndices``):
- ``all``: every valid (a, p, n): a ≠ p same class, n another class.
- ``batch-all``: the valid triplets that violate the margin, ``d(a,p) − d(a,n) + m > 0`` (Hermans et al. 2017,
  "In Defense of the Triplet Loss", BA+: averaging over the non-zero terms).
- ``semi-hard``: ``d(a,p) < d(a,n) < d(a,p) + m`` (Schroff et al. 2015, FaceNet).
- ``hard``: ``d(a,n) ≤ d(a,p)``.
- ``batch-hard``: per anchor its farthest positive and nearest negative (Hermans et al. 2017).

Pair miners (``PairIndices``):
- ``all-pairs``: every unordered pair i < j, labelled 1 (same class) or 0.
- ``hard-pairs``: positives farther than ``pos_margin`` and negatives nearer than ``neg_margin``.
- ``batch-hard-pairs``: per anchor its farthest positive and its nearest negative, as two pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from siamkit.registry import Registry


@dataclass
class TripletIndices:
    """Anchor, positive and negative positions in the batch, each ``(T,)`` int64."""

    a: torch.Tensor
    p: torch.Tensor
    n: torch.Tensor

    def __len__(self) -> int:
        return len(self.a)

    def as_pairs(self) -> PairIndices:
        """(a, p) pairs labelled 1 followed by (a, n) pairs labelled 0."""
        y = torch.cat([torch.ones_like(self.a), torch.zeros_like(self.a)])
        return PairIndices(torch.cat([self.a, self.a]), torch.cat([self.p, self.n]), y)


@dataclass
class PairIndices:
    """Pair positions ``i``, ``j`` ``(M,)`` int64 and labels ``y`` ``(M,)``: 1 same class, 0 different."""

    i: torch.Tensor
    j: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.i)


Mined = TripletIndices | PairIndices


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, negative)`` boolean ``(B, B)`` masks: same class without the diagonal, other class."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


class Miner:
    """Base class. ``output`` is ``"triplets"`` or ``"pairs"``."""

    output: ClassVar[str] = "triplets"

    def __call__(self, dist: torch.Tensor, labels: torch.Tensor) -> Mined:  # pragma: no cover - abstract
        raise NotImplementedError


MINERS: Registry[Miner] = Registry("miner")


def create_miner(name: str, **params: object) -> Miner:
    """Build the miner registered as ``name`` (or a user's ``package.module:Class``), strict params."""
    return MINERS.create(name, **params)


class _TripletCube(Miner):
    """Triplet miners defined by a condition on ``d(a,p)`` and ``d(a,n)`` over the ``(B, B, B)`` cube."""

    def keep(self, d_ap: torch.Tensor, d_an: torch.Tensor) -> torch.Tensor | None:
        return None

    def __call__(self, dist: torch.Tensor, labels: torch.Tensor) -> TripletIndices:
        pos, neg = label_masks(labels)
        valid = pos.unsqueeze(2) & neg.unsqueeze(1)  # [a, p, n]
        extra = self.keep(dist.unsqueeze(2), dist.unsqueeze(1))
        if extra is not None:
            valid &= extra
        a, p, n = valid.nonzero(as_tuple=True)
        return TripletIndices(a, p, n)


@MINERS.register("all")
class AllTriplets(_TripletCube):
    """Every valid triplet of the batch."""


@MINERS.register("batch-all")
class BatchAllTriplets(_TripletCube):
    """Valid triplets with a non-zero hinge, ``d(a,p) − d(a,n) + margin > 0`` (Hermans et al. 2017)."""

    def __init__(self, margin: float = 0.2) -> None:
        self.margin = margin

    def keep(self, d_ap: torch.Tensor, d_an: torch.Tensor) -> torch.Tensor:
        return d_ap - d_an + self.margin > 0


@MINERS.register("semi-hard")
class SemiHardTriplets(_TripletCube):
    """Negatives farther than the positive but inside the margin: ``d(a,p) < d(a,n) < d(a,p) + margin``
    (Schroff et al. 2015)."""

    def __init__(self, margin: float = 0.2) -> None:
        self.margin = margin

    def keep(self, d_ap: torch.Tensor, d_an: torch.Tensor) -> torch.Tensor:
        return (d_an > d_ap) & (d_an < d_ap + self.margin)


@MINERS.register("hard")
class HardTriplets(_TripletCube):
    """Negatives at least as close as the positive: ``d(a,n) ≤ d(a,p)``."""

    def keep(self, d_ap: torch.Tensor, d_an: torch.Tensor) -> torch.Tensor:
        return d_an <= d_ap


def _hardest(dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per anchor: the farthest positive, the nearest negative, and whether the anchor has both."""
    pos, neg = label_masks(labels)
    far_pos = dist.masked_fill(~pos, float("-inf")).argmax(1)
    near_neg = dist.masked_fill(~neg, float("inf")).argmin(1)
    return far_pos, near_neg, pos.any(1) & neg.any(1)


@MINERS.register("batch-hard")
class BatchHardTriplets(Miner):
    """One triplet per anchor: its farthest positive and nearest negative (Hermans et al. 2017). Anchors
    without a positive or a negative in the batch are skipped."""

    def __call__(self, dist: torch.Tensor, labels: torch.Tensor) -> TripletIndices:
        far_pos, near_neg, ok = _hardest(dist, labels)
        a = ok.nonzero().squeeze(1)
        return TripletIndices(a, far_pos[a], near_neg[a])


@MINERS.register("all-pairs")
class AllPairs(Miner):
    """Every unordered pair ``i < j``."""

    output: ClassVar[str] = "pairs"

    def __call__(self, dist: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
        return PairIndices(i, j, (labels[i] == labels[j]).long())


def every_tuple(miner: Miner | None) -> Miner | None:
    """The miner of every valid tuple of ``miner``'s kind (``all`` or ``all-pairs``); ``None`` for ``None``."""
    if miner is None:
        return None
    return AllTriplets() if miner.output == "triplets" else AllPairs()


@MINERS.register("hard-pairs")
class HardPairs(Miner):
    """Positive pairs with ``d > pos_margin`` and negative pairs with ``d < neg_margin`` (as
    pytorch-metric-learning's PairMarginMiner). With a contrastive margin m, ``neg_margin = m`` keeps exactly
    the negatives with a non-zero loss."""

    output: ClassVar[str] = "pairs"

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0) -> None:
        self.pos_margin, self.neg_margin = pos_margin, neg_margin

    def __call__(self, dist: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        pos, neg = label_masks(labels)
        upper = torch.ones_like(pos).triu(1)
        keep = upper & ((pos & (dist > self.pos_margin)) | (neg & (dist < self.neg_margin)))
        i, j = keep.nonzero(as_tuple=True)
        return PairIndices(i, j, pos[i, j].long())


@MINERS.register("batch-hard-pairs")
class BatchHardPairs(Miner):
    """Per anchor two pairs: with its farthest positive (label 1) and its nearest negative (label 0)."""

    output: ClassVar[str] = "pairs"

    def __call__(self, dist: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        far_pos, near_neg, ok = _hardest(dist, labels)
        a = ok.nonzero().squeeze(1)
        return TripletIndices(a, far_pos[a], near_neg[a]).as_pairs()
