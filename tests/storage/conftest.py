"""Fixtures of these tests: a small tmpfs to fill up (see tests/oshelpers.py), and a real S3 server
(SeaweedFS, see tests/s3server.py) with a fresh prefix per test."""

from __future__ import annotations

import pytest
from oshelpers import mount_small_tmpfs


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted under tmp_path (skipped loudly where impossible; fails if $CI is set)."""
    yield from mount_small_tmpfs(tmp_path / "small-disk", "2m")


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


@pytest.fixture
def obstore():
    """The obstore module (skipped loudly without it; fails if $CI is set)."""
    try:
        import obstore
    except ImportError:
        import os
        message = "!!! OBJECT-STORE TESTS NOT RUN: obstore is not installed (pip install -e '.[s3]')"
        if os.environ.get("CI"):
            pytest.fail(message + " CI is set, so this is a failure, not a skip.")
        pytest.skip(message)
    return obstore
