"""Slow clients (slowloris): a request must arrive whole within ``request_timeout`` seconds, or its connection is cut.

uvicorn bounds only the idle time between two requests of a connection (``timeout_keep_alive``); a client that
sends its headers or its body one byte a second would hold a connection, and whatever the request holds, for
hours. Two guards, each ``request_timeout`` seconds (``--request-timeout``, default 30):

- the headers (``deadline_protocol``: uvicorn's h11 protocol with a timer from the connection's start, and again
  after each answer, to the end of the next request's headers): past it the connection is closed;
- the body (``RequestDeadlineMiddleware``: from the end of the headers to the body's last byte): past it the
  client gets ``408 {"detail": ...}`` with ``Connection: close``.

Neither limits the work of a request whose body has arrived (inference, a gallery commit), and other clients are
served meanwhile: waiting for a slow client is waiting on the event loop, never blocking it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siamkit.serve.defaults import REQUEST_TIMEOUT
from siamkit.serve.uploads import ResponseTracker, send_detail


class _TooSlow(Exception):
    pass


class RequestDeadlineMiddleware:
    """Answers 408 (and closes the connection) when a request's body has not arrived whole ``timeout`` seconds
    after its headers; ``timeout`` None: no limit."""

    def __init__(self, app: ASGIApp, timeout: float | None = REQUEST_TIMEOUT):
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.timeout is None:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        body_done = False
        sent = ResponseTracker(send)

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # after the body, receive() waits for the client to go away: no deadline on that
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise _TooSlow from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        try:
            await self.app(scope, timed_receive, sent)
        except _TooSlow:
            if not sent.started:
                detail = (f"the request body did not arrive within {self.timeout:g} s (the service's "
                          "--request-timeout); send it at once")  # fmt: skip
                await send_detail(send, 408, detail, [(b"connection", b"close")])


def deadline_protocol(timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose next request's headers have not arrived whole within
    ``timeout`` seconds (counted from the connection's start, then from each answer's end)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # no request yet, so no answer can be sent: the connection is cut

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # the headers are in: the body has its own deadline
                self._disarm()

        def on_response_complete(self) -> None:
            self._arm()  # before: a pipelined request already received disarms it at once
            super().on_response_complete()

    return DeadlineH11Protocol
