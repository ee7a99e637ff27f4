"""Reading a source: its layout by name or detected (the readers of :data:`READERS`, in ``priority`` order), then
the settings the layout's reader did not apply itself (``data.image_size`` / ``channels`` / ``limit`` on tensor
sets)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from siamkit.config import DataConfig
from siamkit.data.cache import as_tensor
from siamkit.data.readers.base import READERS, DatasetBundle, Reader
from siamkit.data.readers.csvfiles import csv_header
from siamkit.errors import ConfigError, DataError


def get_reader(name: str) -> Reader:
    """The reader registered as ``name`` (or a user's ``package.module:Class``); an unknown name is a one-line
    ``DataError`` listing the layouts."""
    if ":" not in name and name not in READERS:
        raise DataError(f"unknown data layout {name!r}; use auto, {', '.join(r.name for r in readers_in_order())}")
    reader = READERS.create(name)
    if not isinstance(reader, Reader):
        raise ConfigError(f"data layout {name!r} is a {type(reader).__name__}, not a siamkit.data.readers.Reader")
    reader.name = name
    return reader


def readers_in_order() -> list[Reader]:
    """Every registered reader, in detection order (``priority``, then name).

    Example:
        >>> [(r.name, r.priority) for r in readers_in_order()][-2:]
        [('folder', 60), ('flat', 90)]
    """
    return sorted((get_reader(n) for n in READERS.list()), key=lambda r: (r.priority, r.name))


class _LayoutView(Mapping[str, Reader]):
    """The registered readers by name, in detection order (read-only)."""

    def __getitem__(self, name: str) -> Reader:
        if name not in READERS:
            raise KeyError(name)
        return get_reader(name)

    def __iter__(self) -> Iterator[str]:
        return iter([r.name for r in readers_in_order()])

    def __len__(self) -> int:
        return len(READERS.list())


LAYOUTS: Mapping[str, Reader] = _LayoutView()
"""The data layouts (``data.layout``) by name, in detection order: a view of :data:`READERS`."""


def load_dataset(cfg: DataConfig) -> DatasetBundle:
    """Read the source named by ``cfg.source`` with the layout ``cfg.layout`` (``auto`` detects it)."""
    name = detect_layout(cfg.source) if cfg.layout == "auto" else cfg.layout
    bundle = get_reader(name).read(cfg)
    bundle.layout = name
    return _resize_tensor_sets(bundle, cfg)


def detect_layout(source: str) -> str:
    """The layout of ``source``: a layout's own name (``digits``), else the first reader (by ``priority``) whose
    ``detect`` accepts the file or folder.

    Example:
        >>> detect_layout("digits")
        'digits'
    """
    order = readers_in_order()
    named = [r.name for r in order if r.by_name]
    if source in named:
        return source
    path = Path(source)
    if not path.exists():
        raise DataError(f"data source {source!r} not found; give an existing folder or CSV file, or "
                        f"{' / '.join(repr(n) for n in named)}")  # fmt: skip
    found = next((r.name for r in order if r.detect(path)), None)
    if found is not None:
        return found
    if path.is_file() and path.suffix.lower() != ".csv":
        raise DataError(f"{source}: a data file must be a CSV of pairs, triplets or labelled images")
    raise DataError(
        f"{source}: CSV header {csv_header(path)} is neither pairs (path_a,path_b,label), triplets "
        "(anchor,positive,negative) nor labelled images (path,label[,group]); rename the columns"
    )


def _resize_tensor_sets(bundle: DatasetBundle, cfg: DataConfig) -> DatasetBundle:
    """Apply image_size / channels / limit to sources decoded without them (digits, IDX)."""
    sets = [bundle.images] + ([bundle.test] if bundle.test is not None else [])
    for s in sets:
        recolour = bool(cfg.channels) and s.images.shape[1] != cfg.channels
        resize = bool(cfg.image_size) and s.images.shape[-1] != cfg.image_size
        if not (recolour or resize):
            continue
        x = as_tensor(s.images)  # sources decoded without these settings are in memory
        if recolour:
            if cfg.channels == 3:
                x = x.expand(-1, 3, -1, -1).contiguous()
            else:  # ITU-R 601-2 luma, as PIL's convert("L")
                luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                x = (x.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        if resize:
            assert cfg.image_size is not None
            resized = torch.nn.functional.interpolate(
                x.float(), size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False
            )
            x = resized.round().clamp(0, 255).to(torch.uint8)
        s.images = x
    if cfg.limit is not None and bundle.tuples is None and cfg.limit < len(bundle.images):
        bundle.images = bundle.images.subset(stratified_sample(bundle.images.labels, cfg.limit))
    return bundle


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` items drawn without replacement, each class keeping its share (largest remainders
    round up), so that ``data.limit`` on class-sorted files keeps every class, not the first few."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(np.int64)
    extra = np.argsort(-(quota - take), kind="stable")[: n - int(take.sum())]
    take[extra] += 1
    picks = [rng.choice(np.flatnonzero(labels == c), int(k), replace=False) for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picks)) if picks else np.empty(0, np.int64)
