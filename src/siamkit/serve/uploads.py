"""Untrusted uploads → model inputs: request-size limit, format allow-list, decompression-bomb guard, base64.

Every refusal is an ``HTTPException`` whose detail is one sentence for the client: 413 (too large), 415 (not an
accepted image format, or a content type that is neither multipart nor JSON), 422 (corrupt image, too many
pixels, a side below ``MIN_SIDE`` px or a long side over ``max_aspect`` times the short one, bad base64, missing
field, a text field over ``MAX_FIELD_CHARS`` characters).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siamkit.data.images import upright
from siamkit.data.readers import MIN_SIDE
from siamkit.serve.defaults import MAX_PIXELS, MAX_REQUEST_BYTES

ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
MAX_FIELD_CHARS = 256
"""The longest text field (``label``, ``k``) a request may carry: a label is a name, not a document."""
MAX_ASPECT = 32.0
"""An upload's long side may be at most this many times its short one: beyond, resizing it to the model's input
leaves nothing of it (1×5000 → 8×8 is a smear)."""


@dataclass(frozen=True)
class UploadLimits:
    """``max_request_bytes``: whole request body (multipart or JSON, base64 included); ``max_pixels``: width ×
    height of one decoded image (the decompression-bomb guard); ``formats``: Pillow format names accepted;
    ``max_images`` and ``max_request_pixels``: per request."""

    max_request_bytes: int = MAX_REQUEST_BYTES
    max_pixels: int = MAX_PIXELS
    formats: tuple[str, ...] = field(default=ACCEPTED_FORMATS)
    max_images: int = 64
    """Images in one request, multipart parts and JSON list items alike."""
    max_request_pixels: int = 100_000_000
    """Decoded pixels in one request, all its images together (the work one request may ask for)."""
    min_side: int = MIN_SIDE
    """An image's shortest side may not be below this (training refuses such images too: ``MIN_SIDE``)."""
    max_aspect: float = MAX_ASPECT
    """Long side over short side, at most (``MAX_ASPECT``)."""


class BodyLimitMiddleware:
    """Answers 413 for a request body over ``limit`` bytes: at once from ``Content-Length``, or as soon as a
    streamed (chunked) body passes the limit — the body is never buffered beyond it."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        received = 0
        sent = ResponseTracker(send)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, sent)
        except _TooLarge:
            if not sent.started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await send_detail(send, 413, f"request body over the {self.limit:,}-byte limit")


class ResponseTracker:
    """An ASGI ``send`` that notes whether the response has started (after which no error answer can be sent)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


async def send_detail(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """An ASGI answer ``{"detail": detail}`` with ``status``, from a middleware (before any route runs)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def decode_image(
    data: bytes, limits: UploadLimits, name: str = "image", budget: list[int] | None = None
) -> Image.Image:
    """Decode uploaded bytes with Pillow restricted to ``limits.formats``; check the pixel count from the header
    before decoding the pixels (a small file can declare a huge image). ``budget``: a one-item list holding the
    pixels the request may still decode; this image's are taken from it (422 once it would go below 0)."""
    if not data:
        raise HTTPException(422, f"{name}: empty upload")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(limits.formats))
            pixels = img.width * img.height
            check_shape(img.width, img.height, limits, name)
            if pixels > limits.max_pixels:
                raise HTTPException(
                    422, f"{name}: {img.width}×{img.height} = {pixels:,} pixels is over the {limits.max_pixels:,} "
                    "limit (decompression-bomb guard)",
                )  # fmt: skip
            if budget is not None:
                if pixels > budget[0]:
                    raise HTTPException(
                        422, f"{name}: the request's images exceed its budget of {limits.max_request_pixels:,} "
                        "pixels; send fewer or smaller images",
                    )  # fmt: skip
                budget[0] -= pixels
            img.load()
        except UnidentifiedImageError:
            raise HTTPException(
                415, f"{name}: not an image in an accepted format ({', '.join(limits.formats)})"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise HTTPException(422, f"{name}: too many pixels (decompression-bomb guard)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise HTTPException(422, f"{name}: corrupt or truncated image ({exc})") from None
    return upright(img)  # as a file of it is read (EXIF orientation): the same photo, the same embedding


def check_shape(width: int, height: int, limits: UploadLimits, name: str = "image") -> None:
    """422 for an image with a side below ``limits.min_side`` px or a long side over ``limits.max_aspect`` times the
    short one: resized to the model's input it would be a smear, answered as if it were an image of someone."""
    short, long = min(width, height), max(width, height)
    if short < limits.min_side:
        raise HTTPException(
            422, f"{name}: a {width}×{height} image is below the {limits.min_side}-px minimum side (training refuses "
            "such images too); send a larger image",
        )  # fmt: skip
    if long > limits.max_aspect * short:
        raise HTTPException(
            422, f"{name}: a {width}×{height} image is over the {limits.max_aspect:g}:1 aspect-ratio limit; crop it "
            "to the subject first",
        )  # fmt: skip


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise HTTPException(422, f"{name}: expected a base64 string")
    if value.startswith("data:"):
        value = value.partition(",")[2]  # data URL: data:image/png;base64,....
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, f"{name}: invalid base64") from None


@dataclass
class Payload:
    """The images (raw bytes, by field name; a field may repeat) and the plain fields of a request."""

    images: dict[str, list[bytes]]
    fields: dict[str, Any]
    pixel_budget: list[int] | None = None
    """Pixels the request may still decode (one item, shared by its images; see ``decode_image``)."""


async def read_payload(request: Request, image_fields: tuple[str, ...], max_files: int = 64) -> Payload:
    """Read ``multipart/form-data`` (file parts) or ``application/json`` (base64 strings, or lists of them), at most
    ``max_files`` images either way. File paths and URLs are never accepted: only the bytes of the request."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    images: dict[str, list[bytes]] = {f: [] for f in image_fields}
    fields: dict[str, Any] = {}
    if ctype == "multipart/form-data":
        form = await _read_form(request, max_files)
        try:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key in images:
                        images[key].append(await value.read())
                elif key in image_fields:
                    raise HTTPException(422, f"{key}: send the image as a file part, not a text field")
                else:
                    fields[key] = check_text(key, value)
        finally:
            await form.close()
    elif ctype == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(422, "request body is not valid JSON") from None
        except RecursionError:
            raise HTTPException(422, "request body is JSON nested too deeply") from None
        if not isinstance(body, dict):
            raise HTTPException(422, "JSON body must be an object")
        for key, value in body.items():
            if key in images:
                values = value if isinstance(value, list) else [value]
                if sum(len(v) for v in images.values()) + len(values) > max_files:
                    raise HTTPException(413, f"more than {max_files} images in one request; send them in batches")
                images[key] = [_b64(v, key) for v in values]
            else:
                fields[key] = check_text(key, value) if isinstance(value, str) else value
    else:
        raise HTTPException(415, "send multipart/form-data (file parts) or application/json (base64 images)")
    return Payload(images, fields)


def check_text(key: str, value: str) -> str:
    """``value``, or 422 naming ``key`` when it is over ``MAX_FIELD_CHARS`` characters."""
    if len(value) > MAX_FIELD_CHARS:
        raise HTTPException(422, f"{key}: {len(value):,} characters is over the {MAX_FIELD_CHARS}-character limit "
                            "for a text field")  # fmt: skip
    return value


class _FieldTooLong(Exception):
    def __init__(self, name: str):
        self.name = name


class _TextLimitedParser(MultiPartParser):
    """Starlette's multipart parser, stopping at the first text (non-file) part over its ``max_part_size`` with
    the part's name: a 5 MB label is refused as soon as it passes the limit, never buffered whole."""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        try:
            super().on_part_data(data, start, end)
        except MultiPartException:
            part = getattr(self, "_current_part", None)
            raise _FieldTooLong(str(getattr(part, "field_name", "") or "a text field")) from None


async def _read_form(request: Request, max_files: int) -> FormData:
    """The multipart form: at most ``max_files`` files and 64 text fields, each text field at most
    ``MAX_FIELD_CHARS`` characters (UTF-8: 4 bytes each at most)."""
    parser = _TextLimitedParser(request.headers, request.stream(), max_files=max_files, max_fields=64,
                                max_part_size=4 * MAX_FIELD_CHARS)  # fmt: skip
    try:
        return await parser.parse()
    except _FieldTooLong as exc:
        raise HTTPException(422, f"{exc.name}: over the {MAX_FIELD_CHARS}-character limit for a text field") from None
    except MultiPartException as exc:
        raise HTTPException(400, str(exc.message)) from None
