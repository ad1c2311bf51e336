"""Shared fixtures: an isolated unbroken home, a real PostgreSQL (a fresh database per test) and a
real S3-compatible server (a fresh prefix per test)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh unbroken home; the environment points at it and carries no supervisor identity."""
    h = tmp_path / "home"
    monkeypatch.setenv("UNBROKEN_HOME", str(h))
    for var in ("UNBROKEN_EXPERIMENT", "UNBROKEN_TRIAL", "UNBROKEN_ATTEMPT_ID", "UNBROKEN_DEADLINE",
                "UNBROKEN_PREEMPT_SIGNAL"):
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture(scope="session")
def pg_cluster():
    """The PostgreSQL cluster of the session, started by scripts/pg-up.sh (skips loudly without
    root; fails under $CI). Left running afterwards: scripts/pg-down.sh with
    UNBROKEN_PG_DIR=/tmp/unbroken-pg-tests stops it."""
    from pgcluster import SESSION_DIR, SESSION_PORT, start_cluster

    return start_cluster(SESSION_DIR, SESSION_PORT)


@pytest.fixture
def pg_url(pg_cluster) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The S3 server of the session, started by scripts/s3-up.sh and stopped by s3-down.sh
    (skipped loudly where impossible; fails if $CI is set)."""
    from s3server import start_server

    server = start_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def s3_url(s3_server, monkeypatch) -> str:
    """A fresh, empty s3:// prefix; the environment points at the server for the test."""
    s3_server.apply(monkeypatch)
    return s3_server.fresh_url()
