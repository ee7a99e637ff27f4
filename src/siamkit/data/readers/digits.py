"""scikit-learn's bundled 8×8 digits by name (``--data digits``)."""

from __future__ import annotations

import numpy as np
import torch

from siamkit.config import DataConfig
from siamkit.data.imageset import ImageSet
from siamkit.data.readers.base import READERS, ArrayReader, DatasetBundle


def read_digits() -> ImageSet:
    """scikit-learn's bundled 8×8 digits (1,797 images), scaled from 0–16 to 0–255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return ImageSet(torch.from_numpy(images), digits.target.astype(np.int64), [str(i) for i in range(10)])


@READERS.register("digits")
class DigitsReader(ArrayReader):
    """The 1,797 digits, by name only."""

    priority = 0
    by_name = True

    def read(self, cfg: DataConfig) -> DatasetBundle:
        return DatasetBundle("digits", read_digits())
