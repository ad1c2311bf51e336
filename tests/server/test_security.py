"""Who may talk to the dashboard: the token off loopback, the Host check on loopback."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket

import pytest

from unbroken.errors import ConfigError
from unbroken.server.app import create_app
from unbroken.server.config import ServerConfig, is_loopback


def asgi_get(app, path: str, client: str, headers: dict[str, str]) -> int:
    """The status of GET ``path`` sent to the ASGI ``app`` as if from address ``client``."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "127.0.0.1:8765", **headers}.items()],
             "client": (client, 50000), "server": ("127.0.0.1", 8765)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a thread of its own: Playwright may run a loop here
        pool.submit(asyncio.run, app(scope, receive, send)).result()
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def test_a_non_loopback_client_needs_the_token_even_on_a_loopback_server(tmp_path):
    config = ServerConfig.build(tmp_path, host="127.0.0.1")
    app = create_app(config)
    assert not config.token_for_reads
    assert asgi_get(app, "/api/config", "127.0.0.1", {}) == 200
    assert asgi_get(app, "/api/config", "10.1.2.3", {}) == 401
    assert asgi_get(app, "/api/config", "10.1.2.3", {"X-Unbroken-Token": config.token}) == 200
    assert asgi_get(app, "/api/config", "10.1.2.3", {"X-Unbroken-Token": "x" * 43}) == 401


def test_a_server_on_another_address_requires_the_token_on_every_request(tmp_path, serve, request_raw):
    (tmp_path / "home").mkdir()
    with serve(tmp_path / "home", host="0.0.0.0") as s:
        assert s.config.token_for_reads
        for path in ("/", "/api/runs", "/api/experiments", "/static/js/app.js"):
            assert request_raw(s, path)[0] == 401, path
        assert request_raw(s, "/api/runs", headers={"X-Unbroken-Token": s.token})[0] == 200
        status, headers, _ = request_raw(s, f"/?token={s.token}")
        assert status == 200 and f"unbroken_token={s.token}" in headers["set-cookie"]
        assert request_raw(s, "/static/js/app.js", headers={"Cookie": f"unbroken_token={s.token}"})[0] == 200


def test_a_given_token_guards_reads_on_loopback_too(tmp_path, monkeypatch, serve, request_raw):
    monkeypatch.setenv("UNBROKEN_UI_TOKEN", "a-long-enough-token-1234")
    with serve(tmp_path) as s:
        assert s.token == "a-long-enough-token-1234"
        assert request_raw(s, "/api/config")[0] == 401
        assert request_raw(s, "/api/config?token=a-long-enough-token-1234")[0] == 200


def test_loopback_server_refuses_other_host_headers(tmp_path, serve, request_raw):
    with serve(tmp_path) as s:
        assert request_raw(s, "/api/config")[0] == 200
        assert request_raw(s, "/api/config", headers={"Host": "evil.example:8765"})[0] == 403


@pytest.mark.parametrize("token", ["short", "has space in it, sadly", "slash/es/are/not/ok/here"])
def test_bad_tokens_are_refused(tmp_path, token):
    with pytest.raises(ConfigError):
        ServerConfig.build(tmp_path, token=token)


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "10.0.0.1", "::", socket.gethostname() + ".example", "testclient"]))
