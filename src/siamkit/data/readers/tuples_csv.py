"""CSV manifests of fixed tuples: pairs (``path_a,path_b,label``; 1 = same) and triplets
(``anchor,positive,negative``)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from siamkit.config import DataConfig
from siamkit.data.cache import CacheSettings
from siamkit.data.imageset import ImageSet, TupleTable
from siamkit.data.readers.base import READERS, DatasetBundle, Item, Reader
from siamkit.data.readers.csvfiles import csv_columns, csv_text, is_csv_with, resolved
from siamkit.data.readers.decode import cache_settings, decode_all, image_size
from siamkit.errors import DataError

TUPLE_COLUMNS = {"pairs": ("path_a", "path_b", "label"), "triplets": ("anchor", "positive", "negative")}


def pair_label(value: str, path: Path, line: int) -> int:
    """A pairs CSV label: exactly 1 (same) or 0 (different), written as an integer or a float (``1.0``)."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number not in (0.0, 1.0):
        raise DataError(f"{path}:{line}: label {value!r} is not 1 (same) or 0 (different); fix that row")
    return int(number)


def tuple_rows(path: Path, kind: str, require_label: bool = True) -> tuple[tuple[str, ...], list[list[str]]]:
    """The columns read (``TUPLE_COLUMNS[kind]``, a pairs CSV's label left out when absent and not required) and
    each row's stripped cells."""
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
    return needed, rows


def tuple_positions(path: Path, cols: tuple[str, ...], rows: list[list[str]]) -> tuple[dict[str, int], np.ndarray]:
    """The distinct image paths of ``rows``' ``cols`` (relative ones joined to the CSV's folder) → their position
    in first-appearance order, and each row's positions ``(rows, len(cols))``; an empty cell names its line."""
    files: dict[str, int] = {}
    positions = np.empty((len(rows), len(cols)), np.int64)
    for line, row in enumerate(rows, start=2):
        for j, (col, value) in enumerate(zip(cols, row, strict=False)):
            if not value:
                raise DataError(f"{path}:{line}: empty {col!r}")
            full = value if os.path.isabs(value) else str(path.parent / value)
            positions[line - 2, j] = files.setdefault(full, len(files))
    return files, positions


def read_tuples_csv(
    path: str | os.PathLike[str], kind: str, channels: int | None = None, size: tuple[int, int] | None = None,
    skip_bad: bool = False, *, require_label: bool = True, cache: CacheSettings | None = None,
) -> tuple[ImageSet, TupleTable]:  # fmt: skip
    """A CSV of pairs (``path_a,path_b,label``; 1 = same) or triplets (``anchor,positive,negative``).

    Columns are found by header name (case-insensitive), never by position; relative paths are resolved
    against the CSV's folder. Rows naming a skipped image are dropped. With ``require_label=False`` a pairs CSV
    may lack the label column (the table's labels are then ``None``).
    """
    path = Path(path)
    needed, rows = tuple_rows(path, kind, require_label)
    files, positions = tuple_positions(path, needed if kind == "triplets" else needed[:2], rows)
    labels = None
    if kind == "pairs" and len(needed) == 3:
        labels = np.asarray([pair_label(r[2], path, line) for line, r in enumerate(rows, start=2)], np.int64)
    ordered = list(files)
    images, kept, skipped = decode_all([Path(p) for p in ordered], channels, size, skip_bad, key=str(path),
                                       cache=cache)  # fmt: skip
    remap = np.full(len(ordered), -1, np.int64)
    remap[kept] = np.arange(len(kept))
    index = remap[positions]
    ok = (index >= 0).all(axis=1)
    table = TupleTable(index[ok], None if labels is None else labels[ok])
    image_set = ImageSet(images, np.full(len(kept), -1, np.int64), [], [ordered[i] for i in kept], skipped)
    return image_set, table


class TuplesCsvReader(Reader):
    """A CSV of fixed tuples of the kind ``kind`` (the images are unlabelled: the tuples say what is same)."""

    kind = "pairs"

    def detect(self, path: Path) -> bool:
        return is_csv_with(path, set(TUPLE_COLUMNS[self.kind]))

    def read(self, cfg: DataConfig) -> DatasetBundle:
        images, table = read_tuples_csv(cfg.source, self.kind, cfg.channels, image_size(cfg), cfg.skip_bad,
                                        cache=cache_settings(cfg))  # fmt: skip
        return DatasetBundle(Path(cfg.source).stem, images, tuples=table)

    def list_images(self, source: str) -> list[Item]:
        """Each distinct image path once, in first-appearance order, label unknown (a tuple names no identity)."""
        path = Path(source)
        needed, rows = tuple_rows(path, self.kind, require_label=False)
        files, _ = tuple_positions(path, needed if self.kind == "triplets" else needed[:2], rows)
        return [(resolved(path.parent, p), None) for p in files]


@READERS.register("triplets-csv")
class TripletsCsvReader(TuplesCsvReader):
    """``anchor,positive,negative`` rows."""

    kind = "triplets"
    priority = 20


@READERS.register("pairs-csv")
class PairsCsvReader(TuplesCsvReader):
    """``path_a,path_b,label`` rows (label 1 = same, 0 = different)."""

    kind = "pairs"
    priority = 30
