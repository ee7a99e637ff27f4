"""The service's routes, one small function per area: the page and ``/health``, the model (``/embed``,
``/verify``), ``/search``, and gallery edits; each adds its handlers to the app over one :class:`Service`.

A request's fields are read here (``int_field``, ``label_field``): a 422 naming the field for a bad one.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from siamkit.serve.page import PAGE_HTML
from siamkit.serve.service import Service
from siamkit.serve.uploads import MAX_FIELD_CHARS, Payload

MAX_K = 100
CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
LABEL_SCHEMA = {
    "label": {
        "type": "string",
        "maxLength": MAX_FIELD_CHARS,
        "description": f"identity / class name (optional, at most {MAX_FIELD_CHARS} characters)",
    }
}
K_SCHEMA = {"k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
            "label": {**LABEL_SCHEMA["label"], "description": "the query's identity, when known (optional): "
                      "hits within the threshold under another label are marked false_accept"}}  # fmt: skip


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


def int_field(payload: Payload, request: Request, name: str, default: int, *, low: int, high: int) -> int:
    """The request's whole-number field ``name`` (a form/JSON field, else a query parameter, else ``default``),
    between ``low`` and ``high``; a 422 naming the field otherwise."""
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


def label_field(payload: Payload) -> str | None:
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


def add_page_routes(app: FastAPI, svc: Service) -> None:
    """``/`` (the web page, under a strict CSP) and ``/health``."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML, headers={"Content-Security-Policy": CSP})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Model and gallery in use (no server paths)."""
        info = {k: v for k, v in svc.model.describe().items() if k != "run_dir"}
        info["threshold_info"] = svc.threshold_info()
        try:
            g = svc.current()
            gal = None if g is None else {"size": len(g), "index": g.meta["index"], "metric": g.metric}
        except HTTPException as exc:  # the service still answers: say what is wrong with the gallery
            gal = {"error": exc.detail}
        return {"status": "ok", **info, "gallery": gal, "max_request_bytes": svc.limits.max_request_bytes,
                "batching": {"max_batch": svc.batching.max_batch, "max_wait_ms": svc.batching.max_wait_ms,
                             "forward_passes": svc.batcher.batches}}  # fmt: skip


def add_model_routes(app: FastAPI, svc: Service) -> None:
    """``/embed`` and ``/verify``: the model alone, no gallery."""

    @app.post("/embed", openapi_extra=_image_body("image"))
    async def embed(request: Request) -> dict[str, Any]:
        """Embeddings of one or more images (repeat the ``image`` part, or send a JSON list)."""
        payload = await svc.read(request, ("image",))
        vectors = await svc.embed(await svc.images(payload, "image", count=None))
        return {"dim": int(vectors.shape[1]), "model_hash": svc.model.model_hash, "embeddings": vectors.tolist()}

    @app.post("/verify", openapi_extra=_image_body("image_a", "image_b"))
    async def verify(request: Request) -> dict[str, Any]:
        """Distance of two images and the decision at the threshold saved with the model."""
        payload = await svc.read(request, ("image_a", "image_b"))
        arrays = await svc.images(payload, "image_a") + await svc.images(payload, "image_b")
        vectors = await svc.embed(arrays)
        decision = svc.model.decisions(vectors[:1], vectors[1:])[0]
        return {**decision.to_dict(), "metric": svc.model.distance, "threshold_info": svc.threshold_info()}


def add_search_route(app: FastAPI, svc: Service) -> None:
    """``/search``: the nearest gallery items of an image."""

    @app.post("/search", openapi_extra=_image_body("image", extra=K_SCHEMA))
    async def search(request: Request) -> dict[str, Any]:
        """The ``k`` nearest gallery items of an image (``k`` as a field or query parameter, default 10); with the
        query's ``label``, hits within the threshold under another label are marked ``false_accept``."""
        svc.need_gallery()
        payload = await svc.read(request, ("image",))
        k = int_field(payload, request, "k", 10, low=1, high=MAX_K)
        label = label_field(payload)
        vectors = await svc.embed(await svc.images(payload, "image"))
        results = await run_in_threadpool(svc.search, vectors, k, label)
        return {"k": k, "metric": svc.model.distance, "query_label": label, "threshold_info": svc.threshold_info(),
                "results": results[0]}  # fmt: skip


def add_gallery_routes(app: FastAPI, svc: Service) -> None:
    """``/gallery``: add (POST), list (GET), remove (DELETE ``/gallery/{id}``) and thumbnails."""

    @app.post("/gallery", status_code=201, openapi_extra=_image_body("image", extra=LABEL_SCHEMA))
    async def gallery_add(request: Request) -> dict[str, Any]:
        """Add an image (and optional label) to the gallery; returns its id."""
        svc.need_gallery()
        payload = await svc.read(request, ("image",))
        label = label_field(payload)
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
