"""The backbone registry. Every backbone maps ``(B, C, H, W)`` → pooled features ``(B, num_features)``.

Contract (as timm's ``num_features``): a registered factory takes ``in_channels`` plus its own keyword
arguments and returns an ``nn.Module`` with an integer attribute ``num_features``. The providers register
themselves (``@BACKBONES.register``): the small CNNs (``cnns``), the BaseCNN block family (``blocks``), the
fixed descriptor with a learned residual (``descriptors``: ``hog``), the
pretrained torchvision/timm networks (``pretrained``, which also serves every ``timm/<model>`` name) and dlib's
face ResNet (``dlib_face``: ``dlib-face``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from siamkit.registry import Registry

BACKBONES: Registry[nn.Module] = Registry(
    "backbone",
    providers=(
        "siamkit.models.cnns",
        "siamkit.models.blocks",
        "siamkit.models.descriptors",
        "siamkit.models.pretrained",
        "siamkit.models.dlib_face",
    ),
)


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name`` (strict keyword arguments); ``timm/<model>`` builds any timm
    model when timm is installed."""
    return BACKBONES.create(name, **kwargs)


def list_backbones(pattern: str = "*") -> list[str]:
    return BACKBONES.list(pattern)
