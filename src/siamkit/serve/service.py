"""The state behind the service's routes (:class:`Service`): the model, the optional gallery and the lock that
serialises its edits; decoding uploads into model inputs, batched embedding, gallery search and edits, thumbnails;
and what an answer may say about the served threshold (no server paths)."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from siamkit.data.images import image_to_array, to_mode, upright
from siamkit.errors import DataError, SiamkitError
from siamkit.files import atomic_write_bytes
from siamkit.index.gallery import Gallery, locked
from siamkit.runs.model import Model
from siamkit.serve.batching import Batcher, Batching
from siamkit.serve.uploads import Payload, UploadLimits, decode_image, read_payload

THUMBNAIL = 256
STORED_SIDE = 512


class Service:
    """The state behind the routes: the model, the optional gallery and the lock that serialises its edits."""

    def __init__(self, model: Model, gallery: Gallery | None, limits: UploadLimits, batching: Batching):
        self.model = model
        self.gallery = gallery
        self.limits = limits
        self.batching = batching
        self.lock = threading.RLock()
        self.batcher = Batcher(lambda x: self.model.embedder.embed(x), batching.max_batch, batching.max_wait_ms)
        self._described: dict[float | None, dict[str, Any] | None] = {}

    def threshold_info(self) -> dict[str, Any] | None:
        """The served threshold's provenance (``served_threshold_info``), read once per threshold value
        (``Model.threshold`` may be set)."""
        if self.model.threshold not in self._described:
            self._described.clear()
            self._described[self.model.threshold] = served_threshold_info(self.model)
        return self._described[self.model.threshold]

    async def read(self, request: Request, image_fields: tuple[str, ...]) -> Payload:
        """The request's images and fields, within the per-request limits (image count, then decoded pixels)."""
        payload = await read_payload(request, image_fields, self.limits.max_images)
        payload.pixel_budget = [self.limits.max_request_pixels]
        return payload

    def decode(self, data: bytes, name: str, budget: list[int] | None = None) -> Image.Image:
        """The validated upload in the model's colour mode (``L`` or ``RGB``), at its own size."""
        return to_mode(decode_image(data, self.limits, name, budget), self.model.input_shape[0])

    def to_input(self, img: Image.Image, name: str = "image") -> np.ndarray:
        """The model's input for an upload: its aligned face chip first when the run's images are faces."""
        c, h, w = self.model.input_shape
        if self.model.faces == "align":
            try:
                img = self.model.face(img, name)
            except DataError as exc:
                raise HTTPException(422, str(exc)) from None
        return image_to_array(img, c, (h, w))

    @staticmethod
    def blobs(payload: Payload, field: str, count: int | None = 1) -> list[bytes]:
        blobs = payload.images.get(field, [])
        if not blobs:
            raise HTTPException(422, f"missing image field {field!r}")
        if count is not None and len(blobs) != count:
            raise HTTPException(422, f"field {field!r}: expected {count} image, got {len(blobs)}")
        return blobs

    def _inputs(self, blobs: list[bytes], field: str, budget: list[int] | None) -> list[np.ndarray]:
        return [self.to_input(self.decode(b, field, budget), field) for b in blobs]

    async def images(self, payload: Payload, field: str, count: int | None = 1) -> list[np.ndarray]:
        """Model inputs ``(C, H, W)`` uint8 of the images of ``field``: decoded and resized in the thread pool."""
        return await run_in_threadpool(self._inputs, self.blobs(payload, field, count), field, payload.pixel_budget)

    async def embed(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Embeddings ``(n, D)`` of model inputs, computed in a batch with other requests' (``serve.batching``)."""
        return await self.batcher.embed(np.stack(arrays))

    def current(self) -> Gallery | None:
        """The gallery (or None), reloaded first if another process (``siamkit index add/remove``) committed. A
        gallery rebuilt meanwhile with another model is refused (409) without naming any server path."""
        if self.gallery is not None and self.gallery.is_stale():
            with self.lock:
                try:
                    self._reload()
                except SiamkitError:
                    raise HTTPException(409, "the gallery on disk was rebuilt with another model or is unreadable; "
                                        "restart the service with a matching run and gallery") from None  # fmt: skip
        return self.gallery

    def need_gallery(self) -> Gallery:
        gallery = self.current()
        if gallery is None:
            raise HTTPException(409, "no gallery loaded; start the service with --gallery DIR")
        return gallery

    def _reload(self) -> None:
        """Catch up with the committed gallery (caller holds ``self.lock``)."""
        assert self.gallery is not None
        fresh = self.gallery.refresh()  # the new log rows alone, unless the base changed
        if fresh is not self.gallery:
            fresh.check_model(self.model.describe())
        self.gallery = fresh

    def add_item(self, img: Image.Image, vector: np.ndarray, label: str | None) -> int:
        """Store a copy of the validated image (re-encoded as PNG, at most ``STORED_SIDE`` px on its long side: no
        byte of the upload is kept) under the gallery's uploads/ and commit the new item."""
        directory = self.need_gallery().directory
        with self.lock, locked(directory):  # one writer at a time, in this process and across processes
            self._reload()
            gallery = self.need_gallery()
            item_id = gallery.peek_next_id()
            rel = f"uploads/{item_id}.png"
            copy = img.copy()
            copy.thumbnail((STORED_SIDE, STORED_SIDE))
            buf = io.BytesIO()
            copy.save(buf, format="PNG")
            atomic_write_bytes(directory / rel, buf.getvalue())
            try:
                (new_id,) = gallery.add(vector[None], [rel], [label])
                gallery.save()
            except BaseException:
                self.gallery = Gallery.open(directory)  # back to the last committed state
                (directory / rel).unlink(missing_ok=True)
                raise
            assert new_id == item_id
            return new_id

    def remove_item(self, item_id: int) -> None:
        directory = self.need_gallery().directory
        with self.lock, locked(directory):
            self._reload()
            gallery = self.need_gallery()
            if item_id not in gallery.items:
                raise HTTPException(404, f"no gallery item with id {item_id}")
            (item,) = gallery.remove([item_id])
            try:
                gallery.save()
            except BaseException:
                self.gallery = Gallery.open(directory)
                raise
        owned = gallery.owned_upload(item)
        if owned is not None:
            owned.unlink(missing_ok=True)

    def search(self, vectors: np.ndarray, k: int, query_label: str | None = None) -> list[list[dict[str, Any]]]:
        """The ``k`` nearest items of each vector. With the query's ``query_label``, each hit says whether its
        match is right: ``false_accept`` (within the threshold, another identity's label) and ``true_accept``;
        both None when either label is unknown."""
        gallery = self.need_gallery()
        with self.lock:
            distances, ids = gallery.search(vectors, k)
            hits = gallery.hits(distances, ids, self.model.threshold)

        def known(h: Any) -> bool:
            return query_label is not None and h.label is not None and h.match is not None

        return [[{"rank": h.rank, "id": h.id, "distance": h.distance, "label": h.label, "match": h.match,
                  "false_accept": bool(h.match and h.label != query_label) if known(h) else None,
                  "true_accept": bool(h.match and h.label == query_label) if known(h) else None,
                  "image_url": f"/gallery/{h.id}/image"} for h in row] for row in hits]  # fmt: skip

    def thumbnail(self, item_id: int) -> bytes:
        gallery = self.need_gallery()
        item = gallery.items.get(item_id)
        if item is None:
            raise HTTPException(404, f"no gallery item with id {item_id}")
        path = gallery.resolve(item)
        try:
            with Image.open(path) as opened:
                img = upright(opened)
                img.thumbnail((THUMBNAIL, THUMBNAIL))
                buf = io.BytesIO()
                img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB").save(buf, format="PNG")
        except (OSError, ValueError, Image.DecompressionBombError):
            raise HTTPException(404, f"the image of item {item_id} is no longer readable") from None
        return buf.getvalue()


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"():,]+/)*([^\s'\"():,]+)")


def served_threshold_info(model: Model) -> dict[str, Any] | None:
    """Where the served threshold holds (``siamkit.thresholds``), without server paths: the ``data`` a calibration
    read is named by its last part only. A threshold other than the run's (``--threshold``) is described as given;
    ``rule_text`` is the one line the page shows beside a verdict (``thresholds.decision_rule``)."""
    from siamkit.thresholds import decision_info, decision_rule, run_threshold_info

    info = run_threshold_info(model.run_dir) if model.run_dir else None
    served = model.threshold
    if served is not None and (info is None or not _same_number(info.get("threshold"), served)):
        info = decision_info(None, served) or {}
        if not model.run_dir:
            info.update(rule="saved with the model", set_on="nothing the model file records")
    if info is None:
        return None
    info = dict(info)
    info["rule_text"] = decision_rule(info) if served is not None else None
    if info.get("data"):
        info["data"] = Path(str(info["data"])).name
    if info.get("set_on"):
        info["set_on"] = without_paths(str(info["set_on"]))
    if info.get("warning"):
        info["warning"] = without_paths(str(info["warning"]))
    return info


def _same_number(a: Any, b: float) -> bool:
    return isinstance(a, int | float) and not isinstance(a, bool) and abs(float(a) - b) <= 1e-9 * max(1.0, abs(b))


def without_paths(message: str) -> str:
    """``message`` with every absolute path cut to its last part: an answer never tells where files live."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1), message)
