"""The images a list of sources names, as ``index build``, ``siamkit embed`` and ``Model.embed`` read them:
image files, class-per-folder roots (labelled by folder), flat folders, and CSVs with a ``path`` column."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from siamkit.data.readers import class_files, class_folders, csv_text, list_files, note_left_out
from siamkit.errors import DataError

__all__ = ["collect_images"]


def collect_images(sources: Sequence[str], label: str | None = None) -> list[tuple[str, str | None]]:
    """``(path, label)`` for every image named by ``sources``:

    - an image file: itself (label ``label``, else unknown);
    - a folder with sub-folders (class-per-folder layout): every file of every class folder, labelled by it;
    - a flat folder: every file in it (label ``label``, else unknown);
    - a CSV with a ``path`` column (and optionally ``label``): its rows, relative paths read from the CSV's folder.
    """
    out: list[tuple[str, str | None]] = []
    for src in sources:
        p = Path(src)
        if not p.exists():
            raise DataError(f"{src}: not found; give image files, folders of images, or a CSV with a path column")
        if p.is_file() and p.suffix.lower() == ".csv":
            out += _read_list_csv(p)
        elif p.is_file():
            out.append((str(p.resolve()), label))
        else:
            classes = class_folders(p)
            left_out: list[str] = []
            if classes:
                out += [(str(f.resolve()), c.name) for c in classes for f in class_files(c, left_out)]
            else:
                out += [(str(f.resolve()), label) for f in list_files(p, left_out)]
            note_left_out(p, left_out)
    if not out:
        raise DataError(f"no images found in {', '.join(sources)}")
    return out


def _read_list_csv(path: Path) -> list[tuple[str, str | None]]:
    with csv_text(path) as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "path" not in fields:
            raise DataError(f"{path}: the CSV needs a 'path' column (and optionally 'label'); header is {fields}")
        reader.fieldnames = fields
        rows = list(reader)
    base = path.parent
    return [
        (str((base / r["path"].strip()).resolve()), (r.get("label") or "").strip() or None) for r in rows if r["path"]
    ]
