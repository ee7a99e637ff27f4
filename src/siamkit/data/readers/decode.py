"""Image files to uint8 tensors ``(N, C, H, W)``: the input size and channels taken from the data when unset, the
decode cache, ``data.skip_bad`` (shared by every reader of image files)."""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siamkit.config import DataConfig
from siamkit.data.cache import CacheSettings, DiskImages, decode_cached, default_cache_dir
from siamkit.data.images import SKIP_HINT, header_size, image_to_array, natural_channels, open_image
from siamkit.errors import DataError

log = logging.getLogger(__name__)

MIN_SIDE = 8  # images with a shorter side are refused (or skipped with data.skip_bad): nothing to learn from
AUTO_SIZE_CAP = 256  # an input size taken from the data has its long side at most this (data.image_size sets any)

Header = tuple[int, int, int] | None


def read_header(path: Path) -> Header:
    """(H, W, natural channels) from the file's header without decoding the pixels; None when unreadable (the
    decode that follows reports it)."""
    try:
        with Image.open(path) as img:
            return (*header_size(img), natural_channels(img))
    except Exception:  # any unreadable file is reported by the decode that follows
        return None


def read_headers(paths: Sequence[Path]) -> list[Header]:
    """Every file's ``(H, W, natural channels)`` from its header (None for an unreadable one)."""
    return [read_header(p) for p in paths]


def auto_channels(paths: Sequence[Path], headers: Sequence[Header] | None = None) -> int | None:
    """1 (grayscale) or 3 (colour) when ``data.channels`` is unset: 3 as soon as a tenth of the images are colour
    (a colour photo made grey loses information, a grey one made RGB does not) — never whatever sorts first.
    ``headers``: the files' ``read_header`` values when already read."""
    found = [h[2] for h in (headers if headers is not None else map(read_header, paths)) if h is not None]
    if not found:
        return None
    colour = sum(c == 3 for c in found)
    channels = 3 if colour * 10 >= len(found) else 1
    if 0 < colour < len(found):
        log.info("%d of %d images are colour: decoding all as %s", colour, len(found),
                 "RGB" if channels == 3 else "grayscale")  # fmt: skip
    return channels


def auto_size(paths: Sequence[Path], headers: Sequence[Header] | None = None) -> tuple[int, int] | None:
    """The input size when ``data.image_size`` is unset: the most common (H, W) among the images of at least
    ``MIN_SIDE`` px (ties: the larger) when at least half of them have it, else the median height and width (photos
    of many sizes: the most common one may be 3 images' odd size); its long side capped at ``AUTO_SIZE_CAP``
    (aspect kept) — never whatever image sorts first. Logged in one line."""
    found = headers if headers is not None else [read_header(p) for p in paths]
    sizes = Counter(hw for hw in ((h[0], h[1]) for h in found if h is not None) if min(hw) >= MIN_SIDE)
    if not sizes:
        return None
    (h, w), count = max(sizes.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1]))
    total = sum(sizes.values())
    plural = "" if len(sizes) == 1 else "s"
    how = f"the most common of {len(sizes)} size{plural} among {len(paths)} images ({count} have it)"
    if count * 2 < total:
        h, w = (int(np.median([hw[k] for hw in sizes.elements()])) for k in (0, 1))
        how = f"the median height and width of {total} images of {len(sizes)} sizes (no size is shared by half of them)"
    scale = min(1.0, AUTO_SIZE_CAP / max(h, w))
    size = (max(MIN_SIDE, round(h * scale)), max(MIN_SIDE, round(w * scale)))
    capped = f", capped to {size[0]}×{size[1]}" if size != (h, w) else ""
    log.info("input size %d×%d: %s%s; set data.image_size to choose", h, w, how, capped)
    return size


def decode_file(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image file as ``(C, H, W)`` uint8 at ``size``; an unreadable or too small image is a DataError naming it."""
    img = open_image(path)
    if min(img.height, img.width) < MIN_SIDE:
        raise DataError(f"{path}: a {img.width}×{img.height} image is below the {MIN_SIDE}-px minimum; {SKIP_HINT}")
    return image_to_array(img, channels, size)


def resolve_settings(
    paths: Sequence[Path], channels: int | None, size: tuple[int, int] | None
) -> tuple[int | None, tuple[int, int] | None]:
    """``channels`` and ``size``, the unset ones taken from the data (one header scan: ``auto_channels``,
    ``auto_size``); still None when no header could be read."""
    headers = [read_header(p) for p in paths] if size is None or channels is None else None
    size = size or auto_size(paths, headers)
    return channels or auto_channels(paths, headers), size


def decode_all(
    paths: Sequence[Path], channels: int | None, size: tuple[int, int] | None, skip_bad: bool, *,
    key: str | None = None, cache: CacheSettings | None = None,
) -> tuple[torch.Tensor | DiskImages, list[int], list[str]]:  # fmt: skip
    """Decode ``paths`` into uint8 images ``(N, C, H, W)``; returns (images, kept positions, skipped paths). Without
    ``size`` the input size comes from the data (``auto_size``); images smaller than ``MIN_SIDE`` px are refused.
    With ``cache`` (and ``key``, the dataset's folder or CSV) the decode goes through ``siamkit.data.cache``: in
    parallel, once, reused by later runs."""
    if cache is not None and key is not None:
        resolve = functools.partial(resolve_settings, paths, channels, size)
        got = decode_cached(paths, key, channels, size, skip_bad, settings=cache, decode=decode_file, resolve=resolve)
        if got is not None:
            return got.images, got.kept, got.skipped
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    skipped: list[str] = []
    channels, size = resolve_settings(paths, channels, size)
    for i, p in enumerate(paths):
        try:
            if channels is None or size is None:
                img = open_image(p)
                channels = channels or natural_channels(img)
                size = size or (img.height, img.width)
            arrays.append(decode_file(p, channels, size))
            kept.append(i)
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(str(p))
            log.warning("skipped %s", exc)
    if not arrays:
        raise DataError(f"no readable images among {len(paths)} files ({len(skipped)} skipped)")
    return torch.from_numpy(np.stack(arrays)), kept, skipped


def cache_settings(cfg: DataConfig) -> CacheSettings | None:
    """The decode cache of ``cfg`` (None with ``data.cache=false``)."""
    if not cfg.cache:
        return None
    directory = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    return CacheSettings(directory, cfg.workers, cfg.memory_limit_mb, cfg.progress)


def image_size(cfg: DataConfig) -> tuple[int, int] | None:
    """``data.image_size`` as (H, W), or None (taken from the data)."""
    return (cfg.image_size, cfg.image_size) if cfg.image_size else None
