"""A self-supervised term on two augmented views of each training image: NT-Xent (Chen, Kornblith, Norouzi,
Hinton 2020, SimCLR). It asks the embedding to tell every image from every other image of the batch — same class
or not — so it keeps the within-class detail that a supervised loss on few classes throws away, detail that
identities never seen in training need (the open-set case)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from siamkit.errors import ConfigError


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over ``2B`` rows for two views ``(B, D)``: row ``i`` of one view must pick row ``i`` of the other
    among the other ``2B − 1`` rows, by softmax over cosine similarity / ``temperature``; mean over the ``2B``."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


class SelfSupervised:
    """``weight · nt_xent(embed(view 1), embed(view 2))``, added to the training loss by the fit loop when
    ``loss.ssl_weight > 0``; the views are two independent draws of ``data.augment`` of the same images. It has
    no parameters of its own (a plain object, not a module)."""

    def __init__(self, weight: float, temperature: float = 0.1) -> None:
        if weight <= 0 or temperature <= 0:
            raise ConfigError(f"loss.ssl_weight and loss.ssl_temperature must be > 0, got {weight}, {temperature}")
        self.weight, self.temperature = weight, temperature

    def __call__(self, model: nn.Module, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        z1, z2 = model.embed(torch.cat([view1, view2])).split(len(view1))  # type: ignore[operator]
        return self.weight * nt_xent(z1, z2, self.temperature)
