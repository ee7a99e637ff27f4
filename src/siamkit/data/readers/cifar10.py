"""CIFAR-10's python batches (``data_batch_1..5``, ``test_batch``): by name or a folder holding them (the
batches' own rules are in :mod:`siamkit.data.cifar`)."""

from __future__ import annotations

from pathlib import Path

from siamkit.config import DataConfig
from siamkit.data.readers.base import READERS, ArrayReader, DatasetBundle


@READERS.register("cifar10")
class Cifar10Reader(ArrayReader):
    """CIFAR-10: the training batches are the pool, ``test_batch`` the test split."""

    priority = 10
    by_name = True

    def detect(self, path: Path) -> bool:
        from siamkit.data.cifar import find_cifar10

        return path.is_dir() and find_cifar10(path) is not None

    def read(self, cfg: DataConfig) -> DatasetBundle:
        from siamkit.data.cifar import load_cifar10

        train, test = load_cifar10(None if cfg.source == "cifar10" else cfg.source)
        return DatasetBundle("cifar10", train, test)
