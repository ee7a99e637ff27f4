"""An in-memory image set written out as class folders, so that a set held as arrays (IDX, CIFAR-10, ``digits``)
can be indexed, embedded or browsed as files: ``index build``, ``siamkit embed`` and ``Model.embed`` take every
source training does."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from siamkit.config import DataConfig
from siamkit.data.cache import as_tensor, cache_root
from siamkit.data.imageset import ImageSet

COMPLETE = ".complete"
"""Written last into a set's folder of files: a folder without it is a cut write, done again."""


def write_class_folders(images: ImageSet, root: str | os.PathLike[str], *, prefix: str = "") -> int:
    """Write ``root/<class>/<prefix><n>.png`` for every image of ``images`` (``(N, C, H, W)`` uint8; class names
    from ``class_names``, else the label; a ``/`` in a name, as in ``T-shirt/top``, written ``_``); returns how many
    were written."""
    root = Path(root)
    x = as_tensor(images.images).numpy()
    for i, (pixels, label) in enumerate(zip(x, images.labels.tolist(), strict=True)):
        name = images.class_names[label] if 0 <= label < len(images.class_names) else str(label)
        folder = root / name.replace("/", "_").replace("\\", "_")
        folder.mkdir(parents=True, exist_ok=True)
        img = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
        Image.fromarray(img).save(folder / f"{prefix}{i:06d}.png")
    return len(x)


def array_set_files(reader: Any, source: str) -> list[tuple[str, str | None]]:
    """``(path, class)`` of every image of the array set ``source`` (its pool, then its own test files), read by
    ``reader`` and written out once as ``<cache>/sets/<layout>-<digest>/<class>/*.png`` (a temp folder renamed
    into place, so that a cut write is never listed); the digest follows the source's files (names, sizes, times),
    so a changed set is written again."""
    target = cache_root() / "sets" / f"{reader.name}-{_digest(source)}"
    if not (target / COMPLETE).is_file():
        bundle = reader.read(DataConfig(source=source, layout=reader.name, cache=False))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            write_class_folders(bundle.images, tmp, prefix="train-")
            if bundle.test is not None:
                write_class_folders(bundle.test, tmp, prefix="test-")
            (tmp / COMPLETE).write_text(f"{source}\n")
            shutil.rmtree(target, ignore_errors=True)  # a cut write's folder, without its marker
            try:
                os.rename(tmp, target)
            except OSError:  # another process wrote it first: use its folder
                if not (target / COMPLETE).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [(str(f.resolve()), c.name) for c in sorted(p for p in target.iterdir() if p.is_dir())
            for f in sorted(c.glob("*.png"))]  # fmt: skip


def _digest(source: str) -> str:
    """A short hash of ``source``: a name as is, a file or folder by its resolved path and its files' names, sizes
    and modification times."""
    h = hashlib.sha256(source.encode())
    path = Path(source)
    if path.exists():
        h.update(str(path.resolve()).encode())
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
