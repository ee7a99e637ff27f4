"""Triplet margin loss (SPEC §4) on fixed triplets or on the mined triplets of a labelled batch, with any
registered distance and the soft-margin option of Hermans et al. 2017."""

from __future__ import annotations

from typing import ClassVar

import torch

from siamkit.distances import Distance, get_distance
from siamkit.losses.base import LOSSES, SiameseLoss
from siamkit.losses.embedded import Embedded
from siamkit.losses.functional import triplet_margin_loss


@LOSSES.register("triplet")
class TripletLoss(SiameseLoss):
    """Triplet loss (Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015; Hermans, Beyer, Leibe, "In Defense of
    the Triplet Loss", 2017) on triplets of embeddings ``(T, D)`` each — fixed, or mined from a ``LabelBatch``:
    ``max(d(a,p) − d(a,n) + margin, 0)`` averaged over the triplets; with ``soft_margin``
    ``log(1 + exp(d(a,p) − d(a,n)))`` instead (no margin to tune). ``distance``: euclidean (default),
    squared_euclidean, cosine or cosine_similarity (then ``s(a,n) − s(a,p) + margin``)."""

    tuple_kind: ClassVar[str] = "triplets"
    miner_outputs: ClassVar[tuple[str, ...]] = ("triplets",)

    def __init__(self, margin: float = 0.2, distance: str | Distance = "euclidean", soft_margin: bool = False) -> None:
        super().__init__()
        self.margin, self.soft_margin = margin, soft_margin
        self.distance = get_distance(distance)

    def compute(self, emb: Embedded) -> torch.Tensor:
        d_ap, d_an = emb.triplet_distances()
        return triplet_margin_loss(d_ap, d_an, self.margin, self.soft_margin)
