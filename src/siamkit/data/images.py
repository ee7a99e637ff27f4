"""Decoding one image file into a uint8 array with an explicit mode conversion.

Grayscale, RGB, RGBA/LA (composited on white), palette (with or without transparency), CMYK, YCbCr and 16-bit
or float images are all converted explicitly to ``L`` (1 channel) or ``RGB`` (3 channels).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from siamkit.errors import DataError

SKIP_HINT = "remove it or pass --skip-bad (data.skip_bad=true) to skip unreadable files"


EXIF_ORIENTATION = 0x0112
"""The EXIF tag saying how a camera's pixels are to be turned for display (values 5–8 swap width and height)."""


def open_image(path: str | os.PathLike[str], faces: str | None = None) -> Image.Image:
    """Open and fully decode ``path``, turned upright as its EXIF orientation says (a phone's portrait photo is
    stored sideways with a tag; every viewer turns it, so must we); any failure is a DataError naming the file.
    With ``faces="align"`` — by default, inside ``siamkit.data.faces.face_alignment("align")`` — the result is
    the file's aligned face chip (no face: a DataError naming the file)."""
    img = _decode(path)
    from siamkit.data import faces as face_data

    mode = face_data.current_mode() if faces is None else face_data.check_mode(faces)
    return face_data.align_image(to_mode(img, 3), path) if mode == "align" else img


def _decode(path: str | os.PathLike[str]) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()
        return upright(img)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}); {SKIP_HINT}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc}); {SKIP_HINT}") from None


def orientation(img: Image.Image) -> int:
    """The image's EXIF orientation (1 = upright: also without a tag, or with one Pillow cannot read — a malformed
    EXIF block does not make the pixels unreadable)."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:
        return 1
    return value if value in range(1, 9) else 1


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation tag says (unchanged, no copy, when upright)."""
    if orientation(img) == 1:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # as in orientation: an unreadable block turns nothing
        return img


def header_size(img: Image.Image) -> tuple[int, int]:
    """(H, W) of an opened, not yet decoded image as ``open_image`` will return it (EXIF orientation applied), from
    EXIF already read with the header (JPEG, WebP, TIFF; a PNG's eXIf chunk when it precedes the pixels)."""
    h, w = img.height, img.width
    if ("exif" in img.info or img.format == "TIFF") and orientation(img) in (5, 6, 7, 8):
        return w, h
    return h, w


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to ``L`` (channels=1) or ``RGB`` (channels=3), explicitly."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
        mode = "RGB"
    if mode == "1":
        img = img.convert("L")
        mode = "L"
    if mode not in ("L", "RGB"):  # CMYK, YCbCr, LAB, HSV, ...
        img = img.convert("RGB")
    return img.convert("L" if channels == 1 else "RGB")


def natural_channels(img: Image.Image) -> int:
    """1 for single-band (grayscale-like) images, else 3."""
    return 1 if img.mode in ("1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "LA") else 3


def load_image(
    path: str | os.PathLike[str], channels: int, size: tuple[int, int] | None, faces: str | None = None
) -> np.ndarray:
    """Read ``path`` as a ``(C, H, W)`` uint8 array, resized (bilinear) to ``size`` = (H, W) if given (its face
    chip with ``faces="align"``, see :func:`open_image`)."""
    return image_to_array(open_image(path, faces), channels, size)


def image_to_array(img: Image.Image, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """A decoded PIL image as a ``(C, H, W)`` uint8 array of ``channels`` channels, resized to ``size`` = (H, W)."""
    img = to_mode(img, channels)
    if size is not None and (img.height, img.width) != size:
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()
