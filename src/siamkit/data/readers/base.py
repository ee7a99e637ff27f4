"""The reader contract and its registry: ``READERS`` maps a layout name (``data.layout``) to a :class:`Reader`.

A reader owns its layout's format rules: ``detect(path)`` (is this file or folder in my layout?), ``read(cfg)``
(the :class:`DatasetBundle` training reads), ``list_images(source)`` (the ``(path, label)`` pairs that
``index build``, ``siamkit embed`` and ``Model.embed`` read), ``by_name`` (the layout's name alone is a source,
``digits``) and ``priority`` (detection order: lower first, the more specific layouts before the catch-all).

A new reader is one module under ``siamkit.data.readers`` with a class registered by
``@READERS.register("name")``, and its module's name added to :data:`PROVIDERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from siamkit.config import DataConfig
from siamkit.data.imageset import ImageSet, TupleTable
from siamkit.errors import DataError
from siamkit.registry import Registry

Item = tuple[str, str | None]
"""An image as ``index build`` lists it: its absolute path and its label (None: unknown)."""


@dataclass
class DatasetBundle:
    """What a source provides: an image pool, an optional test split of its own, optional fixed tuples."""

    name: str
    images: ImageSet
    test: ImageSet | None = None
    tuples: TupleTable | None = None
    layout: str = ""
    """The layout it was read with (``folder``, ``flat``, ``idx``, ...)."""


class Reader(ABC):
    """One data layout and its format rules (see the module's docstring)."""

    priority: ClassVar[int] = 100
    """Detection order: readers are tried lowest first (ties by name), so the more specific layouts come first."""
    by_name: ClassVar[bool] = False
    """The layout's name alone is a source (``--data digits``)."""
    name: str = ""
    """The name it is registered under (set when looked up by :func:`siamkit.data.readers.load.get_reader`)."""

    def detect(self, path: Path) -> bool:
        """Whether the existing file or folder ``path`` is in this layout (``data.layout=auto``)."""
        return False

    @abstractmethod
    def read(self, cfg: DataConfig) -> DatasetBundle:
        """The images (and test split, fixed tuples) of ``cfg.source`` under ``cfg``'s settings."""

    def lists(self, path: Path) -> bool:
        """Whether :meth:`list_images` takes ``path`` (default: :meth:`detect`; a listing may accept more)."""
        return self.detect(path)

    def list_images(self, source: str) -> list[Item]:
        """Every image file of ``source`` as ``(absolute path, label or None)``, in reading order."""
        raise DataError(f"{source}: the {self.name or type(self).__name__} layout lists no image files")


class ArrayReader(Reader):
    """A set held as arrays (IDX, CIFAR-10 batches, scikit-learn's digits): listed as the class folders of PNG files
    it is written out to once, in siamkit's cache (:func:`siamkit.data.readers.export.array_set_files`)."""

    def list_images(self, source: str) -> list[Item]:
        from siamkit.data.readers.export import array_set_files

        return array_set_files(self, source)


PROVIDERS = tuple(f"siamkit.data.readers.{family}" for family in (
    "digits", "fashion", "cifar10", "tuples_csv", "labels_csv", "idx", "folder", "flat",
))  # fmt: skip
"""The modules whose readers register on :data:`READERS` (one line per reader family)."""

READERS: Registry[Reader] = Registry("data.layout", providers=PROVIDERS)
"""The data layouts: ``name`` → a :class:`Reader` class (or a user's ``package.module:Class``)."""
