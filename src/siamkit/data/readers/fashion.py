"""Fashion-MNIST by name (``--data fashion-mnist``): IDX files from a folder, ``$SIAMKIT_FASHION_MNIST`` or the
Debian package's folder."""

from __future__ import annotations

import os
from pathlib import Path

from siamkit.config import DataConfig
from siamkit.data.imageset import ImageSet
from siamkit.data.readers.base import READERS, ArrayReader, DatasetBundle
from siamkit.data.readers.idx import read_idx_dir
from siamkit.errors import DataError

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def read_fashion_mnist(directory: str | None = None) -> tuple[ImageSet, ImageSet | None]:
    """Fashion-MNIST from ``directory``, ``$SIAMKIT_FASHION_MNIST`` or the Debian package's folder."""
    candidates = [directory] if directory else [os.environ.get("SIAMKIT_FASHION_MNIST"), *FASHION_MNIST_DIRS]
    for cand in candidates:
        if cand and Path(cand).is_dir() and any(Path(cand).glob("*-images-idx3-ubyte*")):
            train, test = read_idx_dir(cand)
            train.class_names = list(FASHION_MNIST_CLASSES)
            if test is not None:
                test.class_names = list(FASHION_MNIST_CLASSES)
            return train, test
    raise DataError(
        "Fashion-MNIST not found; install it with `apt-get install -y dataset-fashion-mnist` or pass "
        "--data DIR holding its *-idx3-ubyte.gz files"
    )


@READERS.register("fashion-mnist")
class FashionMnistReader(ArrayReader):
    """Fashion-MNIST: by name, or a folder of its IDX files with ``data.layout=fashion-mnist`` (class names)."""

    priority = 5
    by_name = True

    def read(self, cfg: DataConfig) -> DatasetBundle:
        train, test = read_fashion_mnist(None if cfg.source == "fashion-mnist" else cfg.source)
        return DatasetBundle("fashion-mnist", train, test)
