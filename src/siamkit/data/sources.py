"""The images a list of sources names, as ``index build``, ``siamkit embed`` and ``Model.embed`` read them: image
files, and every source training reads, listed by its layout's reader (``Reader.list_images``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from siamkit.data.readers.base import Item
from siamkit.data.readers.csvfiles import csv_header
from siamkit.data.readers.listing import image_extensions
from siamkit.data.readers.load import readers_in_order
from siamkit.errors import DataError

__all__ = ["collect_images"]


def collect_images(sources: Sequence[str], label: str | None = None) -> list[Item]:
    """``(path, label)`` for every image named by ``sources``, as ``index build``, ``siamkit embed`` and
    ``Model.embed`` read them: an image file is itself; any other source is listed by the first reader (by
    ``priority``) that takes it (``Reader.lists``): class folders labelled by folder, a flat folder's files, a
    CSV's ``path`` column (labels from ``label``, ``group/label`` with a ``group``), a pairs or triplets CSV's
    distinct images. ``label`` labels the images no reader labels; a set held as arrays (IDX, CIFAR-10,
    ``digits``) is a one-line ``DataError`` saying how to index it."""
    order = readers_in_order()
    named = {r.name: r for r in order if r.by_name}
    out: list[Item] = []
    for src in sources:
        p = Path(src)
        if not p.exists() and src in named:  # an existing file or folder of that name is what it says
            items = named[src].list_images(src)
        elif not p.exists():
            raise DataError(f"{src}: not found; give image files, folders of images, or a CSV with a path column")
        elif p.is_file() and p.suffix.lower() in image_extensions():
            items = [(str(p.resolve()), None)]
        else:
            reader = next((r for r in order if r.lists(p)), None)
            if reader is not None:
                items = reader.list_images(src)
            elif p.suffix.lower() == ".csv":
                raise DataError(f"{src}: the CSV needs a 'path' column (and optionally 'label'), or the columns of "
                                f"pairs (path_a,path_b,label) or triplets (anchor,positive,negative); header is "
                                f"{csv_header(p)}")  # fmt: skip
            else:
                items = [(str(p.resolve()), None)]  # a file no reader takes: an image, whatever its name says
        out += [(path, lab if lab is not None else label) for path, lab in items]
    if not out:
        raise DataError(f"no images found in {', '.join(sources)}")
    return out
