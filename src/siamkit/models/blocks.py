"""BaseCNN with configurable blocks A–E (SPEC §3.3; source B's CIFAR-10 study, 32×32×3 input).

Stem: conv3×3 3→32, 32→64, 64→128 (each with a bias) → BN → ReLU. Then eight blocks, block i mapping
``CHANNELS[i] → CHANNELS[i + 1]``, with a 2×2 max-pool after blocks 2, 4 and 7 (0-based); then global average
pooling → Dropout 0.25 → Linear(512 → classes). The block string names each block's kind:

- ``A``: conv3×3 (no bias) → BN → ReLU.
- ``B``: A, then a spatial-attention gate: 1×1 conv to one channel (with a bias) → sigmoid, multiplied in.
- ``C``: A, then squeeze-excitation (reduction 16): GAP → FC(c → c/16) → ReLU → FC(c/16 → c) → sigmoid.
- ``D``: residual: conv3×3 → BN → + shortcut (identity, or a 1×1 conv when channels change) → ReLU.
- ``Ddw``: D with the 3×3 conv depthwise-separable (depthwise 3×3, groups = c_in, then pointwise 1×1).
- ``E``: ResNeXt bottleneck: 1×1 c_in → c_out/4 → BN → ReLU → grouped 3×3 (groups = c_in/8) → BN → ReLU →
  1×1 → c_out → BN; + shortcut (identity or 1×1 projection) → ReLU.

Only the stem convolutions and B's gate carry a bias: with that, the trainable parameter counts equal the
reported ones exactly (A 7,771,658 · B 7,774,226 · C 7,901,354 · D 7,935,498 · Ddw 1,139,338 · E 752,266).

``BaseCNN`` is the 10-class classifier; registered as the backbone ``basecnn`` (``blocks`` option) it gives the
pooled 512-d features to the Siamese wrapper's embedding head instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from siamkit.errors import ConfigError
from siamkit.models.registry import BACKBONES

CHANNELS = (128, 128, 128, 256, 256, 256, 512, 512, 512)
POOL_AFTER = (2, 4, 7)
BLOCK_KINDS = ("A", "B", "C", "D", "Ddw", "E")
_TOKEN = re.compile(r"Ddw|[A-E]")


def parse_blocks(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"AAAAAAAA"``, ``"ABCDDdwEAA"`` or a list of kinds → eight block kinds; a single kind (``"B"``,
    ``"Ddw"``) means all eight of it."""
    text = "".join(spec) if isinstance(spec, (list, tuple)) else str(spec)
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != text or not tokens:
        raise ConfigError(
            f"bad block string {text!r}: use the kinds {', '.join(BLOCK_KINDS)} (e.g. AAAAAAAA, BBBBBBBB, "
            "DdwDdwDdwDdwDdwDdwDdwDdw, or one kind for all eight blocks)"
        )
    if len(tokens) == 1:
        tokens *= len(CHANNELS) - 1
    if len(tokens) != len(CHANNELS) - 1:
        raise ConfigError(f"block string {text!r} names {len(tokens)} blocks; BaseCNN has {len(CHANNELS) - 1}")
    return tokens


def is_block_string(text: str) -> bool:
    try:
        parse_blocks(text)
    except ConfigError:
        return False
    return True


def conv_bn(c_in: int, c_out: int, kernel: int = 3, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]


class BlockA(nn.Module):
    """conv3×3 (no bias) → BN → ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(c_in, c_out), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class BlockB(BlockA):
    """A, then a spatial-attention map: 1×1 conv to one channel (with bias) → sigmoid, multiplied in."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out)
        self.gate = nn.Sequential(nn.Conv2d(c_out, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y * self.gate(y)


class BlockC(BlockA):
    """A, then squeeze-excitation (Hu et al. 2018) with reduction 16: channel weights from the pooled map."""

    def __init__(self, c_in: int, c_out: int, reduction: int = 16) -> None:
        super().__init__(c_in, c_out)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_out, c_out // reduction), nn.ReLU(inplace=True),
            nn.Linear(c_out // reduction, c_out), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y * self.se(y)[:, :, None, None]


def shortcut(c_in: int, c_out: int) -> nn.Module:
    """Identity when the channel count is kept, else a 1×1 projection (no bias)."""
    return nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1, bias=False)


class BlockD(nn.Module):
    """Residual: conv3×3 → BN → + shortcut → ReLU; ``depthwise`` makes the 3×3 conv depthwise-separable."""

    def __init__(self, c_in: int, c_out: int, depthwise: bool = False) -> None:
        super().__init__()
        if depthwise:
            conv: list[nn.Module] = [
                nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
                nn.Conv2d(c_in, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out),
            ]
        else:
            conv = conv_bn(c_in, c_out)
        self.body = nn.Sequential(*conv)
        self.shortcut = shortcut(c_in, c_out)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class BlockE(nn.Module):
    """ResNeXt-style bottleneck (Xie et al. 2017): 1×1 → c_out/4, grouped 3×3 (groups c_in/8), 1×1 → c_out."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_out // 4
        self.body = nn.Sequential(
            *conv_bn(c_in, mid, 1), nn.ReLU(inplace=True),
            *conv_bn(mid, mid, 3, groups=c_in // 8), nn.ReLU(inplace=True),
            *conv_bn(mid, c_out, 1),
        )  # fmt: skip
        self.shortcut = shortcut(c_in, c_out)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


BLOCKS: dict[str, Callable[[int, int], nn.Module]] = {
    "A": BlockA, "B": BlockB, "C": BlockC, "D": BlockD, "Ddw": lambda i, o: BlockD(i, o, depthwise=True),
    "E": BlockE,
}  # fmt: skip


class BaseCNN(nn.Module):
    """The block-configurable CIFAR-10 CNN of SPEC §3.3. ``forward`` gives class logits; ``features`` the pooled
    512-d penultimate features; ``stages()`` the stem and the eight blocks (for freezing and summaries).

    Example:
        >>> net = BaseCNN("AAAAAAAA")
        >>> sum(p.numel() for p in net.parameters())
        7771658
    """

    def __init__(
        self, blocks: str | list[str] = "AAAAAAAA", num_classes: int = 10, in_channels: int = 3, dropout: float = 0.25
    ) -> None:
        super().__init__()
        self.kinds = parse_blocks(blocks)
        stem: list[nn.Module] = []
        for c_in, c_out in ((in_channels, 32), (32, 64), (64, 128)):
            stem += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        layers: list[nn.Module] = []
        for i, kind in enumerate(self.kinds):
            layers.append(BLOCKS[kind](CHANNELS[i], CHANNELS[i + 1]))
            if i in POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.num_features = CHANNELS[-1]
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else None

    @property
    def block_string(self) -> str:
        return "".join(self.kinds)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features ``(B, 512)`` (before dropout)."""
        return self.pool(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.classifier is None:
            return f
        return self.classifier(self.dropout(f))

    def stages(self) -> list[nn.Module]:
        return [self.stem, *(m for m in self.blocks if not isinstance(m, nn.MaxPool2d))]


@BACKBONES.register("basecnn")
def basecnn_backbone(in_channels: int = 3, blocks: str = "AAAAAAAA") -> BaseCNN:
    """BaseCNN as a Siamese encoder: the classifier is dropped; the pooled 512-d features feed the embedding
    head (SPEC §3.3, last point)."""
    return BaseCNN(blocks, num_classes=0, in_channels=in_channels)
