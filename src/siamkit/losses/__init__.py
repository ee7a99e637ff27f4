"""Losses: pure functions (``functional``), miners, the base's template (``base``: embed, gather and mine once,
then the loss's ``compute`` on an ``Embedded`` — ``embedded``) and registered loss modules (one file per family:
``pairs`` — contrastive, Huber, BCE —, ``triplet``, ``fisher`` — FDT, FDC —, ``proxy`` — normalized softmax,
CosFace, ArcFace —, ``multisim`` — multi-similarity), registered in ``LOSSES``: every module of this package is
imported on its first lookup, so a new loss is one new file. Distances are ``siamkit.distances``; the batch types
``siamkit.data.batch``."""

from siamkit.losses.base import LOSSES, SiameseLoss, create_loss
from siamkit.losses.embedded import Embedded
from siamkit.losses.miners import MINERS, Miner, PairIndices, TripletIndices, create_miner

__all__ = [
    "LOSSES", "MINERS", "Embedded", "Miner", "PairIndices", "SiameseLoss", "TripletIndices", "create_loss",
    "create_miner",
]  # fmt: skip
