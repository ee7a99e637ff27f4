"""Figures of the classification study (SPEC §7, classifier part): accuracy/loss curves, confusion matrix,
t-SNE of penultimate features, feature maps of every conv layer, a grid of training images, the validation
class distribution and an augmentation preview. Each is written atomically as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import nn

from siamkit.evaluate.plots import save_figure


def _show(ax: Axes, img: torch.Tensor) -> None:
    """uint8 or [0, 1] float ``(C, H, W)`` → an image panel."""
    x = img.detach().float()
    if img.dtype == torch.uint8:
        x = x / 255.0
    arr = x.clamp(0, 1).permute(1, 2, 0).numpy()
    ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray" if arr.shape[2] == 1 else None, vmin=0, vmax=1)
    ax.axis("off")


def plot_curves(history: Sequence[dict[str, float]], path: Path) -> Path:
    """Loss and accuracy per epoch, train and validation, side by side."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    ep = [r["epoch"] for r in history]
    for ax, key, title in ((a1, "loss", "Loss"), (a2, "accuracy", "Accuracy")):
        ax.plot(ep, [r[f"train_{key}"] for r in history], "o-", label="train")
        ax.plot(ep, [r[f"val_{key}"] for r in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(f"{title} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: Path) -> Path:
    """Counts with row-normalised shading (rows: true class, columns: predicted)."""
    n = len(cm)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    rows = cm.sum(1, keepdims=True).clip(min=1)
    ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] / rows[i, 0] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (validation)")
    return save_figure(fig, path)


@torch.no_grad()
def plot_feature_maps(model: nn.Module, image: torch.Tensor, path: Path, per_layer: int = 8) -> tuple[Path, int]:
    """The first ``per_layer`` channels of every Conv2d's output for one preprocessed image ``(1, C, H, W)``;
    returns the path and the number of conv layers shown."""
    maps: list[tuple[str, torch.Tensor]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [
        m.register_forward_hook(lambda mod, i, o: maps.append((names[mod], o[0].detach().float().cpu())))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    was = model.training
    model.eval()
    try:
        model(image)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    fig, axes = plt.subplots(len(maps), per_layer, figsize=(per_layer * 1.1, len(maps) * 1.2), squeeze=False)
    for row, (name, fmap) in enumerate(maps):
        for col in range(per_layer):
            ax = axes[row, col]
            ax.axis("off")
            if col < fmap.shape[0]:
                ax.imshow(fmap[col].numpy(), cmap="viridis")
        axes[row, 0].set_title(f"{name} {tuple(fmap.shape)}", fontsize=7, loc="left")
    fig.suptitle("Feature maps of every conv layer (first channels)")
    return save_figure(fig, path), len(maps)


def plot_image_grid(images: torch.Tensor, labels: np.ndarray, names: Sequence[str], path: Path, title: str) -> Path:
    n = len(images)
    cols = min(8, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            _show(ax, images[k])
            ax.set_title(names[labels[k]] if labels[k] < len(names) else str(labels[k]), fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_class_distribution(labels: np.ndarray, names: Sequence[str], path: Path, title: str) -> Path:
    counts = np.bincount(labels, minlength=len(names))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(counts)), counts)
    ax.set_xticks(range(len(counts)), [names[i] if i < len(names) else str(i) for i in range(len(counts))],
                  rotation=45, ha="right", fontsize=8)  # fmt: skip
    for i, c in enumerate(counts):
        ax.text(i, c, str(c), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("images")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_augmentations(original: torch.Tensor, augmented: torch.Tensor, path: Path) -> Path:
    """One training image (uint8) and several random augmentations of it ([0, 1] floats)."""
    n = len(augmented) + 1
    fig, axes = plt.subplots(1, n, figsize=(n * 1.3, 1.6))
    _show(axes[0], original)
    axes[0].set_title("original", fontsize=7)
    for k, ax in enumerate(axes[1:]):
        _show(ax, augmented[k])
        ax.set_title(f"aug {k + 1}", fontsize=7)
    fig.suptitle("Augmentation preview (training data only)")
    return save_figure(fig, path)
