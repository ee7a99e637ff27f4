"""A fixed descriptor as a backbone: ``hog``, a histogram of oriented gradients (Dalal & Triggs) pooled over a
pyramid of grids, plus a learned residual branch whose last layer starts at zero.

Why (docs/open-set.md): on identities never seen in training, a network trained from scratch on a few classes
stays level with the raw pixels at best, while this descriptor, with nothing trained, is above them on every
class-disjoint Fashion-MNIST split measured. With the residual's last layer at zero the untrained model *is* the
descriptor, so the open-set chain's epoch-0 candidate starts from it and training is kept only when it does
better on the validation identities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from siamkit.models.cnns import ConvNet
from siamkit.models.registry import BACKBONES


class GradientHistogram(nn.Module):
    """``(B, C, H, W)`` → ``(B, bins · Σ g²)``: per pixel the gradient (central differences; beyond the border the
    edge pixels repeat, or zeros with ``edges="zeros"``) of the channel where it is strongest, its magnitude split
    between the two bins whose centres are nearest its unsigned orientation (``bins`` bins over [0, π), linear
    and circular, as Dalal & Triggs: a small turn moves a small share); the ``bins`` maps averaged over a ``g``×``g``
    grid for each ``g`` in ``grids`` (adaptive: any input size), square-rooted, each grid's vector L2-normalised,
    concatenated. Nothing is learned; computed in float32 whatever the autocast. With replicated edges, invariant
    to an affine change of intensity (the normalisation of the input)."""

    def __init__(self, bins: int = 9, grids: Sequence[int] = (7, 4, 2), edges: str = "replicate") -> None:
        super().__init__()
        if bins < 1 or not grids or min(grids) < 1:
            raise ValueError(f"bins and every grid must be ≥ 1 (got bins={bins}, grids={list(grids)})")
        if edges not in ("replicate", "zeros"):
            raise ValueError(f"edges must be 'replicate' or 'zeros', got {edges!r}")
        self.pad_mode = "replicate" if edges == "replicate" else "constant"
        self.bins = int(bins)
        self.grids = tuple(int(g) for g in grids)
        self.num_features = self.bins * sum(g * g for g in self.grids)

    def orientation_maps(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, bins, H, W)``: each pixel's gradient magnitude, shared between the two bins nearest its orientation."""
        x = x.float()
        gx = F.pad(x, (1, 1, 0, 0), mode=self.pad_mode)
        gx = gx[..., 2:] - gx[..., :-2]
        gy = F.pad(x, (0, 0, 1, 1), mode=self.pad_mode)
        gy = gy[..., 2:, :] - gy[..., :-2, :]
        mag = (gx * gx + gy * gy).sqrt()
        if x.shape[1] > 1:  # the strongest channel's gradient at each pixel
            best = mag.argmax(1, keepdim=True)
            gx, gy, mag = (t.gather(1, best) for t in (gx, gy, mag))
        angle = torch.atan2(gy, gx) % math.pi
        # soft binning (Dalal & Triggs): the magnitude split linearly between the two nearest bin centres, circular
        # over [0, π) — a hard bin would move all of it when an edge turns a fraction of a degree across a bin edge
        pos = angle * (self.bins / math.pi) - 0.5
        low = torch.floor(pos)
        frac = pos - low
        b0 = low.long() % self.bins
        b1 = (b0 + 1) % self.bins
        maps = torch.zeros(x.shape[0], self.bins, *x.shape[2:], device=x.device)
        maps.scatter_add_(1, b0, mag * (1 - frac))
        return maps.scatter_add_(1, b1, mag * frac)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            maps = self.orientation_maps(x)
            cells = [F.adaptive_avg_pool2d(maps, g).clamp_min(0).sqrt().flatten(1) for g in self.grids]
            return torch.cat([F.normalize(c, dim=1) for c in cells], 1)


@BACKBONES.register("hog")
class HOGNet(nn.Module):
    """The ``GradientHistogram`` descriptor plus, with ``residual`` (the default), a learned branch — a
    ``ConvNet`` of ``widths`` with a ``pool_size`` grid and a ``neck`` — mapped to the descriptor's width by a
    linear layer that starts at zero: the output is ``descriptor(x) + W·branch(x)``, so the untrained backbone
    is exactly the descriptor and training learns a correction to it. ``residual=false``: the descriptor alone
    (nothing in the backbone to train: only a head, ``model.embedding_dim`` > 0, learns)."""

    def __init__(
        self, in_channels: int = 1, bins: int = 9, grids: Sequence[int] = (7, 4, 2), residual: bool = True,
        widths: Sequence[int] = (24, 48, 96), *, pool_size: int = 3, neck: int = 256,
    ) -> None:  # fmt: skip
        super().__init__()
        self.descriptor = GradientHistogram(bins, grids)
        self.num_features = self.descriptor.num_features
        self.branch: nn.Module | None = None
        self.out: nn.Linear | None = None
        if residual:
            self.branch = ConvNet(in_channels, widths, pool_size=pool_size, neck=neck)
            self.out = nn.Linear(int(self.branch.num_features), self.num_features)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.descriptor(x)
        if self.branch is None or self.out is None:
            return d
        return d + self.out(self.branch(x)).float()
