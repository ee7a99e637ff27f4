"""MNIST-family IDX files (gzipped or not): ``<prefix>-images-idx3-ubyte[.gz]`` with its labels file."""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from siamkit.config import DataConfig
from siamkit.data.imageset import ImageSet
from siamkit.data.readers.base import READERS, ArrayReader, DatasetBundle
from siamkit.data.readers.decode import MIN_SIDE
from siamkit.errors import DataError

MAX_DEFLATE_RATIO = 1032
"""Deflate's largest expansion (a run of one byte): a ``.gz`` file of n bytes holds at most about 1032·n."""
IMAGES_FILE = re.compile(r"(.+)-images-idx3-ubyte(\.gz)?$")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse one IDX file (``.gz`` or raw): magic 0x00000803 → (N, H, W) images, 0x00000801 → (N,) labels. The
    header's dimensions are checked against the file's size before the payload is read (a damaged header cannot
    ask for more memory than the file can hold), and a ``.gz`` is read no further than they say."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number); re-download it")
            ndim = head[3]
            packed = f.read(4 * ndim)
            if ndim == 0 or len(packed) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header ({ndim} dimensions); re-download it")
            dims = struct.unpack(f">{ndim}I", packed)
            expected = math.prod(dims)  # Python ints: no overflow
            size = path.stat().st_size
            most = size * MAX_DEFLATE_RATIO if path.suffix == ".gz" else size - 4 - 4 * ndim
            if expected > most:
                raise DataError(f"{path}: the IDX header says {' × '.join(map(str, dims))} = {expected:,} bytes, "
                                f"but the {size:,}-byte file holds at most {max(most, 0):,}: a damaged or truncated "
                                "file; re-download it")  # fmt: skip
            payload = f.read(expected + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc}); re-download it") from None
    if len(payload) != expected:
        raise DataError(f"{path}: IDX payload has {len(payload) if len(payload) <= expected else 'more'} bytes, header "
                        f"says {expected}; re-download it")  # fmt: skip
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def read_idx_pair(images_path: Path, labels_path: Path) -> ImageSet:
    """An IDX images file ``(N, H, W)`` and its labels ``(N,)``: at least one image, each at least ``MIN_SIDE`` px a
    side (as every reader of image files refuses smaller ones)."""
    images = read_idx(images_path)
    labels = read_idx(labels_path).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{images_path}: {images.shape} images do not match {labels.shape} labels in {labels_path}")
    if len(images) == 0:
        raise DataError(f"{images_path}: the IDX set holds no images (its header says 0); give a set with images")
    h, w = int(images.shape[1]), int(images.shape[2])
    if min(h, w) < MIN_SIDE:
        raise DataError(f"{images_path}: its {w}×{h} images are below the {MIN_SIDE}-px minimum a side; nothing to "
                        "learn from at that size")  # fmt: skip
    names = [str(i) for i in range(int(labels.max()) + 1)]
    return ImageSet(torch.from_numpy(images[:, None].copy()), labels, names)


def read_idx_dir(directory: str | os.PathLike[str]) -> tuple[ImageSet, ImageSet | None]:
    """Find ``<prefix>-images-idx3-ubyte[.gz]`` + ``<prefix>-labels-idx1-ubyte[.gz]``; ``train`` is the pool,
    ``t10k``/``test`` the test split."""
    directory = Path(directory)
    found: dict[str, ImageSet] = {}
    for img in sorted(directory.iterdir()):
        m = IMAGES_FILE.match(img.name)
        if not m:
            continue
        prefix, gz = m.group(1), m.group(2) or ""
        labels = directory / f"{prefix}-labels-idx1-ubyte{gz}"
        if not labels.exists():
            raise DataError(f"{img}: no matching labels file {labels.name} next to it")
        found[prefix] = read_idx_pair(img, labels)
    if not found:
        raise DataError(f"{directory}: no *-images-idx3-ubyte[.gz] files found")
    train_key = next((k for k in found if "train" in k), None)
    test_key = next((k for k in found if k.startswith("t10k") or "test" in k), None)
    if train_key is None:
        if len(found) > 1:
            raise DataError(f"{directory}: several IDX sets {sorted(found)} and none is named train")
        return next(iter(found.values())), None
    return found[train_key], found.get(test_key) if test_key else None


@READERS.register("idx")
class IdxReader(ArrayReader):
    """A folder of IDX sets: ``train`` is the pool, ``t10k``/``test`` the test split."""

    priority = 50

    def detect(self, path: Path) -> bool:
        return path.is_dir() and any(IMAGES_FILE.match(e.name) for e in path.iterdir())

    def read(self, cfg: DataConfig) -> DatasetBundle:
        train, test = read_idx_dir(cfg.source)
        return DatasetBundle(Path(cfg.source).name, train, test)
