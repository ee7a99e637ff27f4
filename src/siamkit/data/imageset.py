"""Image collections (in memory, or rows of a decode cache read on demand) and fixed pair/triplet tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from siamkit.data.cache import DiskImages


@dataclass
class ImageSet:
    """Images as uint8 ``(N, C, H, W)`` — a tensor, or ``siamkit.data.cache.DiskImages`` for a set larger than
    memory (indexed the same way) — with integer labels ``(N,)`` (-1 = unknown)."""

    images: torch.Tensor | DiskImages
    labels: np.ndarray
    class_names: list[str]
    paths: list[str] | None = None
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.labels) != len(self.images):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_labels(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, index: np.ndarray) -> ImageSet:
        index = np.asarray(index, dtype=np.int64)
        paths = [self.paths[i] for i in index] if self.paths is not None else None
        x = self.images
        images = x.take(index) if isinstance(x, DiskImages) else x[torch.from_numpy(index)]
        return ImageSet(images, self.labels[index], self.class_names, paths)

    def class_counts(self) -> dict[int, int]:
        values, counts = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


@dataclass
class TupleTable:
    """Fixed tuples indexing an ImageSet: pairs ``(M, 2)`` with labels ``(M,)`` (1 same, 0 different), or
    triplets ``(M, 3)`` as (anchor, positive, negative) with ``labels`` None."""

    index: np.ndarray
    labels: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return "pairs" if self.index.shape[1] == 2 else "triplets"

    def __len__(self) -> int:
        return len(self.index)

    def rows(self, rows: np.ndarray) -> TupleTable:
        return TupleTable(self.index[rows], None if self.labels is None else self.labels[rows])

    def as_pairs(self) -> TupleTable:
        """Pairs view: triplets become (a, p, 1) and (a, n, 0)."""
        if self.kind == "pairs":
            return self
        a, p, n = self.index.T
        index = np.concatenate([np.stack([a, p], 1), np.stack([a, n], 1)])
        labels = np.concatenate([np.ones(len(a), np.int64), np.zeros(len(a), np.int64)])
        return TupleTable(index, labels)
