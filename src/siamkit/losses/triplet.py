"""Triplet margin loss (SPEC §4) on fixed triplets or on the mined triplets of a labelled batch, with any
registered distance and the soft-margin option of Hermans et al. 2017."""

from __future__ import annotations

from typing import ClassVar

import torch

from siamkit.data.batch import Batch, LabelBatch, TripletBatch
from siamkit.distances import as_dissimilarity, get_distance
from siamkit.losses.base import LOSSES, SiameseLoss, embed_many, empty_loss, expect
from siamkit.losses.functional import triplet_margin_loss
from siamkit.models.siamese import SiameseNet


@LOSSES.register("triplet")
class TripletLoss(SiameseLoss):
    """Triplet loss (Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015; Hermans, Beyer, Leibe, "In Defense of
    the Triplet Loss", 2017) on triplets of embeddings ``(T, D)`` each — fixed, or mined from a ``LabelBatch``:
    ``max(d(a,p) − d(a,n) + margin, 0)`` averaged over the triplets; with ``soft_margin``
    ``log(1 + exp(d(a,p) − d(a,n)))`` instead (no margin to tune). ``distance``: euclidean (default),
    squared_euclidean, cosine or cosine_similarity (then ``s(a,n) − s(a,p) + margin``)."""

    tuple_kind: ClassVar[str] = "triplets"
    miner_outputs: ClassVar[tuple[str, ...]] = ("triplets",)

    def __init__(self, margin: float = 0.2, distance: str = "euclidean", soft_margin: bool = False) -> None:
        super().__init__()
        self.margin, self.soft_margin = margin, soft_margin
        self.distance = get_distance(distance)

    def forward(self, model: SiameseNet, batch: Batch) -> torch.Tensor:
        expect(batch, TripletBatch, LabelBatch)
        if isinstance(batch, LabelBatch):
            emb, labels = self.gathered(model.embed(batch.x), batch.labels)
            dist = as_dissimilarity(self.distance.matrix(emb, emb), self.distance)
            t = self.mine_triplets(dist, labels)
            if len(t) == 0:
                return empty_loss(emb)
            d_ap, d_an = dist[t.a, t.p], dist[t.a, t.n]
        else:
            assert isinstance(batch, TripletBatch)
            ea, ep, en = self.gathered(*embed_many(model, batch.a, batch.p, batch.n))
            d_ap = as_dissimilarity(self.distance.pairwise(ea, ep), self.distance)
            d_an = as_dissimilarity(self.distance.pairwise(ea, en), self.distance)
        return triplet_margin_loss(d_ap, d_an, self.margin, self.soft_margin)
