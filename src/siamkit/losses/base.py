"""Loss interface: a loss receives the model and a batch, so that losses needing model internals
(FDC/FDT use the second-to-last layer and the last layer's weight) plug in without touching the trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from siamkit.models.siamese import SiameseNet
from siamkit.registry import Registry


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


Batch = PairBatch | TripletBatch


class SiameseLoss(nn.Module):
    """Base class. ``input_kind`` says what the trainer must feed: ``"pairs"`` or ``"triplets"``."""

    input_kind: ClassVar[str] = "pairs"
    needs_sigmoid_head: ClassVar[bool] = False

    def forward(self, model: SiameseNet, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


LOSSES: Registry[SiameseLoss] = Registry("loss")


def create_loss(name: str, **params: object) -> SiameseLoss:
    """Build the loss registered as ``name``, or a user's ``package.module:Class``, with strict params."""
    return LOSSES.create(name, **params)


def embed_many(model: SiameseNet, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One forward pass over the concatenated batches (shared BatchNorm statistics, fewer kernel calls)."""
    sizes = [len(b) for b in batches]
    return tuple(model.embed(torch.cat(batches)).split(sizes))
