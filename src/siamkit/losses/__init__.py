"""Losses: pure functions (``functional``), miners, and registered loss modules (one file per family: ``pairs`` —
contrastive, Huber, BCE —, ``triplet``, ``fisher`` — FDT, FDC —, ``proxy`` — normalized softmax, CosFace,
ArcFace —, ``multisim`` — multi-similarity), registered in ``LOSSES`` and imported on its first lookup.
Distances are ``siamkit.distances``; the batch types ``siamkit.data.batch``."""

from siamkit.losses.base import LOSSES, SiameseLoss, create_loss
from siamkit.losses.miners import MINERS, Miner, PairIndices, TripletIndices, create_miner

__all__ = ["LOSSES", "MINERS", "Miner", "PairIndices", "SiameseLoss", "TripletIndices", "create_loss", "create_miner"]
