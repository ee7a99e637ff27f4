"""The service's default limits, in one place the command line reads too (``siamkit serve --help`` shows them
without importing the service, torch or PIL)."""

from __future__ import annotations

HOST = "127.0.0.1"
PORT = 8000
MAX_REQUEST_BYTES = 16 * 1024 * 1024
"""A request's body (``--max-request-mb``): 413 above."""
MAX_PIXELS = 25_000_000
"""One image's decoded pixels (``--max-pixels``): 422 above."""
MAX_BATCH = 64
"""Images per forward pass, gathered from concurrent requests (``--max-batch``; 1: no batching)."""
MAX_WAIT_MS = 5.0
"""The longest a request waits for others to join its batch (``--max-wait-ms``)."""
REQUEST_TIMEOUT = 30.0
"""Seconds a client has to send a request's headers, and again its body (``--request-timeout``)."""
KEEP_ALIVE = 5
"""Seconds an idle keep-alive connection stays open between requests (uvicorn's ``timeout_keep_alive``)."""
