"""Pure loss functions on tensors (mean over the batch). ``y`` = 1 similar, 0 dissimilar."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONTRASTIVE_VARIANTS = ("hadsell", "squared-margin")


def contrastive_loss(
    d: torch.Tensor, y: torch.Tensor, margin: float = 1.0, variant: str = "hadsell", half: bool = False
) -> torch.Tensor:
    """Contrastive loss (Hadsell, Chopra, LeCun 2006) on distances ``d`` ``(B,)``.

    - ``hadsell`` (canonical): ``y·D² + (1 − y)·max(0, m − D)²``
    - ``squared-margin``: ``y·D² + (1 − y)·max(0, m² − D²)``
    ``half=True`` multiplies by ½, as the paper writes it (the gradient scale differs, not the optimum).
    """
    y = y.to(d.dtype)
    if variant == "hadsell":
        neg = F.relu(margin - d).pow(2)
    elif variant == "squared-margin":
        neg = F.relu(margin**2 - d.pow(2))
    else:
        raise ValueError(f"unknown contrastive variant {variant!r}; choose one of: {', '.join(CONTRASTIVE_VARIANTS)}")
    loss = y * d.pow(2) + (1.0 - y) * neg
    return (0.5 * loss if half else loss).mean()


def triplet_margin_loss(d_ap: torch.Tensor, d_an: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Triplet loss ``max(d(a, p) − d(a, n) + α, 0)`` on distances ``(B,)``, averaged over the batch."""
    return F.relu(d_ap - d_an + margin).mean()


def bce_distance_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` (logits = w·D + b) against ``y`` ``(B,)``."""
    return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
