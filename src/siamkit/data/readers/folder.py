"""The class-per-folder layout ``root/<class>/[<sub-folders>/]<image>``, and its grouped form
``root/<group>/<class>/<image>`` (Omniglot's ``alphabet/character/``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siamkit.config import DataConfig
from siamkit.data.cache import CacheSettings
from siamkit.data.imageset import ImageSet
from siamkit.data.readers.base import READERS, DatasetBundle, Item, Reader
from siamkit.data.readers.decode import cache_settings, decode_all, image_size
from siamkit.data.readers.listing import class_files, class_folders, note_left_out, scan_folder
from siamkit.errors import DataError

log = logging.getLogger(__name__)

MIN_GROUP_CLASSES = 5  # a grouped layout has at least this many class folders per group folder (the median)
GROUP_SEP = "/"


def grouped_layout(root: Path, folders: Sequence[str]) -> bool:
    """Whether ``root/<group>/<class>/<image>`` (Omniglot's ``alphabet/character/``) is the layout: at least two
    top folders, none holding image files itself, every sub-folder holding image files and no deeper folders, and
    a median of at least ``MIN_GROUP_CLASSES`` sub-folders per top folder (a person's few session folders are
    not identities)."""
    if len(folders) < 2:
        return False
    widths = []
    for name in folders:
        files, subs = scan_folder(root / name, None)
        if files or not subs:
            return False
        for sub in subs:
            inner, deeper = scan_folder(root / name / sub, None)
            if not inner or deeper:
                return False
        widths.append(len(subs))
    return bool(np.median(widths) >= MIN_GROUP_CLASSES)


def class_groups(class_names: Sequence[str]) -> tuple[np.ndarray, list[str]] | None:
    """For class names ``group/class`` (a grouped folder layout): each class's group index ``(n_classes,)`` and the
    group names; None when the classes carry no group."""
    if not class_names or not all(GROUP_SEP in n for n in class_names):
        return None
    parents = [n.rsplit(GROUP_SEP, 1)[0] for n in class_names]
    names = sorted(set(parents))
    return np.asarray([names.index(p) for p in parents], np.int64), names


def class_listing(root: Path, grouped: bool | None = None) -> dict[str, list[Path]]:
    """Each class's image files, in class-name order (empty classes left out with a warning): the top folders'
    names, or, grouped (None: when ``grouped_layout`` finds it), ``group/class`` for each second-level folder."""
    folders = [d.name for d in class_folders(root)]
    if not folders:
        raise DataError(f"{root}: no class sub-folders found; expected root/<class>/<image>")
    if grouped is None and grouped_layout(root, folders):
        grouped = True
        log.info("%s: read as <group>/<class>/ folders (%d groups; each second-level folder is a class); set "
                 "data.grouped=false to make each top folder one class", root, len(folders))  # fmt: skip
    if grouped:
        folders = [f"{g}{GROUP_SEP}{c}" for g in folders for c in scan_folder(root / g, None)[1]]
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
    return {name: files for name, files in listed.items() if files}


def read_folder(
    root: str | os.PathLike[str], channels: int | None = None, size: tuple[int, int] | None = None,
    skip_bad: bool = False, cache: CacheSettings | None = None, *, grouped: bool | None = None,
) -> ImageSet:  # fmt: skip
    """Class-per-folder layout ``root/<class>/[<sub-folders>/]<image>``: every image under a class folder, at any
    depth, is of that class (``class_files``). Or, with ``grouped`` (None: when ``grouped_layout`` finds it),
    ``root/<group>/<class>/<image>``: one class per second-level folder, named ``group/class``; the identity split
    then holds out whole groups and episodes can be drawn within one."""
    root = Path(root)
    listed = class_listing(root, grouped)
    classes = list(listed)
    paths: list[Path] = []
    labels: list[int] = []
    for ci, name in enumerate(classes):
        paths += listed[name]
        labels += [ci] * len(listed[name])
    if not paths:
        raise DataError(f"{root}: the class folders hold no files")
    images, kept, skipped = decode_all(paths, channels, size, skip_bad, key=str(root), cache=cache)
    return ImageSet(images, np.asarray(labels, np.int64)[kept], classes, [str(paths[i]) for i in kept], skipped)


@READERS.register("folder")
class FolderReader(Reader):
    """A folder of class folders: labelled by folder."""

    priority = 60

    def detect(self, path: Path) -> bool:
        return path.is_dir() and any(e.is_dir() and not e.name.startswith(".") for e in path.iterdir())

    def read(self, cfg: DataConfig) -> DatasetBundle:
        images = read_folder(cfg.source, cfg.channels, image_size(cfg), cfg.skip_bad, cache_settings(cfg),
                             grouped=cfg.grouped)  # fmt: skip
        return DatasetBundle(Path(cfg.source).name, images)

    def list_images(self, source: str) -> list[Item]:
        listed = class_listing(Path(source))
        return [(str(f.resolve()), name) for name, files in listed.items() for f in files]
