"""Batch transforms on uint8 image tensors: normalisation and per-sample random augmentation.

Augmentation is vectorised over the batch (one batched sampling grid + one ``grid_sample`` call), so every image
gets its own rotation, translation, scale and flip without a Python loop. Evaluation never augments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from siamkit.config import AugmentConfig
from siamkit.data.cache import ImageArray
from siamkit.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
LUMA = torch.tensor([0.299, 0.587, 0.114])


def augment_preset(name: str) -> AugmentConfig:
    """Named augmentation settings: ``none``, or ``cifar`` — source B's ColorJitter(brightness = contrast =
    saturation = 0.25), RandomAffine(±10°, translate 0.1, scale 0.9–1.1) and horizontal flip p = 0.5 (SPEC §2.5)."""
    if name == "none":
        return AugmentConfig(enabled=False)
    if name == "cifar":
        return AugmentConfig(
            enabled=True, degrees=10.0, translate=0.1, scale_min=0.9, scale_max=1.1, hflip=0.5,
            brightness=0.25, contrast=0.25, saturation=0.25,
        )  # fmt: skip
    raise ConfigError(f"unknown augmentation preset {name!r}; choose none or cifar")


def channel_stats(images: ImageArray, max_items: int = 20000, chunk: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 ``(N, C, H, W)`` images scaled to [0, 1] (first ``max_items``), from
    exact per-channel histograms of the 256 pixel values, a chunk at a time (memory bounded by one chunk)."""
    n = min(len(images), max_items)
    c = int(images.shape[1])
    hist = torch.zeros(c, 256, dtype=torch.float64)
    for start in range(0, n, chunk):
        x = images[start : min(start + chunk, n)]
        for ch in range(c):
            hist[ch] += torch.bincount(x[:, ch].reshape(-1), minlength=256).to(torch.float64)
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    count = hist.sum(1)
    mean = (hist * levels).sum(1) / count
    var = (hist * (levels[None, :] - mean[:, None]) ** 2).sum(1) / (count - 1).clamp_min(1)  # unbiased, as torch.std
    std = var.sqrt().clamp_min(1e-6)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


class Normalize:
    """uint8 ``(B, C, H, W)`` → float32, scaled to [0, 1] then standardised per channel."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(dtype=torch.float32).div_(255.0)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class BatchAugment:
    """Random affine (±degrees, translate, scale), horizontal flip and brightness/contrast jitter, drawn
    independently per image, on float images in [0, 1] of shape ``(B, C, H, W)``."""

    def __init__(self, cfg: AugmentConfig, generator: torch.Generator | None = None) -> None:
        self.cfg = cfg
        self.generator = generator
        self._grid = torch.empty(0)
        self._grid_key: tuple[int, int, torch.device, torch.dtype] | None = None

    def _base_grid(self, x: torch.Tensor) -> torch.Tensor:
        """``affine_grid``'s output pixel centres ``(1, H·W, 3)`` as homogeneous ``(x, y, 1)`` (align_corners
        False), kept per size and device: each batch's grid is then one batched matrix product with its thetas."""
        key = (int(x.shape[2]), int(x.shape[3]), x.device, x.dtype)
        if self._grid_key != key:
            h, w = key[0], key[1]
            ys = (torch.arange(h, dtype=x.dtype, device=x.device) * 2 + 1) / h - 1
            xs = (torch.arange(w, dtype=x.dtype, device=x.device) * 2 + 1) / w - 1
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            self._grid = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(1, h * w, 3)
            self._grid_key = key
        return self._grid

    def _uniform(self, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
        return torch.rand(n, generator=self.generator).to(device) * (high - low) + low

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c, b, dev = self.cfg, x.shape[0], x.device
        angle = self._uniform(b, -c.degrees, c.degrees, dev) * (math.pi / 180.0)
        scale = self._uniform(b, c.scale_min, c.scale_max, dev)
        tx = self._uniform(b, -c.translate, c.translate, dev) * 2.0  # grid units span [-1, 1]
        ty = self._uniform(b, -c.translate, c.translate, dev) * 2.0
        flip = torch.where(self._uniform(b, 0, 1, dev) < c.hflip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
        )  # (B, 2, 3): output → input sampling map
        if c.shear > 0:  # then shear: [[1, sx], [sy, 1]] applied to the output coordinates first
            k = math.pi / 180.0
            sx = torch.tan(self._uniform(b, -c.shear, c.shear, dev) * k)
            sy = torch.tan(self._uniform(b, -c.shear, c.shear, dev) * k)
            one = torch.ones_like(sx)
            shear = torch.stack([torch.stack([one, sx], 1), torch.stack([sy, one], 1)], 1)  # (B, 2, 2)
            theta = torch.cat([theta[:, :, :2] @ shear, theta[:, :, 2:]], 2)
        grid = torch.bmm(self._base_grid(x).expand(b, -1, -1), theta.transpose(1, 2)).view(b, *x.shape[2:], 2)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if c.brightness > 0:
            out = out * self._uniform(b, 1 - c.brightness, 1 + c.brightness, dev).view(b, 1, 1, 1)
        if c.contrast > 0:
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            factor = self._uniform(b, 1 - c.contrast, 1 + c.contrast, dev).view(b, 1, 1, 1)
            out = (out - mean) * factor + mean
        if c.saturation > 0 and out.shape[1] == 3:  # blend with the luma image, as ColorJitter does
            gray = (out * LUMA.to(out.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            factor = self._uniform(b, 1 - c.saturation, 1 + c.saturation, dev).view(b, 1, 1, 1)
            out = (out - gray) * factor + gray
        return out.clamp_(0.0, 1.0)


class Preprocess:
    """The full batch pipeline: uint8 → [0, 1] → (augment, training only) → standardise."""

    def __init__(self, mean: list[float], std: list[float], augment: AugmentConfig | None = None, seed: int = 0):
        self.normalize = Normalize(mean, std)
        gen = torch.Generator().manual_seed(seed)
        self.augment = BatchAugment(augment, gen) if augment is not None and augment.enabled else None

    def reseed(self, seed: int) -> None:
        """Restart the augmentation draws from ``seed`` (a distributed rank's own seed)."""
        if self.augment is not None and self.augment.generator is not None:
            self.augment.generator.manual_seed(seed)

    def rng_state(self) -> torch.Tensor | None:
        """The augmentation generator's state (saved with a resumable checkpoint), None without augmentation."""
        gen = None if self.augment is None else self.augment.generator
        return None if gen is None else gen.get_state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        gen = None if self.augment is None else self.augment.generator
        if gen is not None and state is not None:
            gen.set_state(state)

    def __call__(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        if train and self.augment is not None:
            x = self.augment(images.to(torch.float32) / 255.0)
            return (x - self.normalize.mean.to(x.device)) / self.normalize.std.to(x.device)
        return self.normalize(images)
