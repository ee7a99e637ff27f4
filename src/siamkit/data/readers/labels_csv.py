"""The labelled-images CSV: ``path,label[,group]`` (columns by header name)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from siamkit.config import DataConfig
from siamkit.data.cache import CacheSettings
from siamkit.data.imageset import ImageSet
from siamkit.data.readers.base import READERS, DatasetBundle, Item, Reader
from siamkit.data.readers.csvfiles import csv_columns, csv_text, is_csv_with, resolved
from siamkit.data.readers.decode import cache_settings, decode_all, image_size
from siamkit.errors import DataError


def _labelled_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The columns read (``path``, ``label`` and ``group`` when there) and each row's stripped cells."""
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
    return cols, rows


def read_labels_csv(
    path: str | os.PathLike[str], channels: int | None = None, size: tuple[int, int] | None = None,
    skip_bad: bool = False, cache: CacheSettings | None = None,
) -> ImageSet:  # fmt: skip
    """A CSV of labelled images: ``path,label`` and optionally ``group`` (columns by header name, any order, extra
    columns ignored; relative paths resolved against the CSV's folder). ``label`` is the identity; ``group`` (an
    alphabet, a family, a camera site) makes the class ``group/label``, as the grouped folder layout does, so the
    identity split holds out whole groups and episodes can be drawn within one (``--within-group``)."""
    path = Path(path)
    cols, rows = _labelled_rows(path)
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
    images, kept, skipped = decode_all(files, channels, size, skip_bad, key=str(path), cache=cache)
    labels = np.asarray([lookup[names[i]] for i in kept], np.int64)
    return ImageSet(images, labels, classes, [str(files[i]) for i in kept], skipped)


def list_path_csv(path: Path) -> list[Item]:
    """The rows of a CSV with a ``path`` column, as listed for ``index build``: label from ``label`` (``group/label``
    with a ``group`` column, as training names the class) or unknown; rows without a path skipped."""
    with csv_text(path) as fh:
        reader = csv.DictReader(fh)
        header = csv_columns(path, reader.fieldnames)
        if "path" not in header:
            raise DataError(f"{path}: the CSV needs a 'path' column (and optionally 'label'); header is "
                            f"{list(header)}")  # fmt: skip
        rows = [{c: (row[header[c]] or "").strip() for c in ("path", "label", "group") if c in header}
                for row in reader]  # fmt: skip
    out: list[Item] = []
    for r in rows:
        if r["path"]:
            label = r.get("label") or None
            group = r.get("group")
            out.append((resolved(path.parent, r["path"]), f"{group}/{label}" if label and group else label))
    return out


@READERS.register("labels-csv")
class LabelsCsvReader(Reader):
    """A CSV of labelled images (``path,label[,group]``)."""

    priority = 40

    def detect(self, path: Path) -> bool:
        return is_csv_with(path, {"path", "label"})

    def read(self, cfg: DataConfig) -> DatasetBundle:
        images = read_labels_csv(cfg.source, cfg.channels, image_size(cfg), cfg.skip_bad, cache_settings(cfg))
        return DatasetBundle(Path(cfg.source).stem, images)

    def lists(self, path: Path) -> bool:
        """Any CSV with a ``path`` column (a list of images to index needs no labels)."""
        return is_csv_with(path, {"path"})

    def list_images(self, source: str) -> list[Item]:
        return list_path_csv(Path(source))
