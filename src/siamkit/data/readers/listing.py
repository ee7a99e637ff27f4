"""Which files of a folder are images, and the class folders of a class-per-folder root (shared by the readers
of folders and by ``index build``'s listing)."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from siamkit.errors import DataError
from siamkit.text import name_list

log = logging.getLogger(__name__)

SPLIT_FOLDER_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing", "dev"})
PHOTO_FORMATS_PILLOW_LACKS = frozenset({".heic", ".heif", ".jxl", ".svg", ".cr2", ".cr3", ".nef", ".arw", ".dng",
                                        ".orf", ".raf", ".rw2"})  # fmt: skip
"""Extensions of image formats that cameras and phones write but this Pillow cannot decode (HEIC needs the
``pillow-heif`` plug-in; raw and vector formats need converting)."""


def list_files(folder: Path, left_out: list[str] | None = None) -> list[Path]:
    """The non-hidden files of ``folder`` that may be images, sorted (one directory scan: no stat per file): a name
    with an image format's extension (any Pillow reads) or with none. Others (``Thumbs.db``, ``desktop.ini``,
    ``notes.txt``, annotation files) are left out, appended to ``left_out`` (for ``note_left_out``); a file whose
    extension says image but whose bytes are not is still an error (or skipped with ``data.skip_bad``)."""
    return scan_folder(folder, left_out)[0]


def scan_folder(folder: Path, left_out: list[str] | None) -> tuple[list[Path], list[str]]:
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


def class_files(folder: Path, left_out: list[str] | None = None) -> list[Path]:
    """The images of one class folder, at any depth (``person/session/img.jpg``): its own files, then each
    sub-folder's, in name order; hidden files and folders skipped, files no image by their extension left out as in
    ``list_files``; linked sub-folders are not entered (as ``os.walk``: a link back up would never end)."""
    out, subs = scan_folder(folder, left_out)
    for sub in subs:
        out += class_files(folder / sub, left_out)
    return out
