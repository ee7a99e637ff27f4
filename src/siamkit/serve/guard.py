"""Who may talk to the service: allowed ``Host`` names (DNS rebinding), same-origin state changes (cross-site
requests from a web page), and a bearer token for gallery edits.

A web page on another site can make a browser send requests to ``http://127.0.0.1:8000``: with its own name
resolving to 127.0.0.1 (DNS rebinding) the ``Host`` header carries that name, and a plain cross-site form or
``fetch`` carries an ``Origin`` of another site. So every request must name an allowed host, and every request
that is not a read (``GET``/``HEAD``/``OPTIONS``) must come from the service's own origin or from no browser
page at all (no ``Origin``, as curl and scripts send). Gallery edits can further require ``Authorization: Bearer
<token>``; a service bound beyond the loopback interface must have one.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from siamkit.serve.uploads import send_detail

READS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Guard:
    """``allowed_hosts``: the ``Host`` names accepted (None: any — in-process use); ``token``: required as a bearer
    token on gallery edits (None: none)."""

    allowed_hosts: frozenset[str] | None = None
    token: str | None = None


def default_hosts(bind: str, extra: list[str] | None = None) -> frozenset[str]:
    """The names a service bound to ``bind`` answers to: the bind address, the loopback names, and ``extra``
    (``--allowed-host``). A wildcard bind (0.0.0.0, ::) is not a name: the machine's names go in ``extra``."""
    hosts = {_normal(h) for h in (*LOOPBACK_NAMES, *(extra or []))}
    if bind not in ("0.0.0.0", "::", ""):
        hosts.add(_normal(bind))
    return frozenset(hosts)


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?")


def _host_name(value: str) -> str | None:
    """``example.com:8000`` → ``example.com``; ``[::1]:8000`` → ``::1``; None for anything that is not exactly a
    name or a bracketed IPv6 address with an optional port: ``[::1]anything``, ``[::1``, a bare ``::1``,
    ``a:1:2``, ``a@b``, ``host:99999``, spaces or other characters — refused like a foreign name."""
    m = _HOST.fullmatch(value.strip().lower())
    if m is None or (m["port"] is not None and int(m["port"]) > 65535):
        return None
    if m["v6"] is None:
        return m["name"]
    try:
        return ipaddress.IPv6Address(m["v6"]).compressed
    except ValueError:
        return None


def _normal(name: str) -> str:
    """An allowed name as ``_host_name`` gives it: lower case, an IPv6 address without brackets, compressed."""
    name = name.strip().lower().removeprefix("[").removesuffix("]")
    try:
        return ipaddress.IPv6Address(name).compressed
    except ValueError:
        return name


def _is_edit(method: str, path: str) -> bool:
    return (path.rstrip("/") == "/gallery" and method == "POST") or (
        path.startswith("/gallery/") and method == "DELETE"
    )


class GuardMiddleware:
    """Refuses, before any route runs: 400 for a ``Host`` not allowed, 403 for a cross-origin request that is not
    a read, 401 for a gallery edit without the bearer token."""

    def __init__(self, app: ASGIApp, guard: Guard):
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        refusal = self.check(scope["method"], scope["path"], headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail = refusal
        await send_detail(send, status, detail, [(b"www-authenticate", b"Bearer")] if status == 401 else None)

    def check(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        g = self.guard
        host = headers.get("host", "")
        name = _host_name(host)
        if g.allowed_hosts is not None and (name is None or name not in g.allowed_hosts):
            return 400, "host not allowed; start the service with --allowed-host NAME to answer to this name"
        if method not in READS:
            origin = headers.get("origin")
            fetch_site = headers.get("sec-fetch-site", "")
            if fetch_site == "cross-site" or (origin and origin != "null" and urlsplit(origin).netloc.lower() !=
                                              host.lower()):  # fmt: skip
                return 403, "cross-origin request refused: use the service's own page, or a client without Origin"
            if origin == "null":
                return 403, "cross-origin request refused (Origin: null)"
        if g.token is not None and _is_edit(method, path):
            auth = headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), g.token.encode()):
                return 401, "gallery edits need the service's token: send Authorization: Bearer <token>"
        return None
