"""The flat folder layout: the class in the file name (``<prefix>_<class>_<rest>.png``, or a regex)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from siamkit.config import DataConfig
from siamkit.data.cache import CacheSettings
from siamkit.data.imageset import ImageSet
from siamkit.data.readers.base import READERS, DatasetBundle, Item, Reader
from siamkit.data.readers.decode import cache_settings, decode_all, image_size
from siamkit.data.readers.listing import list_files, note_left_out
from siamkit.errors import DataError

log = logging.getLogger(__name__)


def flat_class(path: Path, field: int, pattern: re.Pattern[str] | None) -> str:
    """The class in ``path``'s name: ``pattern``'s group ``class`` (else group 1), or the ``field``-th ``_`` field of
    the stem."""
    if pattern is not None:
        m = pattern.search(path.name)
        if not m:
            raise DataError(f"{path}: file name does not match data.flat_regex {pattern.pattern!r}; rename it or fix "
                            "the regex")  # fmt: skip
        return m.group("class") if "class" in pattern.groupindex else m.group(1)
    fields = path.stem.split("_")
    if len(fields) <= field:
        raise DataError(
            f"{path}: file name has no '_'-field {field} for the class; expected <prefix>_<class>_<rest>, "
            "or set data.flat_field / data.flat_regex"
        )
    return fields[field]


def read_flat(
    root: str | os.PathLike[str], field: int = 1, regex: str | None = None, channels: int | None = None,
    size: tuple[int, int] | None = None, *, skip_bad: bool = False, cache: CacheSettings | None = None,
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
    names = [flat_class(p, field, pattern) for p in paths]
    if pattern is None and field == 1 and all(len(p.stem.split("_")) == 2 for p in paths):
        log.warning("%s: the file names have two '_'-fields (%s): the class is the second one (%r), as in "
                    "<prefix>_<class>_<rest>; if it is the first, set data.flat_field=0", root, paths[0].name,
                    names[0])  # fmt: skip
    classes = sorted(set(names))
    lookup = {c: i for i, c in enumerate(classes)}
    images, kept, skipped = decode_all(paths, channels, size, skip_bad, key=str(root), cache=cache)
    labels = np.asarray([lookup[names[i]] for i in kept], np.int64)
    return ImageSet(images, labels, classes, [str(paths[i]) for i in kept], skipped)


@READERS.register("flat")
class FlatReader(Reader):
    """Any other folder: its files, the class in each name (``data.flat_field`` / ``data.flat_regex``)."""

    priority = 90  # the catch-all for folders: tried last

    def detect(self, path: Path) -> bool:
        return path.is_dir()

    def read(self, cfg: DataConfig) -> DatasetBundle:
        images = read_flat(cfg.source, cfg.flat_field, cfg.flat_regex, cfg.channels, image_size(cfg),
                           skip_bad=cfg.skip_bad, cache=cache_settings(cfg))  # fmt: skip
        return DatasetBundle(Path(cfg.source).name, images)

    def list_images(self, source: str) -> list[Item]:
        """The folder's files, label unknown (their names' class field is a training setting, ``data.flat_*``)."""
        left_out: list[str] = []
        files: list[Item] = [(str(f.resolve()), None) for f in list_files(Path(source), left_out)]
        note_left_out(source, left_out)
        return files
