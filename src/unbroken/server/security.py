"""Who may talk to the dashboard: an ASGI middleware in front of every route and file.

* Host check: a server bound to a loopback address answers only requests whose ``Host`` names a
  loopback address, so a web page elsewhere cannot reach it through DNS rebinding.
* Reads (GET, HEAD) need the token when :attr:`ServerConfig.token_for_reads` (a non-loopback
  address, or a token the user chose) or when the client itself is not on loopback.
* Anything else (POST) always needs the token in a header (``X-Unbroken-Token`` or
  ``Authorization: Bearer``), never from a cookie or the URL: another site's form cannot send
  such a header, so no cross-site request forgery. ``--read-only`` refuses every POST.

The token is accepted from the header, the ``token`` query parameter (the URL printed at the
start) or the ``unbroken_token`` cookie, which is set (HttpOnly, SameSite=Strict) when a request
brings a good token in the URL, so the page's images, scripts and styles load without it.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from .config import ServerConfig, is_loopback

COOKIE = "unbroken_token"
HEADER = "x-unbroken-token"
_READS = {"GET", "HEAD"}


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _host_name(host_header: str) -> str:
    """The host of a ``Host`` header without its port (``[::1]:80`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def header_token(headers: dict[str, str]) -> str | None:
    if HEADER in headers:
        return headers[HEADER]
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def _url_token(scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def _cookie_token(headers: dict[str, str]) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - a malformed cookie header carries no token
        return None
    return jar[COOKIE].value if COOKIE in jar else None


class Guard:
    """The middleware (see the module docstring)."""

    def __init__(self, app, config: ServerConfig):
        self.app, self.config = app, config

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.config.token.encode())

    def refusal(self, scope) -> tuple[int, str] | None:
        """``(status, reason)`` when the request must be refused, else None."""
        headers = _headers(scope)
        if self.config.loopback and not is_loopback(_host_name(headers.get("host", ""))):
            return 403, "this dashboard listens on loopback and answers only requests addressed to it"
        if scope["method"] not in _READS:
            if self.config.read_only:
                return 403, "this dashboard is read-only (started with --read-only)"
            if not self._matches(header_token(headers)):
                return 401, "actions need the token in the X-Unbroken-Token header"
            return None
        client = (scope.get("client") or ("",))[0]
        if self.config.token_for_reads or not is_loopback(client):
            if not any(self._matches(t) for t in (header_token(headers), _url_token(scope), _cookie_token(headers))):
                return 401, "this dashboard needs its token: open the URL `unbroken ui` printed"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refused = self.refusal(scope)
        if refused is not None:
            return await _send_json(send, refused[0], {"error": refused[1]})
        if not self._matches(_url_token(scope)):
            return await self.app(scope, receive, send)
        cookie = f"{COOKIE}={self.config.token}; Path=/; HttpOnly; SameSite=Strict".encode()

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)


async def _send_json(send, status: int, doc: dict) -> None:
    body = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
