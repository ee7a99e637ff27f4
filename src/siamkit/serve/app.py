"""The HTTP service (FastAPI): embed, verify, search and gallery edits over a trained model, plus a web page.

``create_app(model, gallery)`` builds the app (used in-process by tests); ``serve(...)`` runs it on uvicorn.
Model inference, image decoding and gallery commits run in the thread pool, never on the event loop. Errors are
``{"detail": "..."}`` without tracebacks. OpenAPI docs at ``/docs`` (schema ``/openapi.json``).
"""

from __future__ import annotations

import errno
import io
import logging
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from siamkit.data.images import image_to_array, to_mode, upright
from siamkit.devices import keep_freed_memory
from siamkit.errors import DataError, SiamkitError
from siamkit.files import atomic_write_bytes
from siamkit.index.gallery import Gallery, locked
from siamkit.runs.embedders import Embedder, ModelSource
from siamkit.runs.model import Model, as_model, open_model
from siamkit.serve.batching import Batcher, Batching
from siamkit.serve.guard import Guard, GuardMiddleware, default_hosts, is_loopback
from siamkit.serve.page import PAGE_HTML
from siamkit.serve.timeouts import KEEP_ALIVE, REQUEST_TIMEOUT, RequestDeadlineMiddleware, deadline_protocol
from siamkit.serve.uploads import (
    MAX_FIELD_CHARS,
    BodyLimitMiddleware,
    Payload,
    UploadLimits,
    decode_image,
    read_payload,
)
from siamkit.version import __version__

log = logging.getLogger(__name__)
MAX_K = 100
THUMBNAIL = 256
STORED_SIDE = 512
CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _image_body(*fields: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAPI request body: multipart file parts, or JSON with base64 strings."""
    props = {f: {"type": "string", "format": "binary"} for f in fields}
    json_props = {f: {"type": "string", "format": "byte", "description": "base64 (or a data: URL)"} for f in fields}
    for name, schema in (extra or {}).items():
        props[name] = json_props[name] = schema
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": props, "required": list(fields)}},
        "application/json": {"schema": {"type": "object", "properties": json_props, "required": list(fields)}},
    }}}  # fmt: skip


class Service:
    """The state behind the routes: the model, the optional gallery and the lock that serialises its edits."""

    def __init__(self, model: Model, gallery: Gallery | None, limits: UploadLimits, batching: Batching):
        self.model = model
        self.gallery = gallery
        self.limits = limits
        self.lock = threading.RLock()
        self.batcher = Batcher(lambda x: self.model.embedder.embed(x), batching.max_batch, batching.max_wait_ms)

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


def _int_field(payload: Payload, request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = payload.fields.get(name, request.query_params.get(name, default))
    # a whole number only: 2.9 or true would be cut to 2 or 1 without a word, 1e400 overflows
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise HTTPException(422, f"{name} must be an integer")
    try:
        value = int(raw.strip()) if isinstance(raw, str) else raw
    except ValueError:
        raise HTTPException(422, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise HTTPException(422, f"{name} must be between {low} and {high}")
    return value


def _label_field(payload: Payload) -> str | None:
    """The request's ``label``: a string of at most ``MAX_FIELD_CHARS`` characters (422 naming the field and the
    limit otherwise), stripped; None when absent or blank."""
    label = payload.fields.get("label")
    if label is None:
        return None
    if not isinstance(label, str):
        raise HTTPException(422, "label must be a string")
    if len(label) > MAX_FIELD_CHARS:
        raise HTTPException(422, f"label: {len(label):,} characters is over the {MAX_FIELD_CHARS}-character limit")
    return label.strip() or None


def create_app(
    model: Model | Embedder,
    gallery: Gallery | None = None,
    limits: UploadLimits | None = None,
    guard: Guard | None = None,
    batching: Batching | None = None,
    request_timeout: float | None = REQUEST_TIMEOUT,
) -> FastAPI:
    """The service for ``model`` (and ``gallery``, checked to come from the same model); ``guard``: the hosts it
    answers to and the token gallery edits need (``siamkit.serve.guard``; cross-origin state changes are always
    refused); ``batching``: how concurrent requests share forward passes (``siamkit.serve.batching``);
    ``request_timeout``: seconds a request's body may take to arrive (408 after; ``siamkit.serve.timeouts``)."""
    model = as_model(model)
    limits = limits or UploadLimits()
    if gallery is not None:
        gallery.check_model(model.describe())
    batching = batching or Batching()
    svc = Service(model, gallery, limits, batching)
    app = FastAPI(title="siamkit", version=__version__,
                  description="Embed, verify and search images with a trained Siamese model.")  # fmt: skip
    app.state.service = svc
    described: dict[float | None, dict[str, Any] | None] = {}

    def threshold_info() -> dict[str, Any] | None:
        """The served threshold's provenance, read once per threshold value (``Model.threshold`` may be set)."""
        if model.threshold not in described:
            described.clear()
            described[model.threshold] = served_threshold_info(model)
        return described[model.threshold]

    app.add_middleware(BodyLimitMiddleware, limit=limits.max_request_bytes)
    app.add_middleware(RequestDeadlineMiddleware, timeout=request_timeout)
    app.add_middleware(GuardMiddleware, guard=guard or Guard())  # outermost: refuses before anything is read

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(SiamkitError)
    async def siamkit_error(_: Request, exc: SiamkitError) -> JSONResponse:
        return JSONResponse({"detail": without_paths(str(exc))}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML, headers={"Content-Security-Policy": CSP})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Model and gallery in use (no server paths)."""
        info = {k: v for k, v in model.describe().items() if k != "run_dir"}
        info["threshold_info"] = threshold_info()
        try:
            g = svc.current()
            gal = None if g is None else {"size": len(g), "index": g.meta["index"], "metric": g.metric}
        except HTTPException as exc:  # the service still answers: say what is wrong with the gallery
            gal = {"error": exc.detail}
        return {"status": "ok", **info, "gallery": gal, "max_request_bytes": limits.max_request_bytes,
                "batching": {"max_batch": batching.max_batch, "max_wait_ms": batching.max_wait_ms,
                             "forward_passes": svc.batcher.batches}}  # fmt: skip

    @app.post("/embed", openapi_extra=_image_body("image"))
    async def embed(request: Request) -> dict[str, Any]:
        """Embeddings of one or more images (repeat the ``image`` part, or send a JSON list)."""
        payload = await svc.read(request, ("image",))
        vectors = await svc.embed(await svc.images(payload, "image", count=None))
        return {"dim": int(vectors.shape[1]), "model_hash": model.model_hash, "embeddings": vectors.tolist()}

    @app.post("/verify", openapi_extra=_image_body("image_a", "image_b"))
    async def verify(request: Request) -> dict[str, Any]:
        """Distance of two images and the decision at the threshold saved with the model."""
        payload = await svc.read(request, ("image_a", "image_b"))
        arrays = await svc.images(payload, "image_a") + await svc.images(payload, "image_b")
        vectors = await svc.embed(arrays)
        decision = model.decisions(vectors[:1], vectors[1:])[0]
        return {**decision.to_dict(), "metric": model.distance, "threshold_info": threshold_info()}

    label_text = f"identity / class name (optional, at most {MAX_FIELD_CHARS} characters)"
    label_schema = {"label": {"type": "string", "maxLength": MAX_FIELD_CHARS, "description": label_text}}
    k_schema = {"k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
                "label": {**label_schema["label"], "description": "the query's identity, when known (optional): "
                          "hits within the threshold under another label are marked false_accept"}}  # fmt: skip

    @app.post("/search", openapi_extra=_image_body("image", extra=k_schema))
    async def search(request: Request) -> dict[str, Any]:
        """The ``k`` nearest gallery items of an image (``k`` as a field or query parameter, default 10); with the
        query's ``label``, hits within the threshold under another label are marked ``false_accept``."""
        svc.need_gallery()
        payload = await svc.read(request, ("image",))
        k = _int_field(payload, request, "k", 10, 1, MAX_K)
        label = _label_field(payload)
        vectors = await svc.embed(await svc.images(payload, "image"))
        results = await run_in_threadpool(svc.search, vectors, k, label)
        return {"k": k, "metric": model.distance, "query_label": label, "threshold_info": threshold_info(),
                "results": results[0]}  # fmt: skip

    @app.post("/gallery", status_code=201, openapi_extra=_image_body("image", extra=label_schema))
    async def gallery_add(request: Request) -> dict[str, Any]:
        """Add an image (and optional label) to the gallery; returns its id."""
        svc.need_gallery()
        payload = await svc.read(request, ("image",))
        label = _label_field(payload)
        img = await run_in_threadpool(svc.decode, svc.blobs(payload, "image")[0], "image", payload.pixel_budget)
        vectors = await svc.embed([await run_in_threadpool(svc.to_input, img)])
        item_id = await run_in_threadpool(svc.add_item, img, vectors[0], label or None)
        return {"id": item_id, "label": label or None, "size": len(svc.need_gallery())}

    @app.delete("/gallery/{item_id}")
    async def gallery_remove(item_id: int) -> dict[str, Any]:
        """Remove an item by id (404 if unknown)."""
        await run_in_threadpool(svc.remove_item, item_id)
        return {"removed": item_id, "size": len(svc.need_gallery())}

    @app.get("/gallery")
    async def gallery_list(offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """Items by id (id and label; paths stay on the server)."""
        g = svc.need_gallery()
        if offset < 0 or not 1 <= limit <= 1000:
            raise HTTPException(422, "offset must be ≥ 0 and limit between 1 and 1000")
        ids = sorted(g.items)[offset : offset + limit]
        return {"size": len(g), "items": [{"id": i, "label": g.items[i].label} for i in ids]}

    @app.get("/gallery/{item_id}/image", response_class=Response)
    async def gallery_image(item_id: int) -> Response:
        """A PNG thumbnail (at most 256 px) of a gallery item."""
        return Response(await run_in_threadpool(svc.thumbnail, item_id), media_type="image/png")

    return app


def serve(
    run_dir: str, gallery_dir: str | None = None, host: str = "127.0.0.1", port: int = 8000,
    backend: str | ModelSource = "torch", limits: UploadLimits | None = None, log_level: str = "info",
    allowed_hosts: list[str] | None = None, token: str | None = None,
    announce: Callable[[dict[str, Any]], None] | None = None, batching: Batching | None = None,
    request_timeout: float | None = REQUEST_TIMEOUT,
) -> None:  # fmt: skip
    """Run the service on uvicorn until interrupted. It answers to the bind address, the loopback names and
    ``allowed_hosts``; gallery edits need ``token`` when given, and a service bound beyond the loopback interface
    must have one. The port is bound first (a busy one is a ``ConfigError``, before anything is loaded or said);
    ``announce(info)`` is called once the model and gallery are loaded, before serving (the URL — the port bound
    when ``port`` is 0 —, run, backend, model hash, gallery and its size). A client has ``request_timeout``
    seconds to send a request's headers, and again its body (``siamkit.serve.timeouts``); an idle connection is
    closed after ``KEEP_ALIVE`` seconds."""
    import uvicorn

    from siamkit.errors import ConfigError

    if not token and not is_loopback(host):
        raise ConfigError(f"--host {host} exposes gallery edits to the network: give --token (or set SIAMKIT_TOKEN), "
                          "or bind to 127.0.0.1")  # fmt: skip
    sock = bind_socket(host, port)
    try:
        port = int(sock.getsockname()[1])
        model = open_model(run_dir, backend)
        keep_freed_memory()  # a forward pass of a batch allocates large buffers: reuse them (siamkit.devices)
        gallery = Gallery.open(gallery_dir) if gallery_dir else None
        guard = Guard(default_hosts(host, allowed_hosts), token or None)
        app = create_app(model, gallery, limits, guard, batching, request_timeout)
        if announce is not None:
            url_host = f"[{host}]" if ":" in host else host
            announce({"url": f"http://{url_host}:{port}", "run_dir": model.run_dir, "backend": model.backend,
                      "model_hash": model.model_hash, "gallery": str(gallery.directory) if gallery else None,
                      "gallery_size": len(gallery) if gallery else 0, "edits_need_token": bool(token)})  # fmt: skip
        http: Any = deadline_protocol(request_timeout) if request_timeout is not None else "auto"
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_keep_alive=KEEP_ALIVE,
                                http=http)  # fmt: skip
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` (as uvicorn binds it), or one ``ConfigError`` line naming the port and
    the fix when it is taken or cannot be bound."""
    from siamkit.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use (another service?): choose another with "
                              "--port N, or stop what listens there") from None  # fmt: skip
        if exc.errno == errno.EACCES:
            raise ConfigError(f"port {port} on {host} needs privileges to bind: choose one above 1023 with --port N"
                              ) from None  # fmt: skip
        raise ConfigError(f"cannot listen on {host} port {port} ({exc.strerror or exc}): check --host, or choose "
                          "another --port") from None  # fmt: skip
    sock.set_inheritable(True)
    return sock
