"""A local imitation of the AWS, GCP and Azure instance metadata services (same paths and headers).

``SpotServer(provider)`` listens on 127.0.0.1; ``notice(deadline)`` makes it announce a
preemption due at ``deadline`` (Unix time); ``mode`` "ok", "slow" (answers after ``slow_s``,
longer than unbroken's request timeout) or "fail" (HTTP 500). ``requests`` counts the questions.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SpotServer:
    def __init__(self, provider: str, mode: str = "ok", slow_s: float = 2.0):
        self.provider, self.mode, self.slow_s = provider, mode, slow_s
        self.deadline: float | None = None
        self.requests = 0
        self._closing = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def notice(self, deadline: float) -> None:
        self.deadline = deadline

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- answers ---------------------------------------------------------------------------------
    def answer(self, method: str, path: str, headers) -> tuple[int, str]:
        self.requests += 1
        if self.mode == "slow":
            self._closing.wait(self.slow_s)
        if self.mode == "fail":
            return 500, "internal error"
        return getattr(self, f"_{self.provider}")(method, path, headers)

    def _aws(self, method, path, headers):
        if method == "PUT" and path == "/latest/api/token":
            return (200, "TOKEN-1") if headers.get("X-aws-ec2-metadata-token-ttl-seconds") else (400, "")
        if path == "/latest/meta-data/spot/instance-action" and method == "GET":
            if headers.get("X-aws-ec2-metadata-token") != "TOKEN-1":
                return 401, ""
            if self.deadline is None:
                return 404, "Not Found"
            when = dt.datetime.fromtimestamp(self.deadline, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            return 200, json.dumps({"action": "terminate", "time": when})
        return 404, ""

    def _gcp(self, method, path, headers):
        if path == "/computeMetadata/v1/instance/preempted" and headers.get("Metadata-Flavor") == "Google":
            return 200, "FALSE" if self.deadline is None else "TRUE"
        return 404, ""

    def _azure(self, method, path, headers):
        if path == "/metadata/scheduledevents?api-version=2020-07-01" and headers.get("Metadata") == "true":
            events = [] if self.deadline is None else [{
                "EventId": "E1", "EventType": "Preempt", "ResourceType": "VirtualMachine", "Resources": ["vm"],
                "EventStatus": "Scheduled", "NotBefore": email.utils.formatdate(self.deadline, usegmt=True)}]
            return 200, json.dumps({"DocumentIncarnation": 1, "Events": events})
        return 404, ""

    def _handler(server):  # noqa: N805 - the handler class closes over the SpotServer
        class Handler(BaseHTTPRequestHandler):
            def _reply(self):
                status, body = server.answer(self.command, self.path, self.headers)
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout)

            do_GET = do_PUT = _reply

            def log_message(self, *args):
                pass

        return Handler
