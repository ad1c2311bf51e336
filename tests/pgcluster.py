"""A real PostgreSQL for the tests, started and stopped by the project's own scripts
(scripts/pg-up.sh, scripts/pg-down.sh), and a fresh database per test.

Imported by tests/conftest.py (the ``pg_cluster`` / ``pg_url`` fixtures) and by tests that need a
cluster of their own (one they stop and restart). Without root the tests that need it skip
loudly; with ``$CI`` set they fail, because they are acceptance tests that must run in CI.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import uuid
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The cluster shared by a test session (left running afterwards, for the next session).
SESSION_DIR = Path("/tmp/unbroken-pg-tests")
SESSION_PORT = 54331


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A running cluster started by scripts/pg-up.sh in ``directory`` on 127.0.0.1:``port``."""

    directory: Path
    port: int

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self):
        import psycopg

        return psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10)

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    def stop(self) -> None:
        _script("pg-down.sh", self.directory, self.port)

    def start(self) -> None:
        _script("pg-up.sh", self.directory, self.port)

    def purge(self) -> None:
        _script("pg-down.sh", self.directory, self.port, "--purge")


def start_cluster(directory: Path, port: int) -> Cluster:
    """Start (or find running) the cluster in ``directory`` through scripts/pg-up.sh; skip the
    test loudly where that is impossible (fail instead when ``$CI`` is set)."""
    try:
        if os.geteuid() != 0:
            raise PermissionError("the tests do not run as root: pg-up.sh installs packages and starts the "
                                  "server as the postgres user")
        _script("pg-up.sh", directory, port)
    except (OSError, subprocess.SubprocessError) as exc:
        _not_run(str(exc))
    return Cluster(directory, port)


def _not_run(reason: str) -> NoReturn:
    message = (f"!!! POSTGRESQL TESTS NOT RUN: cannot start PostgreSQL with scripts/pg-up.sh ({reason}). "
               "Run the tests as root to cover the PostgreSQL backend.")
    if os.environ.get("CI"):
        pytest.fail(message + " CI is set, so this is a failure, not a skip.")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _script(name: str, directory: Path, port: int, *args: str) -> str:
    env = {**os.environ, "UNBROKEN_PG_DIR": str(directory), "UNBROKEN_PG_PORT": str(port)}
    result = subprocess.run(["bash", str(REPO / "scripts" / name), *args], env=env, capture_output=True,
                            text=True, timeout=600)
    if result.returncode != 0:
        raise subprocess.SubprocessError(f"{name} exited with {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout
