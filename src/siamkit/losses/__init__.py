"""Losses: pure functions (``functional``), distances, and registered loss modules."""

from siamkit.losses import builtin as _builtin  # noqa: F401  (registers the built-in losses)
from siamkit.losses.base import LOSSES, PairBatch, SiameseLoss, TripletBatch, create_loss
from siamkit.losses.distances import DISTANCES, Distance, get_distance

__all__ = [
    "DISTANCES", "LOSSES", "Distance", "PairBatch", "SiameseLoss", "TripletBatch", "create_loss", "get_distance",
]  # fmt: skip
