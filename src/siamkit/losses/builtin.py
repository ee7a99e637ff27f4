"""Contrastive, triplet and binary cross-entropy losses as registered modules (SPEC §4)."""

from __future__ import annotations

from typing import ClassVar, TypeVar

import torch

from siamkit.errors import ConfigError
from siamkit.losses.base import LOSSES, Batch, PairBatch, SiameseLoss, TripletBatch, embed_many
from siamkit.losses.distances import get_distance
from siamkit.losses.functional import (
    CONTRASTIVE_VARIANTS,
    bce_distance_loss,
    contrastive_loss,
    triplet_margin_loss,
)
from siamkit.models.siamese import SiameseNet

B = TypeVar("B", PairBatch, TripletBatch)


def _expect(batch: Batch, kind: type[B]) -> B:
    if not isinstance(batch, kind):
        raise TypeError(f"this loss takes {kind.__name__}, got {type(batch).__name__}")
    return batch


@LOSSES.register("contrastive")
class ContrastiveLoss(SiameseLoss):
    """Contrastive loss on Euclidean distance; ``variant`` ``hadsell`` (canonical) or ``squared-margin``."""

    input_kind: ClassVar[str] = "pairs"

    def __init__(self, margin: float = 1.0, variant: str = "hadsell", half: bool = False) -> None:
        super().__init__()
        if variant not in CONTRASTIVE_VARIANTS:
            raise ConfigError(
                f"unknown loss.params.variant {variant!r}; choose one of: {', '.join(CONTRASTIVE_VARIANTS)}"
            )
        self.margin, self.variant, self.halved = margin, variant, half

    def forward(self, model: SiameseNet, batch: Batch) -> torch.Tensor:
        b = _expect(batch, PairBatch)
        ea, eb = embed_many(model, b.a, b.b)
        return contrastive_loss(model.distance(ea, eb), b.y, self.margin, self.variant, self.halved)


@LOSSES.register("triplet")
class TripletLoss(SiameseLoss):
    """Triplet margin loss with a Euclidean (default), squared-Euclidean or cosine distance."""

    input_kind: ClassVar[str] = "triplets"

    def __init__(self, margin: float = 0.2, distance: str = "euclidean") -> None:
        super().__init__()
        self.margin = margin
        self.distance = get_distance(distance)

    def forward(self, model: SiameseNet, batch: Batch) -> torch.Tensor:
        b = _expect(batch, TripletBatch)
        ea, ep, en = embed_many(model, b.a, b.p, b.n)
        return triplet_margin_loss(self.distance.pairwise(ea, ep), self.distance.pairwise(ea, en), self.margin)


@LOSSES.register("bce")
class BCELoss(SiameseLoss):
    """Binary cross-entropy on ``sigmoid(w·D + b)``: the model's sigmoid head on the distance (source A)."""

    input_kind: ClassVar[str] = "pairs"
    needs_sigmoid_head: ClassVar[bool] = True

    def forward(self, model: SiameseNet, batch: Batch) -> torch.Tensor:
        b = _expect(batch, PairBatch)
        ea, eb = embed_many(model, b.a, b.b)
        return bce_distance_loss(model.similarity_logit(model.distance(ea, eb)), b.y)
