"""``serve``: the HTTP service and its web page over a trained run (and optionally a gallery)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from siamkit.cli.common import Subparsers, command, emit, model_flags, model_source, output_flags
from siamkit.serve import defaults


def register(sub: Subparsers) -> None:
    sv = command(sub, "serve", _serve, "HTTP service + web page: embed, verify, search, gallery edits", [
        "siamkit serve runs/default --gallery gallery/          # http://127.0.0.1:8000",
        "SIAMKIT_TOKEN=secret siamkit serve runs/default --host 0.0.0.0 --allowed-host faces.example.org",
    ], description=(
        "Binds the port first (a busy one: one line, exit 2), prints where it listens (one JSON line with"
        " --format json), then serves until interrupted."
    ))  # fmt: skip
    sv.add_argument("run_dir")
    sv.add_argument("--gallery", dest="gallery_dir", help="gallery for /search and /gallery")
    sv.add_argument("--host", default=defaults.HOST, help=f"bind address (default: {defaults.HOST})")
    sv.add_argument("--port", type=int, default=defaults.PORT, help=f"0: any free port (default: {defaults.PORT})")
    mb = defaults.MAX_REQUEST_BYTES / 1024 / 1024
    sv.add_argument("--max-request-mb", type=float, default=mb, help=f"request body limit (413 above; default {mb:g})")
    sv.add_argument("--max-pixels", type=int, default=defaults.MAX_PIXELS,
                    help=f"per-image pixel limit (422 above; default {defaults.MAX_PIXELS:,})")  # fmt: skip
    sv.add_argument("--allowed-host", dest="allowed_hosts", action="append", default=[], metavar="NAME",
                    help="also answer to this Host name (default: bind address, localhost; repeatable)")  # fmt: skip
    sv.add_argument("--max-batch", type=int, default=defaults.MAX_BATCH,
                    help="images per forward pass, gathered from concurrent requests "
                         f"(default {defaults.MAX_BATCH}; 1: no batching)")  # fmt: skip
    sv.add_argument("--max-wait-ms", type=float, default=defaults.MAX_WAIT_MS,
                    help="the longest a request waits for others to join its batch "
                         f"(default {defaults.MAX_WAIT_MS:g})")  # fmt: skip
    sv.add_argument("--request-timeout", type=float, default=defaults.REQUEST_TIMEOUT, metavar="SECONDS",
                    help="a client must send a request's headers, and then its body, within this "
                         f"(default {defaults.REQUEST_TIMEOUT:g}; slower clients are cut off: 408)")  # fmt: skip
    sv.add_argument("--token", default=None,
                    help="token for gallery edits (default: $SIAMKIT_TOKEN); needed beyond 127.0.0.1")  # fmt: skip
    model_flags(sv, threshold=True)
    output_flags(sv)


def _serve(args: argparse.Namespace) -> None:
    from siamkit.errors import ConfigError
    from siamkit.serve.app import serve
    from siamkit.serve.batching import Batching
    from siamkit.serve.uploads import UploadLimits

    if args.max_batch < 1 or not args.max_wait_ms >= 0:
        raise ConfigError("--max-batch must be at least 1 and --max-wait-ms at least 0")
    if not 0 < args.max_request_mb < 1e6 or args.max_pixels < 1:
        raise ConfigError(f"--max-request-mb must be above 0 and --max-pixels at least 1; got {args.max_request_mb:g} "
                          f"and {args.max_pixels}")  # fmt: skip
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0–65535; got {args.port}")
    if not 0 < args.request_timeout <= 86_400:
        raise ConfigError(f"--request-timeout must be above 0 and at most 86400 seconds; got {args.request_timeout:g}")

    limits = UploadLimits(int(args.max_request_mb * 1024 * 1024), args.max_pixels)
    token = args.token or os.environ.get("SIAMKIT_TOKEN")

    def announce(info: dict[str, Any]) -> None:
        gallery = f", gallery {info['gallery']} ({info['gallery_size']} items)" if info["gallery"] else ""
        emit(info, args.format, f"serving {info['run_dir']} ({info['backend']}{gallery}) on {info['url']}")

    level = "warning" if args.quiet or args.format == "json" else "info"
    serve(args.run_dir, args.gallery_dir, host=args.host, port=args.port, backend=model_source(args), limits=limits,
          log_level=level, allowed_hosts=args.allowed_hosts, token=token, announce=announce,
          batching=Batching(args.max_batch, args.max_wait_ms), request_timeout=args.request_timeout)  # fmt: skip
