"""The HTTP service (FastAPI): embed, verify, search and gallery edits over a trained model, plus a web page.

``create_app(model, gallery)`` builds the app (used in-process by tests); ``serve(...)`` runs it on uvicorn.
Model inference, image decoding and gallery commits run in the thread pool, never on the event loop. Errors are
``{"detail": "..."}`` without tracebacks. OpenAPI docs at ``/docs`` (schema ``/openapi.json``).

The parts: ``service`` (the state behind the routes), ``routes`` (the handlers, by area), ``guard`` (hosts,
token, origins), ``uploads`` (body and image limits), ``timeouts`` (slow clients), ``batching`` (shared forward
passes), ``page`` (the web page), ``defaults`` (the limits the command line shows).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from siamkit.devices import keep_freed_memory
from siamkit.errors import SiamkitError
from siamkit.index.gallery import Gallery
from siamkit.runs.embedders import Embedder, ModelSource
from siamkit.runs.model import Model, as_model, open_model
from siamkit.serve import routes
from siamkit.serve.batching import Batching
from siamkit.serve.defaults import HOST, KEEP_ALIVE, PORT, REQUEST_TIMEOUT
from siamkit.serve.guard import Guard, GuardMiddleware, default_hosts, is_loopback
from siamkit.serve.service import Service, without_paths
from siamkit.serve.timeouts import RequestDeadlineMiddleware, deadline_protocol
from siamkit.serve.uploads import BodyLimitMiddleware, UploadLimits
from siamkit.version import __version__

log = logging.getLogger(__name__)


def create_app(
    model: Model | Embedder,
    gallery: Gallery | None = None,
    *,
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
    svc = Service(model, gallery, limits, batching or Batching())
    app = FastAPI(title="siamkit", version=__version__,
                  description="Embed, verify and search images with a trained Siamese model.")  # fmt: skip
    app.state.service = svc
    app.add_middleware(BodyLimitMiddleware, limit=limits.max_request_bytes)
    app.add_middleware(RequestDeadlineMiddleware, timeout=request_timeout)
    app.add_middleware(GuardMiddleware, guard=guard or Guard())  # outermost: refuses before anything is read
    add_error_handlers(app)
    routes.add_page_routes(app, svc)
    routes.add_model_routes(app, svc)
    routes.add_search_route(app, svc)
    routes.add_gallery_routes(app, svc)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"detail": "..."}``: HTTP errors as raised, a bad request's first problem, a siamkit
    error without server paths (422), anything else as a bare 500 (logged here, never sent)."""

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


def serve(
    run_dir: str, gallery_dir: str | None = None, *, host: str = HOST, port: int = PORT,
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
        app = create_app(model, gallery, limits=limits, guard=guard, batching=batching,
                         request_timeout=request_timeout)  # fmt: skip
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
