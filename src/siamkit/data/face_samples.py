"""A small folder of faces to try the face commands on, from photographs that installed packages ship: Grace
Hopper (matplotlib's ``sample_data``), the astronaut Eileen Collins (scikit-image) and faces of scikit-image's
LFW subset (25×25 crops, enlarged and framed so that the detector finds them). Nothing is downloaded.

``python -m siamkit.data.face_samples OUT`` writes ``OUT/grace_hopper.jpg``, ``OUT/grace_flipped.jpg``,
``OUT/astronaut.png`` and ``OUT/people/<person>/<n>.png``: each person is one photograph under small warps
(mirror, rotation, scale, crop, brightness) — enough to run every command, not a benchmark of anything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from siamkit.errors import ConfigError


def sample_paths() -> dict[str, Path]:
    """The shipped photographs: ``grace_hopper`` and ``astronaut``, and the LFW subset array ``lfw``."""
    import matplotlib

    try:
        import skimage
    except ImportError:
        raise ConfigError("the face samples need scikit-image: pip install 'siamkit[faces]'") from None
    data = Path(os.path.dirname(skimage.__file__)) / "data"
    return {"grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
            "astronaut": data / "astronaut.png", "lfw": data / "lfw_subset.npy"}  # fmt: skip


def lfw_face(index: int) -> Image.Image:
    """Face ``index`` (0–99) of scikit-image's LFW subset, enlarged to 200×200 and framed by its edge pixels
    (300×300 RGB): the HOG detector needs a face of 80 px and some margin."""
    faces = np.load(sample_paths()["lfw"])
    grey = Image.fromarray((faces[index] * 255).astype(np.uint8)).resize((200, 200), Image.Resampling.BICUBIC)
    return Image.fromarray(np.pad(np.asarray(grey), 50, mode="edge")).convert("RGB")


def warps(image: Image.Image, count: int) -> list[Image.Image]:
    """``image`` and up to ``count − 1`` small warps of it (mirror, 6° rotation, 0.85 scale, crop, brighter)."""
    w, h = image.size
    out = [
        image,
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        image.rotate(6, resample=Image.Resampling.BILINEAR),
        image.resize((int(w * 0.85), int(h * 0.85)), Image.Resampling.BILINEAR),
        image.crop((w // 25, h // 50, w - w // 50, h - w // 25)),
        Image.eval(image, lambda v: min(255, int(v * 1.15))),
    ]
    return out[:count]


LFW_PEOPLE = (0, 1, 2, 3, 5, 6, 7, 8, 10, 11)
"""LFW subset faces the detector finds once framed (``lfw_face``), under every warp of ``warps``."""


def write_sample_people(out: str | os.PathLike[str], lfw: int = 6, per_person: int = 4) -> Path:
    """Write the sample folder (see the module's docstring) with ``lfw`` LFW people besides Grace Hopper and the
    astronaut, ``per_person`` images each; returns ``OUT/people``."""
    out = Path(out)
    paths = sample_paths()
    grace, astronaut = Image.open(paths["grace_hopper"]).convert("RGB"), Image.open(paths["astronaut"]).convert("RGB")
    (out / "people").mkdir(parents=True, exist_ok=True)
    grace.save(out / "grace_hopper.jpg", quality=95)
    grace.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out / "grace_flipped.jpg", quality=95)
    astronaut.save(out / "astronaut.png")
    people = {"grace_hopper": grace, "astronaut": astronaut}
    people.update({f"lfw_{i:02d}": lfw_face(i) for i in LFW_PEOPLE[:lfw]})
    for name, image in people.items():
        folder = out / "people" / name
        folder.mkdir(exist_ok=True)
        for n, img in enumerate(warps(image, per_person)):
            img.save(folder / f"{n}.png")
    return out / "people"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m siamkit.data.face_samples OUT_DIR", file=sys.stderr)
        return 2
    people = write_sample_people(args[0])
    print(f"written: {people.parent} ({len(list(people.iterdir()))} people in {people})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
