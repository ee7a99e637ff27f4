"""What one training step consumes: fixed pairs, fixed triplets, or labelled images for online mining. Produced
by ``siamkit.training.batches``, consumed by the losses (``siamkit.losses``); neither owns them."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PairBatch:
    """Two image batches ``(B, C, H, W)`` and labels ``(B,)``: 1 same, 0 different."""

    a: torch.Tensor
    b: torch.Tensor
    y: torch.Tensor


@dataclass
class TripletBatch:
    """Anchor, positive and negative image batches, each ``(B, C, H, W)``."""

    a: torch.Tensor
    p: torch.Tensor
    n: torch.Tensor


@dataclass
class LabelBatch:
    """Images ``(B, C, H, W)`` with class labels ``(B,)`` (int64), e.g. a P×K batch, for online mining;
    ``view``: a second augmented draw of the same images ``(B, C, H, W)`` (the self-supervised term's)."""

    x: torch.Tensor
    labels: torch.Tensor
    view: torch.Tensor | None = None


Batch = PairBatch | TripletBatch | LabelBatch
