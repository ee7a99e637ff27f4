"""The small CNN backbones trained from scratch: ``seed_cnn`` (the reference's two-conv net) and ``convnet``
(a four-stage batch-norm CNN). Each maps ``(B, C, H, W)`` → pooled features ``(B, num_features)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from siamkit.errors import ConfigError
from siamkit.models.registry import BACKBONES


@BACKBONES.register("seed_cnn")
class SeedCNN(nn.Module):
    """The CNN of SPEC §3.2 (source A, 28×28×1): Conv 64 2×2 same → ReLU → MaxPool 2 → Dropout 0.3 → Conv 64
    2×2 same → ReLU → MaxPool 2 → Dropout 0.3 → global average pool. The Dense(48) is the embedding head."""

    def __init__(self, in_channels: int = 1, filters: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        self.num_features = filters
        self.body = nn.Sequential(
            # "same" padding for an even kernel: one extra row/column at the end (as TensorFlow pads)
            nn.ZeroPad2d((0, 1, 0, 1)),
            nn.Conv2d(in_channels, filters, 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
            nn.ZeroPad2d((0, 1, 0, 1)),
            nn.Conv2d(filters, filters, 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _ConvStage(nn.Module):
    """(conv3×3 → BN → ReLU) × ``convs`` → 2×2 max-pool. With ``pool_first`` the pool moves between the last
    conv and its BN → ReLU, so normalisation runs on a quarter of the activations (about twice as fast on a
    CPU at 28×28; max-pooling commutes with the ReLU, not exactly with BN, so it is a variant, not the same
    function)."""

    def __init__(self, c_in: int, c_out: int, convs: int, pool_first: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [
                nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)
        self.pool_first = pool_first

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        # Pool while there is room: the same network serves 8×8 digits and 32×32 images.
        return nn.functional.max_pool2d(x, 2) if min(x.shape[-2:]) >= 2 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pool_first:
            return self._pool(self.body(x))
        *head, bn, act = self.body
        for layer in head:
            x = layer(x)
        return act(bn(self._pool(x)))


def _check_convnet(widths: Sequence[int], convs_per_stage: int, pool_size: int, neck: int) -> None:
    """One-line errors naming the ``model.backbone_args`` key for options no network can be built from."""
    key = "model.backbone_args"
    if isinstance(widths, str | bytes) or not isinstance(widths, Sequence) or not widths:
        raise ConfigError(f"{key}.widths must list each stage's channels, e.g. [24, 48, 96]; got {widths!r}")
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ConfigError(f"{key}.widths must be whole numbers above 0, e.g. [24, 48, 96]; got {list(widths)!r}")
    for name, value, low in (("convs_per_stage", convs_per_stage, 1), ("pool_size", pool_size, 1), ("neck", neck, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{key}.{name} must be a whole number ≥ {low}; got {value!r}")


@BACKBONES.register("convnet")
class ConvNet(nn.Module):
    """The default small CNN for 8×8 to 64×64 inputs: stages of (conv3×3 → BN → ReLU) × ``convs_per_stage``
    followed by 2×2 max-pooling; then adaptive average pooling to a ``pool_size``×``pool_size`` grid, flattened
    (1 = global average pooling; a larger grid keeps where in the image a feature was seen), and optionally a
    ``neck``: Linear → BN → ReLU of that width. ``pool_first``: see ``_ConvStage``.

    The defaults — widths (24, 48, 96), a 3×3 grid, a 512-wide neck, pooling first — were chosen by measurement
    on Fashion-MNIST under a 250 s CPU budget (docs/recipes.md): the grid and the neck buy more accuracy per
    second than wider or deeper convolutions. ``widths=(32, 64, 128, 256), pool_size=1, neck=0,
    pool_first=False`` is the plain 4-stage GAP network of siamkit 0.1."""

    def __init__(
        self, in_channels: int = 1, widths: Sequence[int] = (24, 48, 96), convs_per_stage: int = 1,
        pool_size: int = 3, neck: int = 512, *, pool_first: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        _check_convnet(widths, convs_per_stage, pool_size, neck)
        stages = []
        c = in_channels
        for w in widths:
            stages.append(_ConvStage(c, int(w), convs_per_stage, pool_first))
            c = int(w)
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(pool_size), nn.Flatten())
        self.num_features = c * pool_size * pool_size
        self.neck: nn.Module = nn.Identity()
        if neck:
            self.neck = nn.Sequential(
                nn.Linear(self.num_features, neck, bias=False), nn.BatchNorm1d(neck), nn.ReLU(inplace=True)
            )
            self.num_features = neck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.pool(self.stages(x)))
