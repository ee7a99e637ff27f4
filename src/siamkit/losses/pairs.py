"""Pair losses on a registered distance (Euclidean by default): contrastive (Hadsell et al. 2006), its Huber
variant — the worked example of a loss with a parameter — and binary cross-entropy on the sigmoid head (SPEC §4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F

from siamkit.distances import DISTANCES, Distance, get_distance
from siamkit.errors import ConfigError
from siamkit.losses.base import LOSSES, SiameseLoss
from siamkit.losses.embedded import Embedded
from siamkit.losses.functional import CONTRASTIVE_VARIANTS, bce_distance_loss, contrastive_loss


class PairLoss(SiameseLoss):
    """A loss on per-pair dissimilarities ``d`` ``(M,)`` and labels ``y`` ``(M,)`` (1 = same) of fixed pairs or,
    with a miner, of the mined pairs of a labelled batch; subclasses implement ``pair_loss``. ``distance``: any
    registered distance (``siamkit.distances.DISTANCES``) or a ``Distance`` object; ``euclidean`` by default.
    ``allows_similarity``: whether the loss is meaningful on a similarity (larger = closer), taken negated."""

    tuple_kind: ClassVar[str] = "pairs"
    allows_similarity: ClassVar[bool] = False

    def __init__(self, distance: str | Distance = "euclidean") -> None:
        super().__init__()
        self.distance = get_distance(distance)
        if self.distance.higher_is_closer and not self.allows_similarity:
            choices = [n for n in DISTANCES.list() if not get_distance(n).higher_is_closer]
            raise ConfigError(
                f"loss.params.distance {self.distance.name!r} is a similarity (larger = closer), but this loss "
                f"squares and hinges distances ≥ 0; choose one of: {', '.join(choices)}"
            )

    def pair_loss(self, emb: Embedded, d: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def compute(self, emb: Embedded) -> torch.Tensor:
        d, y = emb.pair_distances()
        return self.pair_loss(emb, d, y)


@LOSSES.register("contrastive")
class ContrastiveLoss(PairLoss):
    """Contrastive loss (Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
    CVPR 2006) on the distance ``D`` ``(M,)`` (Euclidean unless ``distance`` says otherwise) of pairs with labels
    ``y`` ``(M,)`` (1 = same): ``y·D² + (1 − y)·max(0, m − D)²`` (``variant`` ``hadsell``, canonical) or with
    ``max(0, m² − D²)`` (``squared-margin``); ``half`` puts the paper's factor ½ in front."""

    def __init__(
        self, margin: float = 1.0, variant: str = "hadsell", half: bool = False, distance: str | Distance = "euclidean"
    ) -> None:
        super().__init__(distance)
        if variant not in CONTRASTIVE_VARIANTS:
            raise ConfigError(
                f"unknown loss.params.variant {variant!r}; choose one of: {', '.join(CONTRASTIVE_VARIANTS)}"
            )
        self.margin, self.variant, self.halved = margin, variant, half

    def pair_loss(self, emb: Embedded, d: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(d, y, self.margin, self.variant, self.halved)


def huber(delta: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The Huber function with its threshold captured in a closure (the course notes' pattern for a loss
    with a parameter): ``½x²`` for ``|x| ≤ δ``, else ``δ·(|x| − ½δ)`` — quadratic near 0, linear beyond δ."""
    if delta <= 0:
        raise ConfigError(f"loss.params.delta must be > 0, got {delta}")

    def h(x: torch.Tensor) -> torch.Tensor:
        ax = x.abs()
        return torch.where(ax <= delta, 0.5 * x.pow(2), delta * (ax - 0.5 * delta))

    return h


@LOSSES.register("huber")
class HuberContrastiveLoss(PairLoss):
    """Contrastive loss with the squares replaced by Huber_δ: ``y·H(D) + (1 − y)·H(max(0, m − D))``. Far
    positives and deep impostors then pull with a bounded force δ instead of one growing with D, which makes
    training robust to mislabelled pairs."""

    def __init__(self, margin: float = 1.0, delta: float = 0.5, distance: str | Distance = "euclidean") -> None:
        super().__init__(distance)
        self.margin, self.delta = margin, delta
        self.h = huber(delta)

    def pair_loss(self, emb: Embedded, d: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.to(d.dtype)
        return (y * self.h(d) + (1.0 - y) * self.h(F.relu(self.margin - d))).mean()


@LOSSES.register("bce")
class BCELoss(PairLoss):
    """Binary cross-entropy on ``sigmoid(w·D + b)`` for pair distances ``D`` ``(M,)``: the model's sigmoid head on
    the distance (source A; the verification head of Koch, Zemel, Salakhutdinov, "Siamese Neural Networks for
    One-shot Image Recognition", ICML 2015 workshop, on a distance rather than an L1 feature difference). Any
    registered ``distance``; a similarity enters negated (the head's affine map learns either sign)."""

    needs_sigmoid_head: ClassVar[bool] = True
    allows_similarity: ClassVar[bool] = True

    def pair_loss(self, emb: Embedded, d: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return bce_distance_loss(emb.model.similarity_logit(d), y)
