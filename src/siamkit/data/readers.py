"""Readers for every layout of SPEC §2.1, all returning ``ImageSet``s (folders and CSVs through the decode cache).

- class per folder: ``root/<identity>/<image>``
- flat folder: ``<prefix>_<class>_<rest>.png`` (field index or regex)
- CSV manifests: pairs (``path_a,path_b,label``), triplets (``anchor,positive,negative``) and labelled images
  (``path,label[,group]``), columns by header
- MNIST-family IDX files (gzipped or not), scikit-learn digits, Fashion-MNIST by name
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import logging
import math
import os
import re
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siamkit.config import DataConfig
from siamkit.data.cache import CacheSettings, DiskImages, as_tensor, decode_cached, default_cache_dir
from siamkit.data.images import SKIP_HINT, header_size, image_to_array, natural_channels, open_image
from siamkit.data.imageset import ImageSet, TupleTable
from siamkit.errors import DataError
from siamkit.text import name_list

log = logging.getLogger(__name__)

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@dataclass
class DatasetBundle:
    """What a source provides: an image pool, an optional test split of its own, optional fixed tuples."""

    name: str
    images: ImageSet
    test: ImageSet | None = None
    tuples: TupleTable | None = None
    layout: str = ""
    """The layout it was read with (``folder``, ``flat``, ``idx``, ...)."""


@dataclass(frozen=True)
class Layout:
    """One data layout: ``read(cfg)`` builds the bundle; ``detect(path)`` says whether an existing file or folder
    has this layout (tried in registration order, so the more specific layouts come first); ``by_name``: the
    layout's name alone is a source (``digits``)."""

    name: str
    read: Callable[[DataConfig], DatasetBundle]
    detect: Callable[[Path], bool] | None = None
    by_name: bool = False


LAYOUTS: dict[str, Layout] = {}
"""The registered layouts, in detection order (``data.layout``)."""


def layout(name: str, detect: Callable[[Path], bool] | None = None, by_name: bool = False) -> Callable[
    [Callable[[DataConfig], DatasetBundle]], Callable[[DataConfig], DatasetBundle]
]:  # fmt: skip
    """Register a reader ``read(cfg) → DatasetBundle`` as the layout ``name`` with its ``detect(path)``."""

    def decorator(read: Callable[[DataConfig], DatasetBundle]) -> Callable[[DataConfig], DatasetBundle]:
        if name in LAYOUTS:
            raise ValueError(f"data layout {name!r} is registered twice")
        LAYOUTS[name] = Layout(name, read, detect, by_name)
        return read

    return decorator


def _size(cfg: DataConfig) -> tuple[int, int] | None:
    return (cfg.image_size, cfg.image_size) if cfg.image_size else None


def _is_csv_with(columns: set[str]) -> Callable[[Path], bool]:
    return lambda path: path.is_file() and columns <= set(_csv_header(path))


def _is_cifar10(path: Path) -> bool:
    from siamkit.data.cifar import find_cifar10

    return path.is_dir() and find_cifar10(path) is not None


def _is_idx(path: Path) -> bool:
    return path.is_dir() and any(re.search(r"-images-idx3-ubyte(\.gz)?$", e.name) for e in path.iterdir())


def _is_folder(path: Path) -> bool:
    return path.is_dir() and any(e.is_dir() and not e.name.startswith(".") for e in path.iterdir())


@layout("digits", by_name=True)
def _digits(cfg: DataConfig) -> DatasetBundle:
    return DatasetBundle("digits", read_digits())


@layout("fashion-mnist", by_name=True)
def _fashion_mnist(cfg: DataConfig) -> DatasetBundle:
    train, test = read_fashion_mnist(None if cfg.source == "fashion-mnist" else cfg.source)
    return DatasetBundle("fashion-mnist", train, test)


@layout("cifar10", detect=_is_cifar10, by_name=True)
def _cifar10(cfg: DataConfig) -> DatasetBundle:
    from siamkit.data.cifar import load_cifar10

    train, test = load_cifar10(None if cfg.source == "cifar10" else cfg.source)
    return DatasetBundle("cifar10", train, test)


@layout("triplets-csv", detect=_is_csv_with({"anchor", "positive", "negative"}))
def _triplets_csv(cfg: DataConfig) -> DatasetBundle:
    images, table = read_tuples_csv(
        cfg.source, "triplets", cfg.channels, _size(cfg), cfg.skip_bad, cache=cache_settings(cfg)
    )
    return DatasetBundle(Path(cfg.source).stem, images, tuples=table)


@layout("pairs-csv", detect=_is_csv_with({"path_a", "path_b", "label"}))
def _pairs_csv(cfg: DataConfig) -> DatasetBundle:
    images, table = read_tuples_csv(
        cfg.source, "pairs", cfg.channels, _size(cfg), cfg.skip_bad, cache=cache_settings(cfg)
    )
    return DatasetBundle(Path(cfg.source).stem, images, tuples=table)


@layout("labels-csv", detect=_is_csv_with({"path", "label"}))
def _labels_csv(cfg: DataConfig) -> DatasetBundle:
    images = read_labels_csv(cfg.source, cfg.channels, _size(cfg), cfg.skip_bad, cache_settings(cfg))
    return DatasetBundle(Path(cfg.source).stem, images)


@layout("idx", detect=_is_idx)
def _idx(cfg: DataConfig) -> DatasetBundle:
    train, test = read_idx_dir(cfg.source)
    return DatasetBundle(Path(cfg.source).name, train, test)


@layout("folder", detect=_is_folder)
def _folder(cfg: DataConfig) -> DatasetBundle:
    images = read_folder(cfg.source, cfg.channels, _size(cfg), cfg.skip_bad, cache_settings(cfg), cfg.grouped)
    return DatasetBundle(Path(cfg.source).name, images)


@layout("flat", detect=lambda path: path.is_dir())
def _flat(cfg: DataConfig) -> DatasetBundle:
    images = read_flat(
        cfg.source, cfg.flat_field, cfg.flat_regex, cfg.channels, _size(cfg), cfg.skip_bad, cache_settings(cfg)
    )
    return DatasetBundle(Path(cfg.source).name, images)


def load_dataset(cfg: DataConfig) -> DatasetBundle:
    """Read the source named by ``cfg.source`` with the layout ``cfg.layout`` (``auto`` detects it)."""
    name = detect_layout(cfg.source) if cfg.layout == "auto" else cfg.layout
    if name not in LAYOUTS:
        raise DataError(f"unknown data layout {name!r}; use auto, {', '.join(LAYOUTS)}")
    bundle = LAYOUTS[name].read(cfg)
    bundle.layout = name
    return _resize_tensor_sets(bundle, cfg)


def detect_layout(source: str) -> str:
    """The layout of ``source``: a layout's own name (``digits``), else the first registered layout whose
    ``detect`` accepts the file or folder."""
    named = [lay.name for lay in LAYOUTS.values() if lay.by_name]
    if source in named:
        return source
    path = Path(source)
    if not path.exists():
        raise DataError(f"data source {source!r} not found; give an existing folder or CSV file, or "
                        f"{' / '.join(repr(n) for n in named)}")  # fmt: skip
    if path.is_file() and path.suffix.lower() != ".csv":
        raise DataError(f"{source}: a data file must be a CSV of pairs, triplets or labelled images")
    for lay in LAYOUTS.values():
        if lay.detect is not None and lay.detect(path):
            return lay.name
    raise DataError(
        f"{source}: CSV header {_csv_header(path)} is neither pairs (path_a,path_b,label), triplets "
        "(anchor,positive,negative) nor labelled images (path,label[,group]); rename the columns"
    )


def read_digits() -> ImageSet:
    """scikit-learn's bundled 8×8 digits (1,797 images), scaled from 0–16 to 0–255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return ImageSet(torch.from_numpy(images), digits.target.astype(np.int64), [str(i) for i in range(10)])


MAX_DEFLATE_RATIO = 1032
"""Deflate's largest expansion (a run of one byte): a ``.gz`` file of n bytes holds at most about 1032·n."""


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
        m = re.match(r"(.+)-images-idx3-ubyte(\.gz)?$", img.name)
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


def read_fashion_mnist(directory: str | None = None) -> tuple[ImageSet, ImageSet | None]:
    """Fashion-MNIST from ``directory``, ``$SIAMKIT_FASHION_MNIST`` or the Debian package's folder."""
    candidates = [directory] if directory else [os.environ.get("SIAMKIT_FASHION_MNIST"), *FASHION_MNIST_DIRS]
    for cand in candidates:
        if cand and Path(cand).is_dir() and any(Path(cand).glob("*-images-idx3-ubyte*")):
            train, test = read_idx_dir(cand)
            train.class_names = list(FASHION_MNIST_CLASSES)
            if test is not None:
                test.class_names = list(FASHION_MNIST_CLASSES)
            return train, test
    raise DataError(
        "Fashion-MNIST not found; install it with `apt-get install -y dataset-fashion-mnist` or pass "
        "--data DIR holding its *-idx3-ubyte.gz files"
    )


def list_files(folder: Path, left_out: list[str] | None = None) -> list[Path]:
    """The non-hidden files of ``folder`` that may be images, sorted (one directory scan: no stat per file): a name
    with an image format's extension (any Pillow reads) or with none. Others (``Thumbs.db``, ``desktop.ini``,
    ``notes.txt``, annotation files) are left out, appended to ``left_out`` (for ``note_left_out``); a file whose
    extension says image but whose bytes are not is still an error (or skipped with ``data.skip_bad``)."""
    return _scan(folder, left_out)[0]


def _scan(folder: Path, left_out: list[str] | None) -> tuple[list[Path], list[str]]:
    """One scan of ``folder``: its image files as ``list_files`` keeps them, and its non-hidden sub-folders' names
    (links to folders not counted), both sorted."""
    with os.scandir(folder) as entries:
        found = [(e.name, e.is_file(), e.is_dir(follow_symlinks=False)) for e in entries if not e.name.startswith(".")]
    names = sorted(name for name, is_file, _ in found if is_file)
    known = image_extensions()
    keep = [name for name in names if not Path(name).suffix or Path(name).suffix.lower() in known]
    if left_out is not None and len(keep) < len(names):
        left_out.extend(str(folder / name) for name in sorted(set(names) - set(keep)))
    return [folder / name for name in keep], sorted(name for name, _, is_dir in found if is_dir)


@functools.cache
def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with the dot) of the image formats Pillow can open here."""
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


PHOTO_FORMATS_PILLOW_LACKS = frozenset({".heic", ".heif", ".jxl", ".svg", ".cr2", ".cr3", ".nef", ".arw", ".dng",
                                        ".orf", ".raf", ".rw2"})  # fmt: skip
"""Extensions of image formats that cameras and phones write but this Pillow cannot decode (HEIC needs the
``pillow-heif`` plug-in; raw and vector formats need converting)."""


def note_left_out(where: str | Path, left_out: Sequence[str]) -> None:
    """One warning line per kind naming the files ``list_files`` left out (nothing when none): photos in a format
    this Pillow cannot decode (say how to convert them), and files that are no image by their extension."""
    photos = [p for p in left_out if Path(p).suffix.lower() in PHOTO_FORMATS_PILLOW_LACKS]
    others = [p for p in left_out if Path(p).suffix.lower() not in PHOTO_FORMATS_PILLOW_LACKS]
    if photos:
        log.warning("%s: %s left out: images in a format this Pillow cannot decode; convert them to JPEG or PNG (for "
                    "HEIC: pip install pillow-heif)", where, _count_and_names(photos))  # fmt: skip
    if others:
        log.warning("%s: %s left out, no image by their extension; give an image its format's extension to include "
                    "it", where, _count_and_names(others))  # fmt: skip


def _count_and_names(paths: Sequence[str]) -> str:
    return f"{len(paths)} file{'' if len(paths) == 1 else 's'} ({name_list([Path(p).name for p in paths], 5)})"


def class_folders(root: Path) -> list[Path]:
    """The non-hidden sub-folders of ``root``, sorted: the classes of a class-per-folder layout. Folders named
    like a dataset's splits (``train``, ``test``, …) are refused: ``root/train/<class>/`` is one dataset per split,
    not two classes."""
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    _refuse_linked_twice(root, folders)
    splits = [d.name for d in folders if d.name.lower() in SPLIT_FOLDER_NAMES]
    if len(splits) >= 2 or (splits and len(folders) == 1):
        first = next((name for name in splits if name.lower() in ("train", "training")), splits[0])
        raise DataError(
            f"{root}: its folders {', '.join(splits)} look like the splits of a dataset, not identities; "
            f"give one of them (e.g. --data {root / first}), with one folder per class inside"
        )
    return folders


def _refuse_linked_twice(root: Path, folders: Sequence[Path]) -> None:
    """A class folder that is a link to the data folder itself, to a folder above it, or to another class folder
    would read the same images twice under another class: one line naming the link."""
    top = root.resolve()
    real = {d: d.resolve() for d in folders}
    for d in folders:
        if not d.is_symlink():
            continue
        target = real[d]
        if target == top or target in top.parents:
            what = "the data folder itself" if target == top else f"{target}, a folder above the data folder"
        else:
            twin = next((o for o in folders if o != d and real[o] == target and not o.is_symlink()), None)
            if twin is None:
                continue
            what = f"the class folder {twin.name!r}"
        raise DataError(f"{d}: a link to {what}: its images would be read twice under another class; remove the link")


SPLIT_FOLDER_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing", "dev"})


def class_files(folder: Path, left_out: list[str] | None = None) -> list[Path]:
    """The images of one class folder, at any depth (``person/session/img.jpg``): its own files, then each
    sub-folder's, in name order; hidden files and folders skipped, files no image by their extension left out as in
    ``list_files``; linked sub-folders are not entered (as ``os.walk``: a link back up would never end)."""
    out, subs = _scan(folder, left_out)
    for sub in subs:
        out += class_files(folder / sub, left_out)
    return out


MIN_SIDE = 8  # images with a shorter side are refused (or skipped with data.skip_bad): nothing to learn from
AUTO_SIZE_CAP = 256  # an input size taken from the data has its long side at most this (data.image_size sets any)


def _header(path: Path) -> tuple[int, int, int] | None:
    """(H, W, natural channels) from the file's header without decoding the pixels; None when unreadable (the
    decode that follows reports it)."""
    try:
        with Image.open(path) as img:
            return (*header_size(img), natural_channels(img))
    except Exception:  # any unreadable file is reported by the decode that follows
        return None


Header = tuple[int, int, int] | None


def read_headers(paths: Sequence[Path]) -> list[Header]:
    """Every file's ``(H, W, natural channels)`` from its header (None for an unreadable one)."""
    return [_header(p) for p in paths]


def auto_channels(paths: Sequence[Path], headers: Sequence[Header] | None = None) -> int | None:
    """1 (grayscale) or 3 (colour) when ``data.channels`` is unset: 3 as soon as a tenth of the images are colour
    (a colour photo made grey loses information, a grey one made RGB does not) — never whatever sorts first.
    ``headers``: the files' ``_header`` values when already read."""
    found = [h[2] for h in (headers if headers is not None else map(_header, paths)) if h is not None]
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
    found = headers if headers is not None else [_header(p) for p in paths]
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


def _resolve_settings(
    paths: Sequence[Path], channels: int | None, size: tuple[int, int] | None
) -> tuple[int | None, tuple[int, int] | None]:
    """``channels`` and ``size``, the unset ones taken from the data (one header scan: ``auto_channels``,
    ``auto_size``); still None when no header could be read."""
    headers = [_header(p) for p in paths] if size is None or channels is None else None
    size = size or auto_size(paths, headers)
    return channels or auto_channels(paths, headers), size


def _decode_all(
    paths: Sequence[Path], channels: int | None, size: tuple[int, int] | None, skip_bad: bool,
    key: str | None = None, cache: CacheSettings | None = None,
) -> tuple[torch.Tensor | DiskImages, list[int], list[str]]:  # fmt: skip
    """Decode ``paths`` into uint8 images ``(N, C, H, W)``; returns (images, kept positions, skipped paths). Without
    ``size`` the input size comes from the data (``auto_size``); images smaller than ``MIN_SIDE`` px are refused.
    With ``cache`` (and ``key``, the dataset's folder or CSV) the decode goes through ``siamkit.data.cache``: in
    parallel, once, reused by later runs."""
    if cache is not None and key is not None:
        resolve = functools.partial(_resolve_settings, paths, channels, size)
        got = decode_cached(paths, key, channels, size, skip_bad, cache, decode_file, resolve)
        if got is not None:
            return got.images, got.kept, got.skipped
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    skipped: list[str] = []
    channels, size = _resolve_settings(paths, channels, size)
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


MIN_GROUP_CLASSES = 5  # a grouped layout has at least this many class folders per group folder (the median)


def grouped_layout(root: Path, folders: Sequence[str]) -> bool:
    """Whether ``root/<group>/<class>/<image>`` (Omniglot's ``alphabet/character/``) is the layout: at least two
    top folders, none holding image files itself, every sub-folder holding image files and no deeper folders, and
    a median of at least ``MIN_GROUP_CLASSES`` sub-folders per top folder (a person's few session folders are
    not identities)."""
    if len(folders) < 2:
        return False
    widths = []
    for name in folders:
        files, subs = _scan(root / name, None)
        if files or not subs:
            return False
        for sub in subs:
            inner, deeper = _scan(root / name / sub, None)
            if not inner or deeper:
                return False
        widths.append(len(subs))
    return bool(np.median(widths) >= MIN_GROUP_CLASSES)


GROUP_SEP = "/"


def class_groups(class_names: Sequence[str]) -> tuple[np.ndarray, list[str]] | None:
    """For class names ``group/class`` (a grouped folder layout): each class's group index ``(n_classes,)`` and the
    group names; None when the classes carry no group."""
    if not class_names or not all(GROUP_SEP in n for n in class_names):
        return None
    parents = [n.rsplit(GROUP_SEP, 1)[0] for n in class_names]
    names = sorted(set(parents))
    return np.asarray([names.index(p) for p in parents], np.int64), names


def read_folder(
    root: str | os.PathLike[str], channels: int | None = None, size: tuple[int, int] | None = None,
    skip_bad: bool = False, cache: CacheSettings | None = None, grouped: bool | None = None,
) -> ImageSet:  # fmt: skip
    """Class-per-folder layout ``root/<class>/[<sub-folders>/]<image>``: every image under a class folder, at any
    depth, is of that class (``class_files``). Or, with ``grouped`` (None: when ``grouped_layout`` finds it),
    ``root/<group>/<class>/<image>``: one class per second-level folder, named ``group/class``; the identity split
    then holds out whole groups and episodes can be drawn within one."""
    root = Path(root)
    folders = [d.name for d in class_folders(root)]
    if not folders:
        raise DataError(f"{root}: no class sub-folders found; expected root/<class>/<image>")
    if grouped is None and grouped_layout(root, folders):
        grouped = True
        log.info("%s: read as <group>/<class>/ folders (%d groups; each second-level folder is a class); set "
                 "data.grouped=false to make each top folder one class", root, len(folders))  # fmt: skip
    if grouped:
        folders = [f"{g}{GROUP_SEP}{c}" for g in folders for c in _scan(root / g, None)[1]]
        if not folders:
            raise DataError(f"{root}: data.grouped is set but the group folders hold no class folders; expected "
                            "root/<group>/<class>/<image>")  # fmt: skip
    left_out: list[str] = []
    listed = {name: class_files(root / name, left_out) for name in folders}
    note_left_out(root, left_out)
    empty = [name for name, files in listed.items() if not files]
    if empty and len(empty) < len(folders):
        log.warning("%s: %d empty class folder%s left out: %s", root, len(empty), "" if len(empty) == 1 else "s",
                    ", ".join(empty[:10]) + (", …" if len(empty) > 10 else ""))  # fmt: skip
    classes = [name for name in folders if listed[name]]
    paths: list[Path] = []
    labels: list[int] = []
    for ci, name in enumerate(classes):
        paths += listed[name]
        labels += [ci] * len(listed[name])
    if not paths:
        raise DataError(f"{root}: the class folders hold no files")
    images, kept, skipped = _decode_all(paths, channels, size, skip_bad, str(root), cache)
    return ImageSet(images, np.asarray(labels, np.int64)[kept], classes, [str(paths[i]) for i in kept], skipped)


def read_flat(
    root: str | os.PathLike[str], field: int = 1, regex: str | None = None, channels: int | None = None,
    size: tuple[int, int] | None = None, skip_bad: bool = False, cache: CacheSettings | None = None,
) -> ImageSet:  # fmt: skip
    """Flat folder, class in the file name: the ``field``-th ``_`` field of the stem, or ``regex``'s group
    ``class`` (else group 1)."""
    root = Path(root)
    pattern = re.compile(regex) if regex else None
    left_out: list[str] = []
    paths = list_files(root, left_out)
    note_left_out(root, left_out)
    if not paths:
        raise DataError(f"{root}: the folder holds no files")
    names: list[str] = []
    for p in paths:
        if pattern is not None:
            m = pattern.search(p.name)
            if not m:
                raise DataError(f"{p}: file name does not match data.flat_regex {regex!r}; rename it or fix the regex")
            names.append(m.group("class") if "class" in pattern.groupindex else m.group(1))
        else:
            fields = p.stem.split("_")
            if len(fields) <= field:
                raise DataError(
                    f"{p}: file name has no '_'-field {field} for the class; expected <prefix>_<class>_<rest>, "
                    "or set data.flat_field / data.flat_regex"
                )
            names.append(fields[field])
    if pattern is None and field == 1 and all(len(p.stem.split("_")) == 2 for p in paths):
        log.warning("%s: the file names have two '_'-fields (%s): the class is the second one (%r), as in "
                    "<prefix>_<class>_<rest>; if it is the first, set data.flat_field=0", root, paths[0].name,
                    names[0])  # fmt: skip
    classes = sorted(set(names))
    lookup = {c: i for i, c in enumerate(classes)}
    images, kept, skipped = _decode_all(paths, channels, size, skip_bad, str(root), cache)
    labels = np.asarray([lookup[names[i]] for i in kept], np.int64)
    return ImageSet(images, labels, classes, [str(paths[i]) for i in kept], skipped)


TUPLE_COLUMNS = {"pairs": ("path_a", "path_b", "label"), "triplets": ("anchor", "positive", "negative")}


def csv_text(path: str | os.PathLike[str]) -> io.StringIO:
    """A CSV file's text, ready for ``csv`` readers: UTF-8 with or without a byte-order mark (as spreadsheets
    write it); a missing or undecodable file is a one-line ``DataError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text CSV (byte {exc.start} cannot be decoded); save it as UTF-8 CSV") \
            from None  # fmt: skip
    except OSError as exc:
        raise DataError(f"{path}: cannot read the CSV file ({exc.strerror or exc})") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise DataError(f"{path}:{text.count(chr(10), 0, nul) + 1}: a NUL byte; a CSV is text (is it a binary file, "
                        "or saved as UTF-16?): save it as UTF-8 CSV")  # fmt: skip
    reader = csv.reader(io.StringIO(text, newline=""))
    try:  # parsed once here, so that no reader of the text meets a csv.Error (a field over csv's size limit, ...)
        for _ in reader:
            pass
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not a readable CSV row ({exc}; a cell holds a path or a "
                        "label): fix that line") from None  # fmt: skip
    return io.StringIO(text, newline="")


def csv_columns(path: Path, fieldnames: Sequence[str] | None) -> dict[str, str]:
    """A CSV header's columns by normalised name (stripped, lower case) → as written; a name given twice is a
    one-line ``DataError`` (reading by name would silently take one of them)."""
    header: dict[str, str] = {}
    for c in fieldnames or []:
        name = (c or "").strip().lower()
        if name and name in header:
            raise DataError(f"{path}: the header names the column {name!r} twice; keep one of them")
        header[name] = c
    return header


def _csv_header(path: Path) -> list[str]:
    row = next(csv.reader(csv_text(path)), [])
    return [c.strip().lower() for c in row]


def read_tuples_csv(
    path: str | os.PathLike[str], kind: str, channels: int | None = None, size: tuple[int, int] | None = None,
    skip_bad: bool = False, require_label: bool = True, cache: CacheSettings | None = None,
) -> tuple[ImageSet, TupleTable]:  # fmt: skip
    """A CSV of pairs (``path_a,path_b,label``; 1 = same) or triplets (``anchor,positive,negative``).

    Columns are found by header name (case-insensitive), never by position; relative paths are resolved
    against the CSV's folder. Rows naming a skipped image are dropped. With ``require_label=False`` a pairs CSV
    may lack the label column (the table's labels are then ``None``).
    """
    path = Path(path)
    needed: tuple[str, ...] = TUPLE_COLUMNS[kind]
    with csv_text(path) as fh:
        reader = csv.DictReader(fh)
        header = csv_columns(path, reader.fieldnames)
        if kind == "pairs" and not require_label and "label" not in header:
            needed = needed[:2]
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataError(f"{path}: missing column {missing[0]!r}; a {kind} CSV needs the header {','.join(needed)}")
        rows = [[(row[header[c]] or "").strip() for c in needed] for row in reader]
    if not rows:
        raise DataError(f"{path}: the CSV has a header but no rows")
    files: dict[str, int] = {}  # resolved path → position among the unique images
    cols = needed if kind == "triplets" else needed[:2]
    positions = np.empty((len(rows), len(cols)), np.int64)
    for line, row in enumerate(rows, start=2):
        for j, (col, value) in enumerate(zip(cols, row, strict=False)):
            if not value:
                raise DataError(f"{path}:{line}: empty {col!r}")
            full = value if os.path.isabs(value) else str(path.parent / value)
            positions[line - 2, j] = files.setdefault(full, len(files))
    labels = None
    if kind == "pairs" and len(needed) == 3:
        labels = np.asarray([_pair_label(r[2], path, line) for line, r in enumerate(rows, start=2)], np.int64)
    ordered = list(files)
    images, kept, skipped = _decode_all([Path(p) for p in ordered], channels, size, skip_bad, str(path), cache)
    remap = np.full(len(ordered), -1, np.int64)
    remap[kept] = np.arange(len(kept))
    index = remap[positions]
    ok = (index >= 0).all(axis=1)
    table = TupleTable(index[ok], None if labels is None else labels[ok])
    image_set = ImageSet(images, np.full(len(kept), -1, np.int64), [], [ordered[i] for i in kept], skipped)
    return image_set, table


def read_labels_csv(
    path: str | os.PathLike[str], channels: int | None = None, size: tuple[int, int] | None = None,
    skip_bad: bool = False, cache: CacheSettings | None = None,
) -> ImageSet:  # fmt: skip
    """A CSV of labelled images: ``path,label`` and optionally ``group`` (columns by header name, any order, extra
    columns ignored; relative paths resolved against the CSV's folder). ``label`` is the identity; ``group`` (an
    alphabet, a family, a camera site) makes the class ``group/label``, as the grouped folder layout does, so the
    identity split holds out whole groups and episodes can be drawn within one (``--within-group``)."""
    path = Path(path)
    with csv_text(path) as fh:
        reader = csv.DictReader(fh)
        header = csv_columns(path, reader.fieldnames)
        missing = [c for c in ("path", "label") if c not in header]
        if missing:
            raise DataError(f"{path}: missing column {missing[0]!r}; a labelled-images CSV needs the header "
                            "path,label (and optionally group)")  # fmt: skip
        cols = ["path", "label", *(["group"] if "group" in header else [])]
        rows = [[(row[header[c]] or "").strip() for c in cols] for row in reader]
    if not rows:
        raise DataError(f"{path}: the CSV has a header but no rows")
    files: list[Path] = []
    names: list[str] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        empty = next((c for c, v in zip(cols, row, strict=True) if not v), None)
        if empty is not None:
            raise DataError(f"{path}:{line}: empty {empty!r}; every row needs a path and a label"
                            + (" and a group" if len(cols) == 3 else ""))  # fmt: skip
        full = os.path.normpath(row[0] if os.path.isabs(row[0]) else path.parent / row[0])
        if full in seen:
            raise DataError(f"{path}:{line}: {row[0]!r} is listed twice (first on line {seen[full]}); "
                            "list each image once")  # fmt: skip
        if "/" in row[1] and len(cols) == 3:
            raise DataError(f"{path}:{line}: label {row[1]!r} contains '/', which separates group and label; "
                            "rename it")  # fmt: skip
        seen[full] = line
        files.append(Path(full))
        names.append(f"{row[2]}/{row[1]}" if len(cols) == 3 else row[1])
    classes = sorted(set(names))
    lookup = {c: i for i, c in enumerate(classes)}
    images, kept, skipped = _decode_all(files, channels, size, skip_bad, str(path), cache)
    labels = np.asarray([lookup[names[i]] for i in kept], np.int64)
    return ImageSet(images, labels, classes, [str(files[i]) for i in kept], skipped)


def _pair_label(value: str, path: Path, line: int) -> int:
    """A pairs CSV label: exactly 1 (same) or 0 (different), written as an integer or a float (``1.0``)."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number not in (0.0, 1.0):
        raise DataError(f"{path}:{line}: label {value!r} is not 1 (same) or 0 (different); fix that row")
    return int(number)


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
