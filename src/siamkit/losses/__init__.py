"""Losses: pure functions (``functional``), distances, miners, and registered loss modules (one file per
family: ``pairs`` — contrastive, Huber, BCE —, ``triplet``, ``fisher`` — FDT, FDC —, ``proxy`` — normalized
softmax, CosFace, ArcFace —, ``multisim`` — multi-similarity)."""

from siamkit.losses import fisher as _fisher  # noqa: F401  (registers fdt, fdc)
from siamkit.losses import multisim as _multisim  # noqa: F401  (registers multi-similarity)
from siamkit.losses import pairs as _pairs  # noqa: F401  (registers contrastive, huber, bce)
from siamkit.losses import proxy as _proxy  # noqa: F401  (registers normalized-softmax, cosface, arcface)
from siamkit.losses import triplet as _triplet  # noqa: F401  (registers triplet)
from siamkit.losses.base import LOSSES, Batch, LabelBatch, PairBatch, SiameseLoss, TripletBatch, create_loss
from siamkit.losses.distances import DISTANCES, Distance, get_distance
from siamkit.losses.miners import MINERS, Miner, PairIndices, TripletIndices, create_miner

__all__ = [
    "DISTANCES", "LOSSES", "MINERS", "Batch", "Distance", "LabelBatch", "Miner", "PairBatch", "PairIndices",
    "SiameseLoss", "TripletBatch", "TripletIndices", "create_loss", "create_miner", "get_distance",
]  # fmt: skip
