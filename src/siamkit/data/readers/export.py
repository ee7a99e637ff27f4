"""An in-memory image set written out as class folders, so that a set held as arrays (IDX, CIFAR-10, ``digits``)
can be indexed, embedded or browsed as files."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from siamkit.data.cache import as_tensor
from siamkit.data.imageset import ImageSet


def write_class_folders(images: ImageSet, root: str | os.PathLike[str]) -> int:
    """Write ``root/<class>/<n>.png`` for every image of ``images`` (``(N, C, H, W)`` uint8; class names from
    ``class_names``, else the label; a ``/`` in a name, as in ``T-shirt/top``, written ``_``); returns how many were
    written."""
    root = Path(root)
    x = as_tensor(images.images).numpy()
    for i, (pixels, label) in enumerate(zip(x, images.labels.tolist(), strict=True)):
        name = images.class_names[label] if 0 <= label < len(images.class_names) else str(label)
        folder = root / name.replace("/", "_").replace("\\", "_")
        folder.mkdir(parents=True, exist_ok=True)
        img = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
        Image.fromarray(img).save(folder / f"{i:06d}.png")
    return len(x)
